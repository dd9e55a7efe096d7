/**
 * A duration as operators write it on a command line: "500ms", "10s", "2m", "1h", "7d",
 * or a bare number of seconds. Returns milliseconds; throws a message naming `what`.
 */
export function parseDuration(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new RangeError(`${what}: "${text}" is not a duration (for example 500ms, 10s, 2m, 1h, 7d)`);
  const value = Number(m[1]);
  const unit = m[2] ?? "s";
  const ms = value * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit as "ms" | "s" | "m" | "h" | "d"];
  if (!Number.isFinite(ms) || ms > 365 * 86_400_000) throw new RangeError(`${what}: "${text}" is too long`);
  return Math.round(ms);
}
