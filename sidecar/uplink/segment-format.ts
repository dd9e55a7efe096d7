import { crc32 } from "node:zlib";

/**
 * The spool's segment file format: an 8-byte magic (which also versions the format), then
 * records of `u32 length | u32 crc32(payload) | payload` (big-endian). The payload is an
 * EventBatch in protobuf binary. A crash can leave a torn record at the tail; the length
 * and CRC let recovery find the last whole record and ignore what follows.
 */
export const SEGMENT_MAGIC = Buffer.from("AIGWSP01", "latin1");
export const RECORD_HEADER_BYTES = 8;
/** A record claiming more than this is garbage, not a batch (a batch is capped far below). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

export function encodeRecord(payload: Uint8Array): Buffer {
  const record = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  record.writeUInt32BE(payload.length, 0);
  record.writeUInt32BE(crc32(payload), 4);
  record.set(payload, RECORD_HEADER_BYTES);
  return record;
}

export interface ParsedRecord {
  /** Offset of the record's header in the file. */
  offset: number;
  payload: Buffer;
}

export interface ParsedSegment {
  records: ParsedRecord[];
  /** Length of the valid prefix (magic + whole records); the file is cut back to this. */
  validBytes: number;
  /** Why parsing stopped before the end of the file, if it did. */
  problem?: string;
}

/** Reads every whole, checksummed record of a segment; never throws on garbage. */
export function parseSegment(file: Buffer): ParsedSegment {
  if (file.length < SEGMENT_MAGIC.length || !file.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) {
    return { records: [], validBytes: 0, problem: "not a spool segment (bad magic)" };
  }
  const records: ParsedRecord[] = [];
  let offset = SEGMENT_MAGIC.length;
  while (offset < file.length) {
    const remaining = file.length - offset;
    if (remaining < RECORD_HEADER_BYTES) {
      return { records, validBytes: offset, problem: `torn record header at byte ${offset}` };
    }
    const length = file.readUInt32BE(offset);
    const checksum = file.readUInt32BE(offset + 4);
    if (length > MAX_RECORD_BYTES) {
      return { records, validBytes: offset, problem: `implausible record length ${length} at byte ${offset}` };
    }
    if (remaining - RECORD_HEADER_BYTES < length) {
      return { records, validBytes: offset, problem: `torn record at byte ${offset} (${length} bytes declared)` };
    }
    const payload = file.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
    if (crc32(payload) !== checksum) {
      return { records, validBytes: offset, problem: `checksum mismatch in record at byte ${offset}` };
    }
    records.push({ offset, payload });
    offset += RECORD_HEADER_BYTES + length;
  }
  return { records, validBytes: offset };
}

const SEGMENT_NAME = /^segment-(\d{20})\.log$/;

/** Segment files are named by their first seq, zero-padded so names sort in seq order. */
export function segmentFileName(firstSeq: number): string {
  return `segment-${String(firstSeq).padStart(20, "0")}.log`;
}

export function segmentFirstSeq(fileName: string): number | undefined {
  const match = SEGMENT_NAME.exec(fileName);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/**
 * The seq of an encoded EventBatch (field 1, a varint, written first by every encoder of
 * this format), read without decoding its events. Undefined when the bytes do not start so.
 */
export function readBatchSeq(payload: Uint8Array): number | undefined {
  if (payload[0] !== 0x08) return undefined;
  let value = 0;
  let scale = 1;
  for (let i = 1; i < payload.length && i < 9; i++) {
    const byte = payload[i]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return value > 0 ? value : undefined;
    scale *= 128;
  }
  return undefined;
}
