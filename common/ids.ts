import { randomFillSync } from "node:crypto";

// Crockford base32, as ULID uses: ids sort by creation time and read unambiguously.
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

const RANDOM_CHARS = 16;
// Random bytes are drawn from a pool, one randomFillSync per 256 ids: a randomBytes(16)
// per id profiled at ~10% of the proxy's CPU (ids are minted on its hot path).
const pool = Buffer.alloc(RANDOM_CHARS * 256);
let offset = pool.length;

/** A ULID: 48-bit millisecond time then 80 random bits, 26 characters. */
export function ulid(now: number = Date.now()): string {
  let time = "";
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  if (offset === pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  let rand = "";
  for (let i = 0; i < RANDOM_CHARS; i++) rand += ALPHABET[(pool[offset + i] ?? 0) % 32];
  offset += RANDOM_CHARS;
  return time + rand;
}

export const newEventId = (): string => `evt_${ulid()}`;
export const newRequestId = (): string => `req_${ulid()}`;
export const newDeliveryId = (): string => `dlv_${ulid()}`;

export const EVENT_ID_PATTERN = /^evt_[0-9A-HJKMNP-TV-Z]{26}$/;
