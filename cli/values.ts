import type { EventType } from "../gen/aigw/v1/events_pb.js";
import { EVENT_TYPE_NAMES, eventTypeFromName } from "../common/event-types.js";
import { UsageError } from "./command.js";

// Flag values shared by several verbs. Each error names the flag and shows what it got.

export function parseCount(flag: string, text: string, min: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > 0xffffffff) {
    throw new UsageError(`${flag}: must be a whole number ≥ ${min}, got "${text}"`);
  }
  return n;
}

export function commaList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export function parseEventTypes(list: string, flag = "--events"): EventType[] {
  return commaList(list).map((name) => {
    const type = eventTypeFromName(name);
    if (type === undefined) {
      throw new UsageError(`${flag}: unknown event type "${name}" (one of ${EVENT_TYPE_NAMES.join(", ")})`);
    }
    return type;
  });
}

export function parseUsd(flag: string, text: string): number {
  if (!/^\d+(\.\d+)?$/.test(text))
    throw new UsageError(`${flag}: must be an amount in USD such as 100 or 0.15, got "${text}"`);
  return Number(text);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "15m", "2h", "1d", "1h30m" → milliseconds; undefined when `text` is not a duration. */
export function parseDuration(text: string): number | undefined {
  if (!/^(\d+(ms|s|m|h|d))+$/.test(text)) return undefined;
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(n) * (UNIT_MS[unit ?? ""] ?? 0);
  return Number.isSafeInteger(ms) ? ms : undefined;
}
