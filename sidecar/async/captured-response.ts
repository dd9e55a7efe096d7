import { EventEmitter } from "node:events";
import type { ClientResponse } from "../proxy/exchange.js";
import { StreamProgress } from "./stream-progress.js";

/** How the captured response ended. */
export type CaptureEnding = "complete" | "upstream_disconnected" | "aborted";

/**
 * The client side of an async call: the Exchange writes the provider's response here
 * instead of to a socket, and the sidecar keeps it for the status URL and the webhook.
 * Never applies backpressure (the upstream is read as fast as it sends, up to `maxBytes`
 * kept; past that the body is dropped and only the outcome is kept).
 */
export class CapturedResponse extends EventEmitter implements ClientResponse {
  statusCode = 0;
  /** The response head, [name, value, …] as the proxy would have sent it. */
  headers: readonly string[] = [];
  /** Lower-cased, "" when absent. */
  contentType = "";
  contentEncoding = "";
  headersSent = false;
  destroyed = false;
  writableFinished = false;
  readonly socket = null;
  /** The body exceeded maxBytes and was not kept. */
  truncated = false;
  private chunks: Buffer[] = [];
  private size = 0;
  private progress: StreamProgress | undefined;
  private ending: CaptureEnding | undefined;

  constructor(
    private readonly maxBytes: number,
    private readonly onEnd: (capture: CapturedResponse, ending: CaptureEnding) => void,
  ) {
    super();
  }

  /** Content deltas streamed so far; undefined unless the response is an event stream. */
  get streamedTokens(): number | undefined {
    return this.progress?.tokens;
  }

  get bytes(): number {
    return this.size;
  }

  /** The body as received (undecoded), empty when truncated. */
  body(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks, this.size)];
    return this.chunks[0]!;
  }

  writeHead(statusCode: number, textOrHeaders: string | string[], maybeHeaders?: string[]): this {
    const headers = typeof textOrHeaders === "string" ? (maybeHeaders ?? []) : textOrHeaders;
    this.statusCode = statusCode;
    this.headers = headers;
    this.headersSent = true;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!.toLowerCase();
      if (name === "content-type") this.contentType = headers[i + 1]!.toLowerCase();
      else if (name === "content-encoding") this.contentEncoding = headers[i + 1]!.trim().toLowerCase();
    }
    if (this.contentType.startsWith("text/event-stream") && isIdentity(this.contentEncoding)) {
      this.progress = new StreamProgress();
    }
    return this;
  }

  write(chunk: Buffer): boolean {
    if (this.ending !== undefined) return true;
    this.progress?.push(chunk);
    if (this.truncated) return true;
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      this.truncated = true;
      this.chunks = [];
      this.size = 0;
    } else {
      this.chunks.push(chunk);
    }
    return true;
  }

  end(chunk?: Buffer): this {
    if (chunk) this.write(chunk);
    this.writableFinished = true;
    this.finish("complete");
    return this;
  }

  flushHeaders(): void {}

  /** The exchange cut the response (upstream gone mid-body). */
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      this.finish("upstream_disconnected");
    }
    return this;
  }

  /** Gives up on the call (the sidecar is closing): the exchange sees its "client" leave and aborts upstream. */
  abort(): void {
    if (this.ending !== undefined) return;
    this.finish("aborted");
    this.destroyed = true;
    this.emit("close");
  }

  private finish(ending: CaptureEnding): void {
    if (this.ending !== undefined) return;
    this.ending = ending;
    this.onEnd(this, ending);
  }
}

function isIdentity(encoding: string): boolean {
  return encoding === "" || encoding === "identity";
}
