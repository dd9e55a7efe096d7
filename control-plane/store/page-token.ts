/**
 * Opaque page tokens for keyset pagination: the position after which the next page
 * starts, versioned so the encoding can change without breaking stored links.
 */
const PREFIX = "p1:";

/** A page of a list RPC: page_size 0 asks for DEFAULT_PAGE_SIZE, more than MAX_PAGE_SIZE is refused. */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

export function encodePageToken(position: number): string {
  return Buffer.from(PREFIX + position, "utf8").toString("base64url");
}

/** Throws RangeError naming the token when it was not made by encodePageToken. */
export function decodePageToken(token: string): number {
  const text = Buffer.from(token, "base64url").toString("utf8");
  const position = text.startsWith(PREFIX) ? Number(text.slice(PREFIX.length)) : Number.NaN;
  if (!Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`invalid page token "${token}": use the nextPageToken of a previous page`);
  }
  return position;
}
