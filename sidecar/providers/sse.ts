/**
 * Server-sent events, read incrementally from a byte stream (WHATWG HTML "Server-sent
 * events", 9.2.6). Chunks may split anywhere: inside a line, inside a UTF-8 character,
 * between "\r" and "\n". Lines end with "\n", "\r\n" or "\r"; a blank line ends an event.
 */

const LF = 0x0a;
const CR = 0x0d;

/**
 * Splits a byte stream into raw event blocks, each ending with its blank line, bytes
 * untouched. The proxy uses it to drop a whole event without disturbing the framing of
 * the others; the parser below uses it to read events.
 */
export class SseFramer {
  /** Bytes of the unfinished block, as received. */
  private pending: Buffer[] = [];
  private lineHasContent = false;
  /** The last chunk ended with "\r": a "\n" opening the next one belongs to that line end. */
  private skipLf = false;
  /** ...and that "\r" ended a blank line, so the pending block is complete but for a possible "\n". */
  private blankCrPending = false;

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
        blocks.push(this.take(chunk, 0, i));
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
        blocks.push(this.take(chunk, start, end));
        start = end;
      }
      i = end;
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
    return blocks;
  }

  /** Bytes of an unfinished block (a stream that ended without its blank line). */
  flush(): Buffer | undefined {
    if (this.pending.length === 0) return undefined;
    const rest = Buffer.concat(this.pending);
    this.pending = [];
    this.lineHasContent = false;
    this.skipLf = false;
    this.blankCrPending = false;
    return rest;
  }

  private take(chunk: Buffer, start: number, end: number): Buffer {
    const part = chunk.subarray(start, end);
    if (this.pending.length === 0) return part;
    this.pending.push(part);
    const block = Buffer.concat(this.pending);
    this.pending = [];
    return block;
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

/** An incremental parser: bytes in, events out, never throws on garbage. */
export class SseParser {
  private readonly framer = new SseFramer();

  push(chunk: Buffer): SseEvent[] {
    const events: SseEvent[] = [];
    for (const block of this.framer.push(chunk)) {
      const event = parseSseBlock(block);
      if (event) events.push(event);
    }
    return events;
  }
}
