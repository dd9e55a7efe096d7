/**
 * An OpenAI-compatible and Anthropic mock provider for tests, benchmarks and `npm start`, driven by
 * request headers so a test says in its request what it wants back (as envoy
 * ai-gateway's fake upstream does):
 *
 *   x-mock-status              answer with this status and an OpenAI-style error body
 *   x-mock-error-message       the error's message
 *   x-mock-delay-ms            wait before the response head
 *   x-mock-chunks              content chunks of a stream (default 5)
 *   x-mock-chunk-delay-ms      wait between stream chunks
 *   x-mock-prompt-tokens       usage.prompt_tokens / input_tokens (default 12)
 *   x-mock-completion-tokens   usage.completion_tokens / output_tokens (default: one per chunk)
 *   x-mock-retry-after         sent as retry-after
 *   x-mock-ratelimit-<name>    sent as x-ratelimit-<name> (remaining-requests, limit-tokens...)
 *   x-mock-cut-after           destroy the socket after this many content chunks (JSON: mid-body)
 *   x-mock-gzip                gzip the JSON body when the client accepts gzip
 *   x-mock-cached-tokens       prompt_tokens_details.cached_tokens (Responses: input_tokens_details), part of the prompt
 *   x-mock-reasoning-tokens    completion_tokens_details.reasoning_tokens (Responses: output_tokens_details), part of the completion
 *                              (Chat and Completions send the _details objects only when one of these two is given)
 *   x-mock-no-usage            send no usage at all: none in the body, no usage chunk, none in message_delta
 *
 * Anthropic's Messages API (POST /v1/messages) reads the same headers (errors then have
 * Anthropic's shape, {"type":"error","error":{"type","message"}}, 529 overloaded_error), and:
 *
 *   x-mock-anthropic-ratelimit-<name>   sent as anthropic-ratelimit-<name> (requests-remaining, tokens-reset...)
 *   x-mock-cache-creation-tokens        usage.cache_creation_input_tokens (default 0)
 *   x-mock-cache-read-tokens            usage.cache_read_input_tokens (default 0)
 *   x-mock-cache-write-1h-tokens        of the cache writes, usage.cache_creation.ephemeral_1h_input_tokens (default 0)
 *   x-mock-stop-reason                  stop_reason (default end_turn)
 *   x-mock-delta-input-tokens           also send input_tokens in message_delta's usage (as newer APIs do)
 *   x-mock-stream-error-after           after this many content deltas, send `event: error` (overloaded_error) and end
 *
 * Serves POST /v1/chat/completions (JSON and SSE), /v1/completions (JSON and SSE),
 * /v1/embeddings, /v1/responses (JSON and SSE), /v1/messages (JSON and SSE),
 * /v1/files (echoes size and hash), GET /v1/models; anything else is a 404 JSON error.
 * Content is deterministic.
 *
 * Run: npx tsx examples/mock-provider.ts --port 9100
 */
import { createHash } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The body parsed as JSON, undefined when it is not JSON. */
  json: unknown;
}

export interface MockProviderOptions {
  host?: string;
  port?: number;
  /** Keep each request in `requests` (default true; benchmarks turn it off). */
  record?: boolean;
}

export interface MockProvider {
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Responses still being written (a stream the proxy stopped reading ends here). */
  readonly activeResponses: number;
  close(): Promise<void>;
}

export const MOCK_CREATED = 1_700_000_000;
export const MOCK_DEFAULT_MODEL = "gpt-4o-mini";
export const MOCK_DEFAULT_PROMPT_TOKENS = 12;
export const MOCK_DEFAULT_CHUNKS = 5;
export const MOCK_DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5";
const ANTHROPIC_MESSAGES = "/v1/messages";

export async function startMockProvider(options: MockProviderOptions = {}): Promise<MockProvider> {
  const requests: RecordedRequest[] = [];
  const record = options.record ?? true;
  let activeResponses = 0;
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, (req, res) => {
    activeResponses++;
    res.once("close", () => activeResponses--);
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("error", () => {});
    req.on("end", () => {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const json = parseJson(body);
      if (record) requests.push({ method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers, body, json });
      answer(req, res, body, json).catch(() => res.destroy());
    });
  });
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    requests,
    get activeResponses() {
      return activeResponses;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

interface Scenario {
  status: number;
  delayMs: number;
  chunks: number;
  chunkDelayMs: number;
  promptTokens: number;
  completionTokens: number;
  cutAfter: number | undefined;
  errorMessage: string | undefined;
  gzip: boolean;
  extraHeaders: Record<string, string>;
  cacheCreationTokens: number;
  cacheReadTokens: number;
  cacheWrite1hTokens: number;
  cachedTokens: number | undefined;
  reasoningTokens: number | undefined;
  noUsage: boolean;
  stopReason: string;
  deltaInputTokens: boolean;
  streamErrorAfter: number | undefined;
}

function scenarioOf(headers: IncomingHttpHeaders): Scenario {
  const chunks = intHeader(headers, "x-mock-chunks") ?? MOCK_DEFAULT_CHUNKS;
  const extraHeaders: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith("x-mock-ratelimit-") && typeof value === "string") {
      extraHeaders[`x-ratelimit-${name.slice("x-mock-ratelimit-".length)}`] = value;
    } else if (name.startsWith("x-mock-anthropic-ratelimit-") && typeof value === "string") {
      extraHeaders[`anthropic-ratelimit-${name.slice("x-mock-anthropic-ratelimit-".length)}`] = value;
    }
  }
  const retryAfter = headers["x-mock-retry-after"];
  if (typeof retryAfter === "string") extraHeaders["retry-after"] = retryAfter;
  const accepts = String(headers["accept-encoding"] ?? "");
  return {
    status: intHeader(headers, "x-mock-status") ?? 200,
    delayMs: intHeader(headers, "x-mock-delay-ms") ?? 0,
    chunks,
    chunkDelayMs: intHeader(headers, "x-mock-chunk-delay-ms") ?? 0,
    promptTokens: intHeader(headers, "x-mock-prompt-tokens") ?? MOCK_DEFAULT_PROMPT_TOKENS,
    completionTokens: intHeader(headers, "x-mock-completion-tokens") ?? chunks,
    cutAfter: intHeader(headers, "x-mock-cut-after"),
    errorMessage: typeof headers["x-mock-error-message"] === "string" ? headers["x-mock-error-message"] : undefined,
    gzip: headers["x-mock-gzip"] === "1" && /\bgzip\b/.test(accepts),
    extraHeaders,
    cacheCreationTokens: intHeader(headers, "x-mock-cache-creation-tokens") ?? 0,
    cacheReadTokens: intHeader(headers, "x-mock-cache-read-tokens") ?? 0,
    cacheWrite1hTokens: intHeader(headers, "x-mock-cache-write-1h-tokens") ?? 0,
    cachedTokens: intHeader(headers, "x-mock-cached-tokens"),
    reasoningTokens: intHeader(headers, "x-mock-reasoning-tokens"),
    noUsage: headers["x-mock-no-usage"] === "1",
    stopReason: typeof headers["x-mock-stop-reason"] === "string" ? headers["x-mock-stop-reason"] : "end_turn",
    deltaInputTokens: headers["x-mock-delta-input-tokens"] === "1",
    streamErrorAfter: intHeader(headers, "x-mock-stream-error-after"),
  };
}

async function answer(req: IncomingMessage, res: ServerResponse, body: Buffer, json: unknown): Promise<void> {
  const s = scenarioOf(req.headers);
  if (s.delayMs > 0) await sleep(s.delayMs);
  const path = (req.url ?? "/").split("?")[0];
  const method = req.method ?? "GET";
  if (path === ANTHROPIC_MESSAGES) return answerMessages(res, s, method, json);
  if (s.status >= 400)
    return sendError(res, s, s.status, s.errorMessage ?? defaultMessage(s.status), errorType(s.status));

  if (method === "GET" && path === "/v1/models") {
    return sendJson(res, s, {
      object: "list",
      data: [{ id: MOCK_DEFAULT_MODEL, object: "model", created: MOCK_CREATED, owned_by: "aigw-mock" }],
    });
  }
  if (method === "POST" && path === "/v1/files") {
    return sendJson(res, s, {
      id: "file-mock",
      object: "file",
      bytes: body.length,
      sha256: createHash("sha256").update(body).digest("hex"),
      content_type: req.headers["content-type"] ?? null,
      created_at: MOCK_CREATED,
    });
  }
  const endpoint = method === "POST" ? ENDPOINTS[path ?? ""] : undefined;
  if (!endpoint) {
    return sendError(res, s, 404, `Unknown request URL: ${method} ${path}`, "invalid_request_error", "unknown_url");
  }
  if (!isRecord(json))
    return sendError(res, s, 400, "We could not parse the JSON body of your request.", "invalid_request_error");
  return endpoint(res, s, json);
}

type Endpoint = (res: ServerResponse, s: Scenario, request: Record<string, unknown>) => Promise<void>;

const ENDPOINTS: Record<string, Endpoint> = {
  "/v1/chat/completions": async (res, s, request) => {
    const model = modelOf(request);
    if (request.stream === true) return streamChat(res, s, model, includeUsage(request), "chat");
    return sendJson(res, s, {
      id: "chatcmpl-mock",
      object: "chat.completion",
      created: MOCK_CREATED,
      model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: content(s.chunks), refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: chatUsage(s),
    });
  },
  "/v1/completions": async (res, s, request) => {
    const model = modelOf(request);
    if (request.stream === true) return streamChat(res, s, model, includeUsage(request), "text");
    return sendJson(res, s, {
      id: "cmpl-mock",
      object: "text_completion",
      created: MOCK_CREATED,
      model,
      choices: [{ text: content(s.chunks), index: 0, logprobs: null, finish_reason: "stop" }],
      usage: chatUsage(s),
    });
  },
  "/v1/embeddings": async (res, s, request) => {
    const inputs = Array.isArray(request.input) ? request.input.length : 1;
    return sendJson(res, s, {
      object: "list",
      data: Array.from({ length: inputs }, (_, index) => ({
        object: "embedding",
        index,
        embedding: [0.125, -0.25, 0.5],
      })),
      model: typeof request.model === "string" ? request.model : "text-embedding-3-small",
      usage: s.noUsage ? undefined : { prompt_tokens: s.promptTokens, total_tokens: s.promptTokens },
    });
  },
  "/v1/responses": async (res, s, request) => {
    const model = modelOf(request);
    if (request.stream === true) return streamResponse(res, s, model);
    return sendJson(res, s, responseObject(s, model, "completed"));
  },
};

/** OpenAI's usage of Chat and Completions; null for x-mock-no-usage (the key is then left out). */
function chatUsage(s: Scenario) {
  if (s.noUsage) return undefined;
  const usage: Record<string, unknown> = {
    prompt_tokens: s.promptTokens,
    completion_tokens: s.completionTokens,
    total_tokens: s.promptTokens + s.completionTokens,
  };
  if (s.cachedTokens !== undefined || s.reasoningTokens !== undefined) {
    usage.prompt_tokens_details = { cached_tokens: s.cachedTokens ?? 0, audio_tokens: 0 };
    usage.completion_tokens_details = {
      reasoning_tokens: s.reasoningTokens ?? 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    };
  }
  return usage;
}

function responseObject(s: Scenario, model: string, status: string) {
  const done = status === "completed";
  return {
    id: "resp_mock",
    object: "response",
    created_at: MOCK_CREATED,
    status,
    model,
    output: done
      ? [
          {
            type: "message",
            id: "msg_mock",
            status: "completed",
            role: "assistant",
            content: [{ type: "output_text", text: content(s.chunks), annotations: [] }],
          },
        ]
      : [],
    usage:
      done && !s.noUsage
        ? {
            input_tokens: s.promptTokens,
            input_tokens_details: { cached_tokens: s.cachedTokens ?? 0 },
            output_tokens: s.completionTokens,
            output_tokens_details: { reasoning_tokens: s.reasoningTokens ?? 0 },
            total_tokens: s.promptTokens + s.completionTokens,
          }
        : null,
  };
}

function token(index: number): string {
  return index === 0 ? "Hello" : " Hello";
}

function content(chunks: number): string {
  let text = "";
  for (let i = 0; i < chunks; i++) text += token(i);
  return text;
}

/**
 * Chat and legacy completion streams as OpenAI sends them: with include_usage every chunk
 * carries "usage":null and one more chunk (choices: []) carries the usage, before [DONE].
 */
async function streamChat(
  res: ServerResponse,
  s: Scenario,
  model: string,
  withUsage: boolean,
  kind: "chat" | "text",
): Promise<void> {
  startStream(res, s);
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const id = kind === "chat" ? "chatcmpl-mock" : "cmpl-mock";
  const usageNull = withUsage ? ',"usage":null' : "";
  const head = `{"id":"${id}","object":"${object}","created":${MOCK_CREATED},"model":${JSON.stringify(model)},"choices":`;
  const chunk = (choice: unknown) => `data: ${head}[${JSON.stringify(choice)}]${usageNull}}\n\n`;
  if (kind === "chat") {
    res.write(
      chunk({
        index: 0,
        delta: { role: "assistant", content: "", refusal: null },
        logprobs: null,
        finish_reason: null,
      }),
    );
  }
  for (let i = 0; i < s.chunks; i++) {
    if (s.chunkDelayMs > 0) await sleep(s.chunkDelayMs);
    if (s.cutAfter !== undefined && i >= s.cutAfter) {
      await cut(res);
      return;
    }
    if (res.destroyed) return;
    const choice =
      kind === "chat"
        ? { index: 0, delta: { content: token(i) }, logprobs: null, finish_reason: null }
        : { text: token(i), index: 0, logprobs: null, finish_reason: null };
    res.write(chunk(choice));
  }
  const last =
    kind === "chat"
      ? { index: 0, delta: {}, logprobs: null, finish_reason: "stop" }
      : { text: "", index: 0, logprobs: null, finish_reason: "stop" };
  res.write(chunk(last));
  if (withUsage && !s.noUsage) res.write(`data: ${head}[],"usage":${JSON.stringify(chatUsage(s))}}\n\n`);
  res.end("data: [DONE]\n\n");
}

async function streamResponse(res: ServerResponse, s: Scenario, model: string): Promise<void> {
  startStream(res, s);
  let sequence = 0;
  const send = (type: string, fields: Record<string, unknown>) =>
    res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...fields })}\n\n`);
  send("response.created", { response: responseObject(s, model, "in_progress") });
  for (let i = 0; i < s.chunks; i++) {
    if (s.chunkDelayMs > 0) await sleep(s.chunkDelayMs);
    if (s.cutAfter !== undefined && i >= s.cutAfter) {
      await cut(res);
      return;
    }
    if (res.destroyed) return;
    send("response.output_text.delta", { item_id: "msg_mock", output_index: 0, content_index: 0, delta: token(i) });
  }
  send("response.completed", { response: responseObject(s, model, "completed") });
  res.end();
}

function startStream(res: ServerResponse, s: Scenario): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    ...s.extraHeaders,
  });
  res.flushHeaders();
}

function sendJson(res: ServerResponse, s: Scenario, value: unknown, status = 200): Promise<void> {
  let body = Buffer.from(JSON.stringify(value));
  const headers: Record<string, string> = { "content-type": "application/json", ...s.extraHeaders };
  if (s.gzip) {
    body = gzipSync(body);
    headers["content-encoding"] = "gzip";
  }
  headers["content-length"] = String(body.length);
  res.writeHead(status, headers);
  if (s.cutAfter !== undefined) {
    res.write(body.subarray(0, Math.floor(body.length / 2)));
    res.destroy();
  } else {
    res.end(body);
  }
  return Promise.resolve();
}

function sendError(res: ServerResponse, s: Scenario, status: number, message: string, type: string, code?: string) {
  return sendJson(res, s, { error: { message, type, param: null, code: code ?? null } }, status);
}

/** Anthropic's Messages API: errors in its own shape, JSON or the event stream of a real stream. */
function answerMessages(res: ServerResponse, s: Scenario, method: string, request: unknown): Promise<void> {
  if (s.status >= 400) {
    const type = anthropicErrorType(s.status);
    return sendAnthropicError(res, s, s.status, type, s.errorMessage ?? anthropicMessage(type));
  }
  if (method !== "POST")
    return sendAnthropicError(res, s, 405, "invalid_request_error", `Method ${method} not allowed`);
  if (!isRecord(request)) return sendAnthropicError(res, s, 400, "invalid_request_error", "Invalid JSON body");
  const model =
    typeof request.model === "string" && request.model !== "" ? request.model : MOCK_DEFAULT_ANTHROPIC_MODEL;
  if (request.stream === true) return streamMessage(res, s, model);
  return sendJson(res, withRequestId(s), {
    id: "msg_mock",
    type: "message",
    role: "assistant",
    model,
    content: [{ type: "text", text: content(s.chunks) }],
    stop_reason: s.stopReason,
    stop_sequence: null,
    ...(s.noUsage ? {} : { usage: anthropicUsage(s, s.completionTokens) }),
  });
}

/** Anthropic's usage object: input_tokens leaves out the cache writes and reads reported beside it. */
function anthropicUsage(s: Scenario, outputTokens: number) {
  return {
    input_tokens: s.promptTokens,
    cache_creation_input_tokens: s.cacheCreationTokens,
    cache_read_input_tokens: s.cacheReadTokens,
    cache_creation: {
      ephemeral_5m_input_tokens: Math.max(0, s.cacheCreationTokens - s.cacheWrite1hTokens),
      ephemeral_1h_input_tokens: s.cacheWrite1hTokens,
    },
    output_tokens: outputTokens,
    service_tier: "standard",
  };
}

/** The event sequence of a real Messages stream, with usage in message_start and message_delta. */
async function streamMessage(res: ServerResponse, s: Scenario, model: string): Promise<void> {
  startStream(res, withRequestId(s));
  const send = (type: string, fields: Record<string, unknown>) =>
    res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`);
  send("message_start", {
    message: {
      id: "msg_mock",
      type: "message",
      role: "assistant",
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      ...(s.noUsage ? {} : { usage: anthropicUsage(s, 1) }),
    },
  });
  send("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
  send("ping", {});
  for (let i = 0; i < s.chunks; i++) {
    if (s.chunkDelayMs > 0) await sleep(s.chunkDelayMs);
    if (s.cutAfter !== undefined && i >= s.cutAfter) {
      await cut(res);
      return;
    }
    if (res.destroyed) return;
    if (s.streamErrorAfter !== undefined && i >= s.streamErrorAfter) {
      send("error", { error: { type: "overloaded_error", message: s.errorMessage ?? "Overloaded" } });
      res.end();
      return;
    }
    send("content_block_delta", { index: 0, delta: { type: "text_delta", text: token(i) } });
  }
  send("content_block_stop", { index: 0 });
  send("message_delta", {
    delta: { stop_reason: s.stopReason, stop_sequence: null },
    ...(s.noUsage
      ? {}
      : { usage: s.deltaInputTokens ? anthropicUsage(s, s.completionTokens) : { output_tokens: s.completionTokens } }),
  });
  send("message_stop", {});
  res.end();
}

function withRequestId(s: Scenario): Scenario {
  return { ...s, extraHeaders: { "request-id": "req_mock", ...s.extraHeaders } };
}

function sendAnthropicError(res: ServerResponse, s: Scenario, status: number, type: string, message: string) {
  return sendJson(res, withRequestId(s), { type: "error", error: { type, message } }, status);
}

function anthropicErrorType(status: number): string {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 529:
      return "overloaded_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

function anthropicMessage(type: string): string {
  switch (type) {
    case "overloaded_error":
      return "Overloaded";
    case "rate_limit_error":
      return "Number of request tokens has exceeded your per-minute rate limit";
    case "authentication_error":
      return "invalid x-api-key";
    case "api_error":
      return "Internal server error";
    default:
      return `Mock error (${type})`;
  }
}

function errorType(status: number): string {
  if (status === 429) return "rate_limit_error";
  if (status === 401 || status === 403) return "authentication_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

function defaultMessage(status: number): string {
  switch (status) {
    case 429:
      return "Rate limit reached for requests";
    case 401:
      return "Incorrect API key provided";
    case 500:
      return "The server had an error while processing your request.";
    case 503:
      return "The engine is currently overloaded, please try again later.";
    default:
      return `Mock error ${status}`;
  }
}

function includeUsage(request: Record<string, unknown>): boolean {
  const options = request.stream_options;
  return isRecord(options) && options.include_usage === true;
}

function modelOf(request: Record<string, unknown>): string {
  return typeof request.model === "string" && request.model !== "" ? request.model : MOCK_DEFAULT_MODEL;
}

function intHeader(headers: IncomingHttpHeaders, name: string): number | undefined {
  const value = headers[name];
  if (typeof value !== "string" || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Destroys the socket after what was written has left: Node corks a response's socket
 * until the next tick, so destroying at once would drop the chunks before the cut too.
 */
async function cut(res: ServerResponse): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  res.destroy();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function parseArgs(argv: readonly string[]): { host: string; port: number } {
  let host = "127.0.0.1";
  let port = 9100;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = argv[i + 1];
    if (arg === "--port" && value !== undefined) {
      port = Number(value);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: ${value} is not a port number`);
      i++;
    } else if (arg === "--host" && value !== undefined) {
      host = value;
      i++;
    } else {
      throw new Error(`mock-provider: unknown argument ${arg} (usage: mock-provider.ts [--host HOST] [--port PORT])`);
    }
  }
  return { host, port };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { host, port } = parseArgs(process.argv.slice(2));
  const mock = await startMockProvider({ host, port, record: false });
  console.log(`mock provider listening on ${mock.url} (OpenAI-compatible; base URL ${mock.url}/v1)`);
  const stop = () => void mock.close().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
