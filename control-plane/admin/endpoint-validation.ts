import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { ENDPOINT_NAME } from "../config/checks.js";

/**
 * Checks of what the Admin API accepts for an endpoint. Pure functions: each returns the
 * problem as text (without the field path, which the caller knows) or undefined when the
 * value is fine, so the RPC layer decides how to report it.
 */

// URLs and secrets: control-plane/security/ (the same rules as the config file's).

export function checkEndpointName(name: string): string | undefined {
  if (name === "") return "required";
  if (!ENDPOINT_NAME.test(name)) return "must match [a-z0-9_-]{1,64}";
  return undefined;
}

const KNOWN_EVENT_TYPES = new Set<number>([
  EventType.COMPLETION,
  EventType.ERROR,
  EventType.STREAMING,
  EventType.BUDGET,
  EventType.RATE_LIMIT,
]);

/** Index of the first event type that is not a known one (UNSPECIFIED included), or -1. */
export function firstUnknownEventType(types: readonly EventType[]): number {
  return types.findIndex((t) => !KNOWN_EVENT_TYPES.has(t));
}
