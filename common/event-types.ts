import { EventType } from "../gen/aigw/v1/events_pb.js";

/**
 * Webhook names of event types: the product page's ("event": "completion"), then the
 * operator events the control plane makes about delivery itself, named with a dot.
 */
export const EVENT_TYPE_NAMES = [
  "completion",
  "error",
  "streaming",
  "budget",
  "rate_limit",
  "endpoint.disabled",
  "endpoint.recovered",
  "delivery.exhausted",
] as const;
export type EventTypeName = (typeof EVENT_TYPE_NAMES)[number];

/** The product page's event types: what sidecars make, and the default events.subscribe (operator events are asked for by name). */
export const PRODUCT_EVENT_TYPE_NAMES = ["completion", "error", "streaming", "budget", "rate_limit"] as const;

/** Operator events: made by the control plane, never by a sidecar. */
export const OPERATOR_EVENT_TYPES: ReadonlySet<EventType> = new Set([
  EventType.ENDPOINT_DISABLED,
  EventType.ENDPOINT_RECOVERED,
  EventType.DELIVERY_EXHAUSTED,
]);

export function isOperatorEventType(type: EventType): boolean {
  return OPERATOR_EVENT_TYPES.has(type);
}

const BY_NAME: Record<EventTypeName, EventType> = {
  completion: EventType.COMPLETION,
  error: EventType.ERROR,
  streaming: EventType.STREAMING,
  budget: EventType.BUDGET,
  rate_limit: EventType.RATE_LIMIT,
  "endpoint.disabled": EventType.ENDPOINT_DISABLED,
  "endpoint.recovered": EventType.ENDPOINT_RECOVERED,
  "delivery.exhausted": EventType.DELIVERY_EXHAUSTED,
};

export function isEventTypeName(name: string): name is EventTypeName {
  return (EVENT_TYPE_NAMES as readonly string[]).includes(name);
}

export function eventTypeFromName(name: string): EventType | undefined {
  return isEventTypeName(name) ? BY_NAME[name] : undefined;
}

export function eventTypeName(type: EventType): EventTypeName | undefined {
  for (const name of EVENT_TYPE_NAMES) if (BY_NAME[name] === type) return name;
  return undefined;
}

/** The payload case of an Event ("completion", "rateLimit"...) as an EventType. */
export function eventTypeOfCase(c: string | undefined): EventType {
  switch (c) {
    case "completion":
      return EventType.COMPLETION;
    case "error":
      return EventType.ERROR;
    case "streaming":
      return EventType.STREAMING;
    case "budget":
      return EventType.BUDGET;
    case "rateLimit":
      return EventType.RATE_LIMIT;
    case "endpointDisabled":
      return EventType.ENDPOINT_DISABLED;
    case "endpointRecovered":
      return EventType.ENDPOINT_RECOVERED;
    case "deliveryExhausted":
      return EventType.DELIVERY_EXHAUSTED;
    default:
      return EventType.UNSPECIFIED;
  }
}

// In a module of their own (no generated code): `aigw sidecar` checks --app with them.
export { isTestEvent, TEST_EVENT_APP, TEST_EVENT_ORG } from "./test-events.js";
