/**
 * What the proxy asks of a provider's API format. The proxy forwards bytes; an adapter
 * says which requests it reads, what (rarely) must change upstream, and reads the copy of
 * the response for usage. OpenAI-compatible APIs are one adapter; Anthropic's Messages
 * API slots in as another.
 */

/**
 * The provider's token counts in aigw's terms, the same for every provider (the adapters
 * normalise): promptTokens is every input token, cached ones included; completionTokens
 * every output token, reasoning included. The details are parts of those two, present
 * only when the provider reported them.
 */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Of promptTokens: read from the provider's prompt cache. */
  cacheReadTokens?: number;
  /** Of promptTokens: written to the prompt cache (Anthropic). */
  cacheWriteTokens?: number;
  /** Of cacheWriteTokens: written for one hour rather than five minutes (Anthropic). */
  cacheWrite1hTokens?: number;
  /** Of completionTokens: spent on reasoning (OpenAI). */
  reasoningTokens?: number;
  /**
   * Only part of the provider's usage was read: Anthropic's message_start (input and a
   * provisional output count) without message_delta's final count.
   */
  partial?: true;
}

/** What the request said, read from its body off the response path. */
export interface RequestFacts {
  model: string;
  stream: boolean;
}

/** A change the adapter needs upstream so that it can observe the response. */
export interface UpstreamRewrite {
  /** The body to send instead of the client's. */
  body: Buffer;
  /**
   * Ask the upstream for an uncompressed response, because `responseFilter` edits the
   * body the client receives. HTTP clients decode by content-encoding, so this is
   * invisible to them.
   */
  identityEncoding: boolean;
  /** Removes from the client's copy what the rewrite added upstream. */
  responseFilter?: (() => ResponseBodyFilter) | undefined;
}

/**
 * Edits the response body on its way to the client, chunk by chunk. Must be cheap and
 * must not hold bytes longer than the framing needs (an SSE event until its blank line).
 */
export interface ResponseBodyFilter {
  transform(chunk: Buffer): Buffer | undefined;
  flush(): Buffer | undefined;
}

/** What the response said, read from the copy after the bytes went to the client. */
export interface ResponseFacts {
  model?: string;
  usage?: Usage;
  /** The provider's own error message (error bodies, error events in a stream). */
  errorMessage?: string;
  /** The provider's error type ("overloaded_error", "rate_limit_error"...), when it gave one. */
  errorType?: string;
  /** The last finish reason the provider gave, if any (streams). */
  finishReason?: string;
  /** Content chunks seen in a stream; what a cut stream's completion tokens are estimated from. */
  contentDeltas?: number;
}

/**
 * Receives a stream's content chunks as the copy is read (off the response path), in order.
 * Only given to an observer when someone wants `streaming` events: without one the
 * observer skips parsing the chunks it does not need.
 */
export interface StreamContentListener {
  /** One content chunk (the delta's text); `model` when the stream has said it. */
  content(text: string, model: string | undefined): void;
}

export interface ResponseObserver {
  /** A decoded (decompressed) chunk of the response body. Never throws. */
  push(chunk: Buffer): void;
  /** Called once, after the last chunk (or when the body was cut short). Never throws. */
  finish(): ResponseFacts;
}

export interface ResponseContext {
  path: string;
  status: number;
  /** The response's content-type, lower-cased, "" when absent. */
  contentType: string;
}

export interface ProviderAdapter {
  /** The API format, for logs ("openai"). The event's provider is the upstream's name. */
  readonly name: string;
  /** Whether requests to this path (no query string) are observed. Hot path: keep it a lookup. */
  observes(method: string, path: string): boolean;
  /**
   * Called on the hot path with the buffered request body of an observed request.
   * Returns undefined (the common case) when the body goes upstream unchanged.
   */
  rewriteRequest(path: string, body: Buffer): UpstreamRewrite | undefined;
  /** Reads the request body; off the response path. Never throws. */
  readRequest(path: string, body: Buffer): RequestFacts;
  /** A fresh observer for one response; `listener` only for successful event streams. */
  observeResponse(context: ResponseContext, listener?: StreamContentListener): ResponseObserver;
}

/**
 * What to report when the provider's final usage was not read: a stream cut before it, a
 * stream or body without it. Providers report usage only at the end (OpenAI's last chunk)
 * or partly at the start (Anthropic's message_start has the input tokens and a provisional
 * output count), so the completion side is estimated as one token per content chunk seen,
 * unless the provider already said more. An estimate, never zero when content was sent:
 * a budget must not treat a cut stream as free. The event says usage_known: false.
 */
export function estimatedUsage(reported: Usage | undefined, contentDeltas: number): Usage | undefined {
  if (reported === undefined && contentDeltas === 0) return undefined;
  const promptTokens = reported?.promptTokens ?? 0;
  const completionTokens = Math.max(reported?.completionTokens ?? 0, contentDeltas);
  const usage: Usage = { ...reported, promptTokens, completionTokens, totalTokens: promptTokens + completionTokens };
  delete usage.partial;
  return usage;
}

/** A request body without this key does not ask to stream (checked before any parse). */
export const STREAM_KEY = Buffer.from('"stream"');
