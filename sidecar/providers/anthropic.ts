import type { ProviderAdapter, ResponseContext, ResponseObserver, StreamContentListener, Usage } from "./adapter.js";
import { isRecord, JsonBodyObserver, MAX_UINT32, parseJson, stringField, tokenCount } from "./openai.js";
import type { SseEvent } from "./sse.js";
import { SseStreamObserver } from "./stream-observer.js";

/**
 * Anthropic's Messages API (`POST /v1/messages`), plain and streamed. Nothing changes
 * upstream: Anthropic streams always carry usage (message_start, message_delta), and
 * both `x-api-key` and `Authorization: Bearer` pass through as sent.
 */

const MESSAGES = "/v1/messages";

export const anthropicAdapter: ProviderAdapter = {
  name: "anthropic",

  observes(method, path) {
    return method === "POST" && path === MESSAGES;
  },

  rewriteRequest() {
    return undefined;
  },

  readRequest(_path, body) {
    const json = parseJson(body.toString("utf8"));
    if (!isRecord(json)) return { model: "", stream: false };
    return { model: typeof json.model === "string" ? json.model : "", stream: json.stream === true };
  },

  observeResponse(context: ResponseContext, listener?: StreamContentListener): ResponseObserver {
    if (context.status < 400 && context.contentType.startsWith("text/event-stream")) {
      return new AnthropicStreamObserver(listener);
    }
    // Messages and Anthropic's error bodies ({"type":"error","error":{"type","message"}})
    // share the JSON reader; only the usage object differs.
    return new JsonBodyObserver(undefined, anthropicUsage);
  },
};

/** Anthropic's usage object, as far as it is known; each field may be absent or null. */
export interface AnthropicUsageFields {
  inputTokens?: number;
  outputTokens?: number;
  cacheCreationInputTokens?: number;
  /** cache_creation.ephemeral_1h_input_tokens: the part of the cache writes kept for an hour. */
  cacheCreation1hInputTokens?: number;
  cacheReadInputTokens?: number;
}

/**
 * Merges a later usage object into what is known, field by field: a later non-null value
 * wins, an absent or null one keeps the earlier. message_start carries input and a
 * provisional output count; message_delta the final output (and, in newer API versions,
 * input and cache counts too).
 */
export function mergeAnthropicUsage(known: AnthropicUsageFields, value: unknown): AnthropicUsageFields {
  if (!isRecord(value)) return known;
  const merged: AnthropicUsageFields = { ...known };
  const input = tokenCount(value.input_tokens);
  if (input !== undefined) merged.inputTokens = input;
  const output = tokenCount(value.output_tokens);
  if (output !== undefined) merged.outputTokens = output;
  const cacheCreation = tokenCount(value.cache_creation_input_tokens);
  if (cacheCreation !== undefined) merged.cacheCreationInputTokens = cacheCreation;
  const cacheCreation1h = isRecord(value.cache_creation)
    ? tokenCount(value.cache_creation.ephemeral_1h_input_tokens)
    : undefined;
  if (cacheCreation1h !== undefined) merged.cacheCreation1hInputTokens = cacheCreation1h;
  const cacheRead = tokenCount(value.cache_read_input_tokens);
  if (cacheRead !== undefined) merged.cacheReadInputTokens = cacheRead;
  return merged;
}

/**
 * Usage in aigw's terms, the same as OpenAI's: Anthropic's input_tokens leaves out the
 * tokens written to and read from the prompt cache, so prompt_tokens is their sum, and
 * the cache counts are reported as its parts. Output tokens include extended thinking.
 */
export function usageOfAnthropic(fields: AnthropicUsageFields): Usage | undefined {
  const { inputTokens, outputTokens, cacheCreationInputTokens: written, cacheReadInputTokens: read } = fields;
  if (inputTokens === undefined && outputTokens === undefined && written === undefined && read === undefined) {
    return undefined;
  }
  const promptTokens = Math.min((inputTokens ?? 0) + (written ?? 0) + (read ?? 0), MAX_UINT32);
  const completionTokens = outputTokens ?? 0;
  const usage: Usage = { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens };
  if (read !== undefined) usage.cacheReadTokens = read;
  if (written !== undefined) usage.cacheWriteTokens = written;
  const written1h = fields.cacheCreation1hInputTokens;
  // Anthropic's breakdown of the writes cannot exceed them; garbage is not believed past it.
  if (written1h !== undefined) usage.cacheWrite1hTokens = Math.min(written1h, written ?? 0);
  return usage;
}

export function anthropicUsage(value: unknown): Usage | undefined {
  return usageOfAnthropic(mergeAnthropicUsage({}, value));
}

/**
 * Reads a Messages stream: message_start (model, input usage), content_block_delta
 * (content), message_delta (stop_reason, final usage), error (mid-stream failure, e.g.
 * overloaded_error). ping, content_block_start/stop and message_stop carry nothing aigw
 * reports.
 */
export class AnthropicStreamObserver extends SseStreamObserver {
  private usage: AnthropicUsageFields = {};
  /** message_delta's usage was read: the counts are final, not message_start's provisional ones. */
  private usageFinal = false;

  protected override complete(): void {
    const usage = usageOfAnthropic(this.usage);
    if (usage === undefined) return;
    if (!this.usageFinal) usage.partial = true;
    this.facts.usage = usage;
  }

  protected read(event: SseEvent): void {
    // Anthropic names every event; data.type repeats it (used when a proxy dropped the name).
    let name = event.event;
    if (name === "content_block_delta" || (name === "message" && event.data.includes('"content_block_delta"'))) {
      this.contentDeltas++;
      // The hot event of a stream: parsed only when someone wants its content.
      if (this.listener === undefined) return;
      const json = parseJson(event.data);
      const text = isRecord(json) && isRecord(json.delta) ? deltaText(json.delta) : "";
      if (text !== "") this.listener.content(text, this.facts.model);
      return;
    }
    if (name === "ping" || name === "content_block_start" || name === "content_block_stop") return;
    const json = parseJson(event.data);
    if (!isRecord(json)) return;
    if (name === "message") name = typeof json.type === "string" ? json.type : name;
    switch (name) {
      case "message_start": {
        const message = json.message;
        if (!isRecord(message)) return;
        const model = stringField(message, "model");
        if (model) this.facts.model = model;
        this.usage = mergeAnthropicUsage(this.usage, message.usage);
        return;
      }
      case "message_delta": {
        this.usage = mergeAnthropicUsage(this.usage, json.usage);
        if (isRecord(json.usage)) this.usageFinal = true;
        const delta = json.delta;
        const stopReason = isRecord(delta) ? stringField(delta, "stop_reason") : undefined;
        if (stopReason) this.facts.finishReason = stopReason;
        return;
      }
      case "error": {
        const error = json.error;
        if (!isRecord(error)) return;
        this.facts.errorMessage = stringField(error, "message") ?? "stream error";
        const type = stringField(error, "type");
        if (type) this.facts.errorType = type;
        return;
      }
      default:
      // message_stop and event types added later.
    }
  }
}

/** The text a content block delta adds: text, extended thinking, or a tool call's JSON. */
function deltaText(delta: Record<string, unknown>): string {
  switch (delta.type) {
    case "text_delta":
      return typeof delta.text === "string" ? delta.text : "";
    case "thinking_delta":
      return typeof delta.thinking === "string" ? delta.thinking : "";
    case "input_json_delta":
      return typeof delta.partial_json === "string" ? delta.partial_json : "";
    default:
      return "";
  }
}
