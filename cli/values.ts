import type { EventType } from "../gen/aigw/v1/events_pb.js";
import { EVENT_TYPE_NAMES, eventTypeFromName } from "../common/event-types.js";
import { parseHostPort } from "../common/host-port.js";
import { ERROR_SEVERITIES } from "../control-plane/config/events.js";
import { UsageError } from "./command.js";

// Flag values shared by several verbs. Each error names the flag and shows what it got.

export function parseCount(flag: string, text: string, min: number, max?: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > (max ?? 0xffffffff)) {
    const range = max === undefined ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`${flag}: must be a whole number ${range}, got "${text}"`);
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

/** One of `choices`, as the API would demand: a typo is a usage error (exit 2), not a refusal. */
export function parseChoice<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  const choice = choices.find((c) => c === text);
  if (choice === undefined) throw new UsageError(`${flag}: must be ${orList(choices)}, got "${text}"`);
  return choice;
}

/** Error severities for --severity ("" clears the filter). */
export function parseSeverities(text: string, flag = "--severity"): string[] {
  return commaList(text).map((s) => parseChoice(flag, s, ERROR_SEVERITIES));
}

function orList(choices: readonly string[]): string {
  return choices.length < 2 ? (choices[0] ?? "") : `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}`;
}

/** A listen address (HOST:PORT, :PORT, [::1]:PORT), checked before anything starts. */
export function checkHostPort(text: string, flag: string): void {
  try {
    parseHostPort(text, flag);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
