import { randomFillSync } from "node:crypto";

// Crockford base32, as ULID uses: ids sort by creation time and read unambiguously.
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ALPHABET_CODES = Buffer.from(ALPHABET, "latin1");

const TIME_CHARS = 10;
const RANDOM_CHARS = 16;
// Random bytes are drawn from a pool, one randomFillSync per 256 ids: a randomBytes(16)
// per id profiled at ~10% of the proxy's CPU (ids are minted on its hot path).
const pool = Buffer.alloc(RANDOM_CHARS * 256);
let offset = pool.length;

// An id is written into this buffer, prefix included, and read out as one flat string (a
// string built a character at a time is a rope that V8 flattens again when it is written).
const PREFIX_MAX = 8;
const scratch = Buffer.alloc(PREFIX_MAX + TIME_CHARS + RANDOM_CHARS);
// The time part changes once a millisecond: kept for the ids minted within one.
let encodedMs = -1;
const timeCodes = Buffer.alloc(TIME_CHARS);

function encodeTime(now: number): void {
  let t = Math.floor(now);
  for (let i = TIME_CHARS - 1; i >= 0; i--) {
    timeCodes[i] = ALPHABET_CODES[t % 32]!;
    t = Math.floor(t / 32);
  }
  encodedMs = now;
}

/** `prefix` (ASCII, at most 8 characters) and a ULID. */
function prefixedUlid(prefix: string, now: number): string {
  if (now !== encodedMs) encodeTime(now);
  if (offset === pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const start = PREFIX_MAX - prefix.length;
  scratch.write(prefix, start, "latin1");
  timeCodes.copy(scratch, PREFIX_MAX);
  const at = PREFIX_MAX + TIME_CHARS;
  for (let i = 0; i < RANDOM_CHARS; i++) scratch[at + i] = ALPHABET_CODES[pool[offset + i]! & 31]!;
  offset += RANDOM_CHARS;
  return scratch.toString("latin1", start, scratch.length);
}

/** A ULID: 48-bit millisecond time then 80 random bits, 26 characters. */
export function ulid(now: number = Date.now()): string {
  return prefixedUlid("", now);
}

export const newEventId = (now: number = Date.now()): string => prefixedUlid("evt_", now);
export const newRequestId = (now: number = Date.now()): string => prefixedUlid("req_", now);
export const newDeliveryId = (now: number = Date.now()): string => prefixedUlid("dlv_", now);

export const EVENT_ID_PATTERN = /^evt_[0-9A-HJKMNP-TV-Z]{26}$/;
