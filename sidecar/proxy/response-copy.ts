import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import type { ResponseFacts, ResponseObserver } from "../providers/adapter.js";

/**
 * The sidecar's copy of a response body. On the response path `push` only keeps a
 * reference to the chunk the client was just sent; decoding and parsing happen later, in
 * a setImmediate batch (streams, so memory stays bounded) or after the response ended.
 */
export class ResponseCopy {
  private queue: Buffer[] = [];
  private scheduled = false;
  private readonly decoder: Transform | undefined;
  private decoderFailed = false;
  private finished: Promise<ResponseFacts> | undefined;
  private facts: ResponseFacts | undefined;
  /** False for a content-encoding aigw cannot decode: the copy is then dropped. */
  private readonly readable: boolean;

  constructor(
    private readonly observer: ResponseObserver,
    contentEncoding: string,
    /** Parse as bytes arrive (streams) rather than at the end. */
    private readonly incremental: boolean,
  ) {
    this.decoder = decoderFor(contentEncoding);
    this.readable = contentEncoding === "" || contentEncoding === "identity" || this.decoder !== undefined;
    if (this.decoder) {
      this.decoder.on("data", (chunk: Buffer) => this.observer.push(chunk));
      this.decoder.on("error", () => {
        // A corrupt or truncated compressed body: the client has its bytes, aigw loses the facts.
        this.decoderFailed = true;
      });
    }
  }

  push(chunk: Buffer): void {
    if (!this.readable) return;
    this.queue.push(chunk);
    if (this.incremental && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.drain);
    }
  }

  /** True when `finishNow` can answer: nothing to decompress, or `finish` has resolved. */
  get ready(): boolean {
    return this.decoder === undefined || this.facts !== undefined;
  }

  /** Reads what is left and returns the observer's facts; the same promise on every call. Never rejects. */
  finish(): Promise<ResponseFacts> {
    this.finished ??= this.readRest();
    return this.finished;
  }

  /**
   * The facts at once, when `ready` (no promise, no microtask): read now from a copy with
   * nothing to decompress, or those `finish` resolved with. The same object on every call.
   */
  finishNow(): ResponseFacts {
    if (this.facts === undefined) {
      if (this.decoder !== undefined) throw new Error("response copy: finishNow() before finish() resolved");
      this.drain();
      this.facts = this.observer.finish();
    }
    return this.facts;
  }

  private async readRest(): Promise<ResponseFacts> {
    this.drain();
    const decoder = this.decoder;
    if (decoder && !this.decoderFailed) {
      await new Promise<void>((resolve) => {
        decoder.once("end", resolve);
        decoder.once("error", () => resolve());
        decoder.end();
      });
    }
    this.facts ??= this.observer.finish();
    return this.facts;
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    const queue = this.queue;
    if (queue.length === 0) return;
    this.queue = [];
    for (const chunk of queue) {
      if (this.decoder) {
        if (!this.decoderFailed) this.decoder.write(chunk);
      } else {
        this.observer.push(chunk);
      }
    }
  };
}

function decoderFor(contentEncoding: string): Transform | undefined {
  switch (contentEncoding) {
    case "gzip":
    case "x-gzip":
      return createGunzip();
    case "deflate":
      return createInflate();
    case "br":
      return createBrotliDecompress();
    default:
      return undefined;
  }
}
