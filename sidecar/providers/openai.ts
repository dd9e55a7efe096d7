import {
  type ProviderAdapter,
  type ResponseBodyFilter,
  type ResponseContext,
  type ResponseFacts,
  type ResponseObserver,
  STREAM_KEY,
  type StreamContentListener,
  type UpstreamRewrite,
  type Usage,
} from "./adapter.js";
import { type SseEvent, SseFramer, SseParser } from "./sse.js";
import { SseStreamObserver } from "./stream-observer.js";

/**
 * OpenAI-compatible APIs (OpenAI, Azure-style proxies, vLLM, Ollama, Groq, Anthropic's
 * compatibility layer...): Chat Completions, Completions, Embeddings, Responses.
 */

const CHAT_COMPLETIONS = "/v1/chat/completions";
const OBSERVED_PATHS: ReadonlySet<string> = new Set([
  CHAT_COMPLETIONS,
  "/v1/completions",
  "/v1/embeddings",
  "/v1/responses",
]);

/** Above this a JSON response is not kept whole; usage is then looked for in its tail. */
export const MAX_JSON_COPY_BYTES = 10 * 1024 * 1024;
const TAIL_BYTES = 16 * 1024;
const HEAD_BYTES = 16 * 1024;

export const openAiAdapter: ProviderAdapter = {
  name: "openai",

  observes(method, path) {
    return method === "POST" && OBSERVED_PATHS.has(path);
  },

  rewriteRequest(path, body) {
    if (path !== CHAT_COMPLETIONS || !body.includes(STREAM_KEY)) return undefined;
    return askForStreamUsage(body);
  },

  readRequest(_path, body) {
    const json = parseJson(body.toString("utf8"));
    if (!isRecord(json)) return { model: "", stream: false };
    return { model: typeof json.model === "string" ? json.model : "", stream: json.stream === true };
  },

  observeResponse(context: ResponseContext, listener?: StreamContentListener): ResponseObserver {
    if (context.status < 400 && context.contentType.startsWith("text/event-stream")) {
      return new OpenAiStreamObserver(listener);
    }
    return new JsonBodyObserver();
  },
};

const INCLUDE_USAGE = '"stream_options":{"include_usage":true}';

/**
 * A streamed chat completion reports usage only in an extra final chunk, sent when the
 * request asks with stream_options.include_usage. When the client did not ask, aigw asks
 * upstream and removes that chunk again from what the client receives.
 */
export function askForStreamUsage(body: Buffer): UpstreamRewrite | undefined {
  const text = body.toString("utf8");
  const json = parseJson(text);
  if (!isRecord(json) || json.stream !== true) return undefined;
  const options = json.stream_options;
  if (isRecord(options) && options.include_usage === true) return undefined;
  let rewritten: string;
  if (options === undefined) {
    // Insert rather than re-serialise: every other byte of the client's body (number
    // formats, key order, large integers such as seeds) stays exactly as sent.
    const brace = text.indexOf("{");
    rewritten = `${text.slice(0, brace + 1)}${INCLUDE_USAGE},${text.slice(brace + 1)}`;
  } else {
    json.stream_options = { ...(isRecord(options) ? options : {}), include_usage: true };
    rewritten = JSON.stringify(json);
  }
  return {
    body: Buffer.from(rewritten, "utf8"),
    identityEncoding: true,
    responseFilter: () => new UsageChunkFilter(),
  };
}

const USAGE_OBJECT = [Buffer.from('"usage":{'), Buffer.from('"usage": {')];
const NULL_USAGE_LAST = Buffer.from(',"usage":null}');
const LF = 0x0a;
const CR = 0x0d;

/**
 * Removes what include_usage added to a chat stream: the usage-only chunk (choices: [])
 * and the `"usage":null` that then ends every other chunk. Event framing is kept: whole
 * events are dropped, others pass with their own line endings, `data: [DONE]` included.
 */
export class UsageChunkFilter implements ResponseBodyFilter {
  // Bytes of an event past the framer's bound go to the client as they come: never a stall.
  private readonly framer = new SseFramer("pass");

  transform(chunk: Buffer): Buffer | undefined {
    const blocks = this.framer.push(chunk);
    if (blocks.length === 0) return undefined;
    const kept: Buffer[] = [];
    for (const block of blocks) {
      if (isUsageOnlyChunk(block)) continue;
      kept.push(withoutTrailingNullUsage(block));
    }
    if (kept.length === 0) return undefined;
    return kept.length === 1 ? kept[0] : Buffer.concat(kept);
  }

  flush(): Buffer | undefined {
    return this.framer.flush();
  }
}

function isUsageOnlyChunk(block: Buffer): boolean {
  if (!USAGE_OBJECT.some((needle) => block.includes(needle))) return false;
  const event = parseBlockData(block);
  if (!isRecord(event)) return false;
  return Array.isArray(event.choices) && event.choices.length === 0 && isRecord(event.usage);
}

function parseBlockData(block: Buffer): unknown {
  const parser = new SseParser();
  const [event] = parser.push(block);
  return event ? parseJson(event.data) : undefined;
}

/**
 * `,"usage":null}` right before a line end closes the top-level object (nothing follows
 * it on the data line), so removing the pair cannot touch nested values.
 */
function withoutTrailingNullUsage(block: Buffer): Buffer {
  let at = block.indexOf(NULL_USAGE_LAST);
  if (at === -1) return block;
  const parts: Buffer[] = [];
  let from = 0;
  while (at !== -1) {
    const after = block[at + NULL_USAGE_LAST.length];
    if (after === LF || after === CR) {
      parts.push(block.subarray(from, at));
      from = at + NULL_USAGE_LAST.length - 1; // keep the "}"
    }
    at = block.indexOf(NULL_USAGE_LAST, at + 1);
  }
  if (parts.length === 0) return block;
  parts.push(block.subarray(from));
  return Buffer.concat(parts);
}

const USAGE_FIELD = /"usage"\s*:\s*\{/;
/** A chunk that carries text: chat's delta.content, completions' text, Responses' delta (non-empty). */
const CONTENT_FIELD = /"(?:content|text|delta)"\s*:\s*"[^"]/;

/** Reads model, usage and errors from an OpenAI-style event stream (Chat, Completions, Responses). */
export class OpenAiStreamObserver extends SseStreamObserver {
  protected read(event: SseEvent): void {
    const data = event.data;
    if (data === "[DONE]") return;
    const listener = this.listener;
    if (listener === undefined) {
      // Counted without parsing, for the estimate of a cut stream's usage. Responses API
      // events name themselves; its ".delta" events are the content.
      if (event.event === "message" ? CONTENT_FIELD.test(data) : event.event.endsWith("_text.delta"))
        this.contentDeltas++;
      // Parsing every chunk of a long stream is wasted work: only the first (model), usage
      // and error events carry what aigw reports.
      const wanted = this.facts.model === undefined || USAGE_FIELD.test(data) || data.includes('"error"');
      if (!wanted) return;
    }
    const json = parseJson(data);
    if (!isRecord(json)) return;
    // Responses API events wrap the response object ("response.created", "response.completed").
    const response = isRecord(json.response) ? json.response : undefined;
    const model = stringField(json, "model") ?? (response && stringField(response, "model"));
    if (model && this.facts.model === undefined) this.facts.model = model;
    const usage = usageFrom(json.usage) ?? (response ? usageFrom(response.usage) : undefined);
    if (usage) this.facts.usage = usage;
    const message = errorMessageFrom(json);
    if (message && (json.error !== undefined || json.type === "error")) {
      this.facts.errorMessage = message;
      const type = isRecord(json.error) ? stringField(json.error, "type") : undefined;
      if (type) this.facts.errorType = type;
    }
    if (listener === undefined) return;
    const text = contentOf(json);
    if (text !== "") {
      this.contentDeltas++;
      listener.content(text, this.facts.model);
    }
    const finishReason = finishReasonOf(json, response);
    if (finishReason) this.facts.finishReason = finishReason;
  }
}

/** The text a chunk adds: chat deltas and completions' text across choices, Responses' text deltas. */
function contentOf(json: Record<string, unknown>): string {
  if (json.type === "response.output_text.delta") return typeof json.delta === "string" ? json.delta : "";
  const choices = json.choices;
  if (!Array.isArray(choices)) return "";
  let text = "";
  for (const choice of choices) {
    if (!isRecord(choice)) continue;
    const delta = choice.delta;
    if (isRecord(delta) && typeof delta.content === "string") text += delta.content;
    else if (typeof choice.text === "string") text += choice.text;
  }
  return text;
}

/** Chat/Completions' finish_reason; the Responses API's final status in the same terms. */
function finishReasonOf(
  json: Record<string, unknown>,
  response: Record<string, unknown> | undefined,
): string | undefined {
  if (Array.isArray(json.choices)) {
    for (const choice of json.choices) {
      if (isRecord(choice) && typeof choice.finish_reason === "string" && choice.finish_reason !== "")
        return choice.finish_reason;
    }
    return undefined;
  }
  if (!response) return undefined;
  switch (json.type) {
    case "response.completed":
      return "stop";
    case "response.incomplete": {
      const details = response.incomplete_details;
      return (isRecord(details) ? stringField(details, "reason") : undefined) ?? "incomplete";
    }
    case "response.failed":
      return "error";
    default:
      return undefined;
  }
}

/**
 * Reads a JSON body (success or error). Bodies past MAX_JSON_COPY_BYTES (large embedding
 * batches) are not kept: usage sits at the end and the model at the start, so a head and
 * a tail are enough to find them.
 */
export class JsonBodyObserver implements ResponseObserver {
  private chunks: Buffer[] = [];
  private size = 0;
  private head: Buffer | undefined;
  private tail: Buffer | undefined;

  constructor(
    private readonly maxBytes = MAX_JSON_COPY_BYTES,
    /** The provider's usage object → Usage (OpenAI's by default). */
    private readonly readUsage: (value: unknown) => Usage | undefined = usageFrom,
  ) {}

  push(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.head === undefined && this.size <= this.maxBytes) {
      this.chunks.push(chunk);
      return;
    }
    if (this.head === undefined) {
      const all = Buffer.concat([...this.chunks, chunk]);
      this.head = all.subarray(0, HEAD_BYTES);
      this.tail = Buffer.from(all.subarray(Math.max(0, all.length - TAIL_BYTES)));
      this.chunks = [];
      return;
    }
    const joined = Buffer.concat([this.tail ?? Buffer.alloc(0), chunk]);
    this.tail = Buffer.from(joined.subarray(Math.max(0, joined.length - TAIL_BYTES)));
  }

  finish(): ResponseFacts {
    try {
      if (this.head !== undefined) return factsFromFragments(this.head, this.tail, this.readUsage);
      if (this.size === 0) return {};
      const text =
        this.chunks.length === 1 ? this.chunks[0]!.toString("utf8") : Buffer.concat(this.chunks).toString("utf8");
      return factsFromJson(parseJson(text), this.readUsage);
    } catch {
      return {};
    }
  }
}

function factsFromJson(json: unknown, readUsage: (value: unknown) => Usage | undefined): ResponseFacts {
  if (!isRecord(json)) return {};
  const facts: ResponseFacts = {};
  const model = stringField(json, "model");
  if (model) facts.model = model;
  const usage = readUsage(json.usage);
  if (usage) facts.usage = usage;
  const message = errorMessageFrom(json);
  if (message) facts.errorMessage = message;
  return facts;
}

function factsFromFragments(
  head: Buffer,
  tail: Buffer | undefined,
  readUsage: (value: unknown) => Usage | undefined,
): ResponseFacts {
  const facts: ResponseFacts = {};
  const model = /"model"\s*:\s*"([^"\\]{1,200})"/.exec(head.toString("utf8"))?.[1];
  if (model) facts.model = model;
  const usageText = tail ? lastUsageObject(tail.toString("utf8")) : undefined;
  const usage = usageText ? readUsage(parseJson(usageText)) : undefined;
  if (usage) facts.usage = usage;
  return facts;
}

/**
 * The text of the last `"usage": {…}` object in a body's tail, nested details included
 * (braces inside strings do not count). Undefined when none is complete in the tail.
 */
export function lastUsageObject(text: string): string | undefined {
  const key = /"usage"\s*:\s*\{/g;
  let start = -1;
  for (let match = key.exec(text); match !== null; match = key.exec(text)) start = match.index + match[0].length - 1;
  if (start === -1) return undefined;
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b) depth++;
    else if (c === 0x7d && --depth === 0) return text.slice(start, i + 1);
  }
  return undefined;
}

/**
 * Chat/Completions/Embeddings (prompt_tokens, completion_tokens and their _details) and
 * Responses (input_tokens, output_tokens and their _details). OpenAI's counts already hold
 * the details: prompt_tokens counts the cached tokens, completion_tokens the reasoning.
 */
export function usageFrom(value: unknown): Usage | undefined {
  if (!isRecord(value)) return undefined;
  const prompt = tokenCount(value.prompt_tokens) ?? tokenCount(value.input_tokens);
  const completion = tokenCount(value.completion_tokens) ?? tokenCount(value.output_tokens);
  const total = tokenCount(value.total_tokens);
  if (prompt === undefined && completion === undefined && total === undefined) return undefined;
  const promptTokens = prompt ?? 0;
  let completionTokens = completion ?? 0;
  const reasoning = detailCount(value.completion_tokens_details, value.output_tokens_details, "reasoning_tokens");
  // Some OpenAI-compatible servers count reasoning beside completion_tokens instead of in
  // it, and their total says so; aigw's completion_tokens always holds it.
  if (reasoning !== undefined && reasoning > 0 && total === promptTokens + completionTokens + reasoning) {
    completionTokens = Math.min(completionTokens + reasoning, MAX_UINT32);
  }
  const usage: Usage = { promptTokens, completionTokens, totalTokens: total ?? promptTokens + completionTokens };
  // DeepSeek's OpenAI-compatible API names its cache hits prompt_cache_hit_tokens.
  const cached =
    detailCount(value.prompt_tokens_details, value.input_tokens_details, "cached_tokens") ??
    tokenCount(value.prompt_cache_hit_tokens);
  // A detail is a part of its count: a provider's larger number is not believed past it.
  if (cached !== undefined) usage.cacheReadTokens = Math.min(cached, promptTokens);
  if (reasoning !== undefined) usage.reasoningTokens = Math.min(reasoning, completionTokens);
  return usage;
}

/** A count inside a *_tokens_details object (Chat's name first, then the Responses API's). */
function detailCount(chat: unknown, responses: unknown, key: string): number | undefined {
  const details = isRecord(chat) ? chat : isRecord(responses) ? responses : undefined;
  return details === undefined ? undefined : tokenCount(details[key]);
}

/** The provider's message from the usual error shapes: {error:{message}}, {error:"..."}, {message}, {detail}. */
export function errorMessageFrom(json: Record<string, unknown>): string | undefined {
  const error = json.error;
  if (isRecord(error)) return stringField(error, "message");
  if (typeof error === "string" && error !== "") return error;
  // Compatible servers that are not OpenAI: {"message": ...} and FastAPI's {"detail": ...}.
  return stringField(json, "message") ?? stringField(json, "detail");
}

export const MAX_UINT32 = 0xffff_ffff;

export function tokenCount(value: unknown): number | undefined {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) return undefined;
  return Math.min(Math.floor(value), MAX_UINT32);
}

export function stringField(json: Record<string, unknown>, key: string): string | undefined {
  const value = json[key];
  return typeof value === "string" && value !== "" ? value : undefined;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
