/**
 * The one buffer the proxy's plain-TCP sockets read into, upstream (node:net's `onread`,
 * lean-upstream.ts) and client side alike (lean-server.ts), instead of a fresh 64 KiB
 * allocation per read that becomes an ArrayBuffer for the scavenger to sweep. Reads are
 * handled one at a time on the one thread and what was read is copied out at once (a pooled
 * copy of the few hundred bytes a request or response usually is), so one buffer serves every
 * socket of both sides.
 */
export const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** The bytes just read into READ_BUFFER, copied out (the buffer is reused by the next read). */
export function readBytes(bytes: number): Buffer {
  const chunk = Buffer.allocUnsafe(bytes);
  READ_BUFFER.copy(chunk, 0, 0, bytes);
  return chunk;
}
