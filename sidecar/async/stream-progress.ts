import { type SseEvent, SseParser } from "../providers/sse.js";

/**
 * Counts the content deltas of a streamed response as it arrives: the "tokens so far" of
 * an async call's progress. A delta is close to a token for the providers aigw knows
 * (OpenAI chat and completions chunks, Responses API text deltas, Anthropic content
 * block deltas); the exact count comes with the usage at the end.
 */
export class StreamProgress {
  private readonly parser = new SseParser();
  private count = 0;

  get tokens(): number {
    return this.count;
  }

  push(chunk: Buffer): void {
    for (const event of this.parser.push(chunk)) this.count += contentDeltas(event);
  }
}

export function contentDeltas(event: SseEvent): number {
  const data = event.data;
  if (data === "[DONE]" || !(data.includes("delta") || data.includes('"text"'))) return 0;
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return 0;
  }
  if (!isRecord(json)) return 0;
  switch (json.type) {
    case "response.output_text.delta":
    case "response.refusal.delta":
      return nonEmpty(json.delta) ? 1 : 0;
    case "content_block_delta": {
      const delta = json.delta;
      if (!isRecord(delta)) return 0;
      return nonEmpty(delta.text) || nonEmpty(delta.thinking) || nonEmpty(delta.partial_json) ? 1 : 0;
    }
    default:
  }
  const choices = json.choices;
  if (!Array.isArray(choices)) return 0;
  let n = 0;
  for (const choice of choices) {
    if (!isRecord(choice)) continue;
    const delta = choice.delta;
    if (isRecord(delta)) {
      if (nonEmpty(delta.content) || nonEmpty(delta.refusal) || Array.isArray(delta.tool_calls)) n++;
    } else if (nonEmpty(choice.text)) {
      n++;
    }
  }
  return n;
}

function nonEmpty(value: unknown): boolean {
  return typeof value === "string" && value !== "";
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
