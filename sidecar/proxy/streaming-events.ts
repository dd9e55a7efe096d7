import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type { StreamContentListener } from "../providers/adapter.js";
import { type EventOrigin, streamingEvent } from "./events.js";

/** A coalesced event is sent early once its content reaches this size: memory per request stays bounded. */
export const MAX_COALESCED_CHARS = 16 * 1024;

export interface StreamingEventsOptions {
  origin: EventOrigin;
  requestId: string;
  /** 0: one event per content chunk; more: a request's chunks merged over this window. */
  coalesceMs: number;
  publish: (event: Event) => void;
  /** The request's model, for a stream that never named one (read lazily: it parses the request body). */
  requestModel: () => string;
  maxCoalescedChars?: number;
}

/**
 * Turns one response's content chunks into `streaming` events. Fed by the response
 * observer as the copy is read (off the response path), so events leave while the stream
 * is still running. token_index numbers the provider's content chunks from 0; a coalesced
 * event carries the index of its first chunk. `finish` sends the last event, the only one
 * with a finish_reason (the provider's, or how the stream was interrupted); it carries any
 * content still waiting, or none.
 */
export class StreamingEvents implements StreamContentListener {
  private nextIndex = 0;
  private model: string | undefined;
  private pending: string | undefined;
  private pendingIndex = 0;
  private timer: NodeJS.Timeout | undefined;
  private finished = false;
  private readonly maxChars: number;

  constructor(private readonly options: StreamingEventsOptions) {
    this.maxChars = options.maxCoalescedChars ?? MAX_COALESCED_CHARS;
  }

  content(text: string, model: string | undefined): void {
    if (this.finished) return;
    if (model !== undefined) this.model = model;
    const index = this.nextIndex++;
    const windowMs = this.options.coalesceMs;
    if (windowMs <= 0) {
      this.send(index, text, undefined);
      return;
    }
    if (this.pending === undefined) {
      this.pending = text;
      this.pendingIndex = index;
      this.timer = setTimeout(this.flushPending, windowMs);
      // A pending window never keeps a process alive; `finish` sends what is left.
      this.timer.unref();
    } else {
      this.pending += text;
    }
    if (this.pending.length >= this.maxChars) this.flushPending();
  }

  /** Sends the last event. Later calls (and content) are ignored. */
  finish(finishReason: string, model: string | undefined): void {
    if (this.finished) return;
    this.finished = true;
    if (model !== undefined && this.model === undefined) this.model = model;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const pending = this.pending;
    this.pending = undefined;
    if (pending !== undefined) this.send(this.pendingIndex, pending, finishReason);
    else this.send(this.nextIndex, "", finishReason);
  }

  private readonly flushPending = (): void => {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const pending = this.pending;
    if (pending === undefined) return;
    this.pending = undefined;
    this.send(this.pendingIndex, pending, undefined);
  };

  private send(tokenIndex: number, content: string, finishReason: string | undefined): void {
    this.model ??= this.options.requestModel();
    this.options.publish(
      streamingEvent(this.options.origin, {
        requestId: this.options.requestId,
        tokenIndex,
        content,
        finishReason,
        model: this.model,
      }),
    );
  }
}
