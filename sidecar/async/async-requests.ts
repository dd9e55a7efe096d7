import { brotliDecompressSync, gunzipSync, inflateSync } from "node:zlib";
import { LRUCache } from "lru-cache";
import type { ProviderAdapter, Usage } from "../providers/adapter.js";
import { parseSseBlock, SseFramer } from "../providers/sse.js";
import { type CaptureEnding, CapturedResponse } from "./captured-response.js";

export const ASYNC_STATUS_PATH = "/aigw/v1/requests/";

export type AsyncStatus = "received" | "processing" | "completed" | "failed";

export interface AsyncRequestLimits {
  /** Results kept at most (oldest dropped first). Default 10,000. */
  maxEntries?: number;
  /** How long a result is kept after it was last written. Default 1 hour. */
  ttlMs?: number;
  /** Bytes of kept response bodies, all requests together. Default 256 MiB. */
  maxTotalBytes?: number;
  /** A response body larger than this is not kept (the status says so). Default 10 MiB. */
  maxBodyBytes?: number;
}

const DEFAULTS = {
  maxEntries: 10_000,
  ttlMs: 60 * 60 * 1000,
  maxTotalBytes: 256 * 1024 * 1024,
  maxBodyBytes: 10 * 1024 * 1024,
} as const;

/** The bookkeeping of one entry besides its body. */
const ENTRY_OVERHEAD_BYTES = 512;

/** One `Prefer: respond-async` call, from its 202 to its result. */
export class AsyncRequest {
  status: AsyncStatus = "received";
  readonly createdAt = Date.now();
  finishedAt = 0;
  /** The provider's (or the gateway's) status code; 0 when no response came. */
  statusCode = 0;
  /** The response body as JSON text: the provider's JSON, a stream's events as an array, or a string. */
  bodyJson: string | undefined;
  bodyTruncated = false;
  usage: Usage | undefined;
  errorMessage: string | undefined;
  readonly capture: CapturedResponse;

  constructor(
    readonly requestId: string,
    readonly method: string,
    readonly path: string,
    maxBodyBytes: number,
    /** The adapter that reads this path's usage; undefined for pass-through paths. */
    private readonly adapter: ProviderAdapter | undefined,
    private readonly onFinished: (request: AsyncRequest) => void,
  ) {
    this.capture = new CapturedResponse(maxBodyBytes, this.finish);
  }

  get statusUrl(): string {
    return ASYNC_STATUS_PATH + this.requestId;
  }

  get sizeBytes(): number {
    return ENTRY_OVERHEAD_BYTES + (this.bodyJson?.length ?? this.capture.bytes);
  }

  /** The status document of GET /aigw/v1/requests/{id}. */
  statusJson(now: number = Date.now()): string {
    const done = this.status === "completed" || this.status === "failed";
    const head: Record<string, unknown> = {
      request_id: this.requestId,
      status: this.status,
      status_url: this.statusUrl,
      method: this.method,
      path: this.path,
      created_at: new Date(this.createdAt).toISOString(),
    };
    if (!done) {
      const tokens = this.capture.streamedTokens;
      head.progress = { elapsed_ms: now - this.createdAt, ...(tokens !== undefined ? { tokens } : {}) };
      return JSON.stringify(head);
    }
    head.completed_at = new Date(this.finishedAt).toISOString();
    head.latency_ms = this.finishedAt - this.createdAt;
    if (this.errorMessage !== undefined) head.error = { message: this.errorMessage };
    if (this.statusCode === 0) return JSON.stringify(head);
    const result = {
      status_code: this.statusCode,
      usage: this.usage ? usageJson(this.usage) : null,
      ...(this.bodyTruncated ? { body_truncated: true } : {}),
    };
    // The body is kept as JSON text and spliced in, not parsed again per poll.
    const resultText = JSON.stringify(result);
    const body = this.bodyJson ?? "null";
    return `${JSON.stringify(head).slice(0, -1)},"result":${resultText.slice(0, -1)},"body":${body}}}`;
  }

  private readonly finish = (capture: CapturedResponse, ending: CaptureEnding): void => {
    this.finishedAt = Date.now();
    this.statusCode = capture.statusCode;
    this.bodyTruncated = capture.truncated;
    const decoded = capture.truncated ? undefined : decode(capture.body(), capture.contentEncoding);
    const isStream = capture.contentType.startsWith("text/event-stream");
    if (decoded !== undefined) {
      this.bodyJson = isStream ? streamAsJson(decoded) : bodyAsJson(decoded, capture.contentType);
      if (this.adapter && capture.statusCode >= 200) {
        const observer = this.adapter.observeResponse({
          path: this.path,
          status: capture.statusCode,
          contentType: capture.contentType,
        });
        observer.push(decoded);
        const facts = observer.finish();
        this.usage = facts.usage;
        if (capture.statusCode >= 400) this.errorMessage = facts.errorMessage;
      }
    } else if (!capture.truncated) {
      this.bodyTruncated = true;
    }
    const ok = ending === "complete" && capture.statusCode >= 200 && capture.statusCode < 300;
    this.status = ok ? "completed" : "failed";
    if (!ok) this.errorMessage = failureMessage(ending, capture.statusCode, this.errorMessage ?? errorMessageOf(this));
    this.onFinished(this);
  };
}

/**
 * Async calls of one sidecar, in its memory: bounded by entries, bytes and age
 * (lru-cache). A status URL answers on the sidecar that took the call, until its entry is
 * dropped; the result also goes out by webhook.
 */
export class AsyncRequests {
  private readonly cache: LRUCache<string, AsyncRequest>;
  private readonly inFlight = new Set<AsyncRequest>();
  private readonly maxBodyBytes: number;

  constructor(limits: AsyncRequestLimits = {}) {
    this.maxBodyBytes = limits.maxBodyBytes ?? DEFAULTS.maxBodyBytes;
    this.cache = new LRUCache<string, AsyncRequest>({
      max: limits.maxEntries ?? DEFAULTS.maxEntries,
      ttl: limits.ttlMs ?? DEFAULTS.ttlMs,
      maxSize: limits.maxTotalBytes ?? DEFAULTS.maxTotalBytes,
      sizeCalculation: (request) => request.sizeBytes,
    });
  }

  /** Registers a new call (status "received"). */
  create(requestId: string, method: string, path: string, adapter: ProviderAdapter | undefined): AsyncRequest {
    const request = new AsyncRequest(requestId, method, path, this.maxBodyBytes, adapter, this.finished);
    this.cache.set(requestId, request);
    this.inFlight.add(request);
    return request;
  }

  get(requestId: string): AsyncRequest | undefined {
    return this.cache.get(requestId);
  }

  get size(): number {
    return this.cache.size;
  }

  /** Ends every call still running (the sidecar is closing); they are reported as failed. */
  abortAll(): void {
    for (const request of [...this.inFlight]) request.capture.abort();
  }

  private readonly finished = (request: AsyncRequest): void => {
    this.inFlight.delete(request);
    // Again, so that the cache counts the body's size and the entry's age starts now.
    this.cache.set(request.requestId, request);
  };
}

function decode(body: Buffer, encoding: string): Buffer | undefined {
  try {
    switch (encoding) {
      case "":
      case "identity":
        return body;
      case "gzip":
      case "x-gzip":
        return gunzipSync(body);
      case "deflate":
        return inflateSync(body);
      case "br":
        return brotliDecompressSync(body);
      default:
        return undefined;
    }
  } catch {
    return undefined;
  }
}

/** JSON bodies stay as sent (validated); anything else becomes a JSON string. */
function bodyAsJson(body: Buffer, contentType: string): string {
  const text = body.toString("utf8");
  if (body.length === 0) return "null";
  if (contentType.includes("json") || contentType === "") {
    try {
      JSON.parse(text);
      return text;
    } catch {
      // Not JSON after all: kept as text.
    }
  }
  return JSON.stringify(text);
}

/** A stream's events as a JSON array of their data (parsed when JSON; "[DONE]" left out). */
function streamAsJson(body: Buffer): string {
  // The body is already held whole (and bounded by the capture): no block bound here.
  const framer = new SseFramer("pass", body.length + 1);
  const blocks = framer.push(body);
  const rest = framer.flush();
  if (rest) blocks.push(rest);
  const parts: string[] = [];
  for (const block of blocks) {
    const event = parseSseBlock(block);
    if (!event || event.data === "[DONE]") continue;
    try {
      JSON.parse(event.data);
      parts.push(event.data);
    } catch {
      parts.push(JSON.stringify(event.data));
    }
  }
  return `[${parts.join(",")}]`;
}

/** The error message of a provider's JSON error body (OpenAI and Anthropic: error.message). */
function errorMessageOf(request: AsyncRequest): string | undefined {
  if (request.bodyJson === undefined) return undefined;
  try {
    const json: unknown = JSON.parse(request.bodyJson);
    const error = (json as { error?: { message?: unknown } } | null)?.error;
    return typeof error?.message === "string" ? error.message : undefined;
  } catch {
    return undefined;
  }
}

function failureMessage(ending: CaptureEnding, statusCode: number, providerMessage: string | undefined): string {
  switch (ending) {
    case "aborted":
      return "the sidecar closed before the call finished";
    case "upstream_disconnected":
      return "the upstream closed the connection before the response was complete";
    default:
      if (providerMessage === undefined) return `upstream answered ${statusCode}`;
      // The proxy's own 502/504 (upstream unreachable or silent) already says what happened.
      return providerMessage.startsWith("aigw: ")
        ? providerMessage
        : `upstream answered ${statusCode}: ${providerMessage}`;
  }
}

/** The usage in the status result, in the completion webhook's terms (details only when the provider said them). */
function usageJson(usage: Usage): Record<string, number | boolean> {
  const json: Record<string, number | boolean> = {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.totalTokens,
  };
  if (usage.cacheReadTokens !== undefined) json.cache_read_tokens = usage.cacheReadTokens;
  if (usage.cacheWriteTokens !== undefined) json.cache_write_tokens = usage.cacheWriteTokens;
  if (usage.cacheWrite1hTokens !== undefined) json.cache_write_1h_tokens = usage.cacheWrite1hTokens;
  if (usage.reasoningTokens !== undefined) json.reasoning_tokens = usage.reasoningTokens;
  if (usage.partial) json.usage_known = false;
  return json;
}
