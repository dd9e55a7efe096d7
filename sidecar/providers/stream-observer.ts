import type { ResponseFacts, ResponseObserver, StreamContentListener } from "./adapter.js";
import { type SseEvent, SseParser } from "./sse.js";

/**
 * What every provider's event-stream observer shares: SSE parsing of the copy, the facts
 * found so far, the count of content deltas (the estimate for a cut stream's usage), and
 * tolerance of garbage. Subclasses read one event at a time.
 */
export abstract class SseStreamObserver implements ResponseObserver {
  private readonly parser = new SseParser();
  protected readonly facts: ResponseFacts = {};
  protected contentDeltas = 0;

  constructor(protected readonly listener?: StreamContentListener) {}

  push(chunk: Buffer): void {
    try {
      for (const event of this.parser.push(chunk)) this.read(event);
    } catch {
      // Garbage from the upstream is the client's business; aigw only loses the facts.
    }
  }

  finish(): ResponseFacts {
    this.complete();
    if (this.contentDeltas > 0) this.facts.contentDeltas = this.contentDeltas;
    return this.facts;
  }

  /** Fills in facts gathered across events (e.g. merged usage) before they are returned. */
  protected complete(): void {}

  protected abstract read(event: SseEvent): void;
}
