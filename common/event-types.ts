import { EventType } from "../gen/aigw/v1/events_pb.js";

/** Webhook names of event types, as in the product page ("event": "completion"). */
export const EVENT_TYPE_NAMES = ["completion", "error", "streaming", "budget", "rate_limit"] as const;
export type EventTypeName = (typeof EVENT_TYPE_NAMES)[number];

const BY_NAME: Record<EventTypeName, EventType> = {
  completion: EventType.COMPLETION,
  error: EventType.ERROR,
  streaming: EventType.STREAMING,
  budget: EventType.BUDGET,
  rate_limit: EventType.RATE_LIMIT,
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
    default:
      return EventType.UNSPECIFIED;
  }
}
