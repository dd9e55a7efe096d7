/**
 * Server-sent events, read incrementally from a byte stream (WHATWG HTML "Server-sent
 * events", 9.2.6). Chunks may split anywhere: inside a line, inside a UTF-8 character,
 * between "\r" and "\n". Lines end with "\n", "\r\n" or "\r"; a blank line ends an event.
 */

const LF = 0x0a;
const CR = 0x0d;

/** An event block larger than this is not held whole (a provider's garbage must not grow memory). */
export const MAX_SSE_BLOCK_BYTES = 4 * 1024 * 1024;

/**
 * What a framer does with a block that outgrows its bound: "pass" hands its bytes on as they
 * come (the proxy's filter: the client must get every byte, never a stalled stream), "drop"
 * skips the whole block (the parser: an event that large carries nothing aigw reads).
 */
export type OversizedBlocks = "pass" | "drop";

/**
 * Splits a byte stream into raw event blocks, each ending with its blank line, bytes
 * untouched. The proxy uses it to drop a whole event without disturbing the framing of
 * the others; the parser below uses it to read events. At most `maxBlockBytes` of an
 * unfinished block are held.
 */
export class SseFramer {
  /** Bytes of the unfinished block, as received. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Inside a block past the bound: its bytes are passed or dropped as they come, not held. */
  private oversized = false;

  constructor(
    private readonly oversizedBlocks: OversizedBlocks = "drop",
    private readonly maxBlockBytes = MAX_SSE_BLOCK_BYTES,
  ) {}
  private lineHasContent = false;
  /** The last chunk ended with "\r": a "\n" opening the next one belongs to that line end. */
  private skipLf = false;
  /** ...and that "\r" ended a blank line, so the pending block is complete but for a possible "\n". */
  private blankCrPending = false;

  /** Bytes held of the unfinished block (never more than the bound). */
  get heldBytes(): number {
    return this.pendingBytes;
  }

  /** The complete blocks that this chunk finishes, in order. */
  push(chunk: Buffer): Buffer[] {
    const blocks: Buffer[] = [];
    if (chunk.length === 0) return blocks;
    let start = 0;
    let i = 0;
    if (this.skipLf) {
      this.skipLf = false;
      if (chunk[0] === LF) i = 1;
      if (this.blankCrPending) {
        // The block's blank line ended with that "\r"; its "\n" (if any) belongs to it.
        this.blankCrPending = false;
        this.complete(blocks, chunk, 0, i);
        start = i;
      }
    }
    while (i < chunk.length) {
      const b = chunk[i];
      if (b !== LF && b !== CR) {
        this.lineHasContent = true;
        i++;
        continue;
      }
      let end = i + 1;
      if (b === CR) {
        if (end === chunk.length) this.skipLf = true;
        else if (chunk[end] === LF) end++;
      }
      if (this.lineHasContent) {
        this.lineHasContent = false;
      } else if (this.skipLf) {
        // A blank line cut between "\r" and a possible "\n": the block ends with the next chunk.
        this.blankCrPending = true;
      } else {
        this.complete(blocks, chunk, start, end);
        start = end;
      }
      i = end;
    }
    if (start < chunk.length) this.hold(blocks, chunk.subarray(start));
    return blocks;
  }

  /** Bytes of an unfinished block (a stream that ended without its blank line). */
  flush(): Buffer | undefined {
    this.lineHasContent = false;
    this.skipLf = false;
    this.blankCrPending = false;
    this.oversized = false;
    if (this.pending.length === 0) return undefined;
    const rest = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    return rest;
  }

  /** A block ends at chunk[end]: whole (or the last piece of an oversized one when passing). */
  private complete(blocks: Buffer[], chunk: Buffer, start: number, end: number): void {
    const part = chunk.subarray(start, end);
    if (this.oversized) {
      this.oversized = false;
      if (this.oversizedBlocks === "pass" && part.length > 0) blocks.push(part);
      return;
    }
    if (this.pending.length === 0) {
      blocks.push(part);
      return;
    }
    this.pending.push(part);
    const block = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    blocks.push(block);
  }

  /** The unfinished tail of a chunk: held, unless the block has outgrown the bound. */
  private hold(blocks: Buffer[], rest: Buffer): void {
    if (this.oversized) {
      if (this.oversizedBlocks === "pass") blocks.push(rest);
      return;
    }
    this.pending.push(rest);
    this.pendingBytes += rest.length;
    if (this.pendingBytes <= this.maxBlockBytes) return;
    this.oversized = true;
    const held = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (this.oversizedBlocks === "pass") blocks.push(held.length === 1 ? held[0]! : Buffer.concat(held));
  }
}

export interface SseEvent {
  /** The "event:" field; "message" when absent. */
  event: string;
  /** The "data:" lines joined with "\n". */
  data: string;
  id?: string;
}

/**
 * The fields of one raw block. A block with no data lines (comments only, a lone blank
 * line) is not an event, as the spec says, and yields undefined.
 */
export function parseSseBlock(block: Buffer | string): SseEvent | undefined {
  let text = typeof block === "string" ? block : block.toString("utf8");
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let event = "message";
  let id: string | undefined;
  let data: string | undefined;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "" || line.charCodeAt(0) === 0x3a /* ":" comment */) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    switch (field) {
      case "data":
        data = data === undefined ? value : `${data}\n${value}`;
        break;
      case "event":
        event = value;
        break;
      case "id":
        if (!value.includes("\0")) id = value;
        break;
      default:
      // "retry" and unknown fields carry nothing aigw reads.
    }
  }
  if (data === undefined) return undefined;
  return id === undefined ? { event, data } : { event, data, id };
}

/** An incremental parser: bytes in, events out, never throws on garbage; events past the bound are skipped. */
export class SseParser {
  private readonly framer: SseFramer;

  constructor(maxBlockBytes = MAX_SSE_BLOCK_BYTES) {
    this.framer = new SseFramer("drop", maxBlockBytes);
  }

  push(chunk: Buffer): SseEvent[] {
    const events: SseEvent[] = [];
    for (const block of this.framer.push(chunk)) {
      const event = parseSseBlock(block);
      if (event) events.push(event);
    }
    return events;
  }
}
