import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Event, EventSchema, type EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeName, isOperatorEventType } from "../../common/event-types.js";
import { newEventId } from "../../common/ids.js";
import { nameInOrg } from "./endpoints.js";
import type { StoredEvent } from "./events.js";

/**
 * Operator events: what happens to delivery itself, made by the store in the same
 * transaction as the change they report, so each fires exactly once however many replicas
 * share the store (the change is a row that moves from one state to the next once):
 *
 * - `endpoint.disabled` when an attempt's 410 or a run of failures disables an enabled
 *   endpoint (an operator's own disable sends none);
 * - `endpoint.recovered` when a circuit recorded open is recorded closed;
 * - `delivery.exhausted` when a delivery is dead-lettered and no failover copy was made.
 *
 * They are stored like sidecars' events (the live feed shows them, subscribed or not) and
 * routed with the function the control plane gives (Store.routeOperatorEvents, which turns
 * them on: events.subscribe and each endpoint's event types), never to the endpoint they are about, and never about a
 * delivery of an operator event (a receiver of operator events that is down would
 * otherwise feed itself a new event per dead letter).
 */
export type OperatorRoute = (event: Event) => readonly string[];

/** What a write that made operator events hands back: feed them to the live feed, wake their lanes. */
export interface OperatorEffects {
  generated: StoredEvent[];
  /** Endpoints that got deliveries of them. */
  endpoints: string[];
}

export const NO_EFFECTS: OperatorEffects = { generated: [], endpoints: [] };

/** An automatic disable after a run of failed attempts (delivery.auto_disable_after_ms). */
export interface AutoDisable {
  /** For people: "every attempt failed for 24h (57 attempts)". */
  detail: string;
  statusCode: number;
  lastError: string;
  failingSince: number;
  failedAttempts: number;
  /**
   * When the caller's run of failures started (its clock, as given to startFailingRun).
   * Given, the endpoint is disabled only while the store's run is that run or an older one:
   * a run another process ended (a success there) or ended and began again is not the
   * caller's to act on. Absent: disabled whatever the store's run.
   */
  runStartedAt?: number;
}

/** autoDisableEndpoint's answer. */
export interface AutoDisableEffects extends OperatorEffects {
  /**
   * Set when runStartedAt was given and the store's run is not the caller's (nothing was
   * changed): when the store's run started, 0 when there is none.
   */
  runInStore?: number;
}

/**
 * Whether the store's run of failures (its failing_since; 0: none) is still the run a
 * caller that started one at `runStartedAt` may disable the endpoint for: the same run, or
 * an older one it joined. A run ended elsewhere, or begun again after that, is not.
 */
export function runStillGoing(runInStore: number, runStartedAt: number): boolean {
  return runInStore !== 0 && runInStore <= runStartedAt;
}

/** The endpoint's disabled_reason after a 410 or a run of failures. */
export const GONE_REASON = "receiver answered 410 Gone";

/**
 * The stored key of the endpoint an operator event made here is about. The payload names it
 * as its org does (nameInOrg: the event goes to that org's endpoints too, which must not
 * learn that another org holds the name); routing needs the key.
 */
const subjectKeys = new WeakMap<Event, string>();

function operatorEvent(orgId: string, now: number, payload: Event["payload"], subjectKey: string): Event {
  const event = create(EventSchema, { id: newEventId(), orgId, time: timestampFromMs(now), payload });
  subjectKeys.set(event, subjectKey);
  return event;
}

export function endpointDisabledEvent(
  endpoint: { name: string; orgId: string },
  reason: "gone" | "failing",
  detail: string,
  last: { statusCode: number; lastError: string },
  pending: number,
  now: number,
  failing?: { since: number; attempts: number },
): Event {
  return operatorEvent(
    endpoint.orgId,
    now,
    {
      case: "endpointDisabled",
      value: {
        $typeName: "aigw.v1.EndpointDisabledEvent",
        endpoint: nameInOrg(endpoint.name, endpoint.orgId),
        reason,
        detail,
        statusCode: last.statusCode,
        lastError: last.lastError,
        ...(failing ? { failingSince: timestampFromMs(failing.since) } : {}),
        failedAttempts: failing?.attempts ?? 0,
        pendingDeliveries: pending,
      },
    },
    endpoint.name,
  );
}

export function endpointRecoveredEvent(
  endpoint: { name: string; orgId: string },
  openedAt: number,
  now: number,
): Event {
  return operatorEvent(
    endpoint.orgId,
    now,
    {
      case: "endpointRecovered",
      value: {
        $typeName: "aigw.v1.EndpointRecoveredEvent",
        endpoint: nameInOrg(endpoint.name, endpoint.orgId),
        ...(openedAt > 0 ? { openedTime: timestampFromMs(openedAt) } : {}),
        downMs: BigInt(openedAt > 0 ? Math.max(0, Math.round(now - openedAt)) : 0),
      },
    },
    endpoint.name,
  );
}

export interface ExhaustedDelivery {
  id: string;
  endpoint: string;
  eventId: string;
  eventType: EventType;
  attemptCount: number;
  lastError: string;
  originDeliveryId: string;
}

/** Undefined for a delivery of an operator event: those never make another. */
export function deliveryExhaustedEvent(d: ExhaustedDelivery, orgId: string, now: number): Event | undefined {
  if (isOperatorEventType(d.eventType)) return undefined;
  return operatorEvent(
    orgId,
    now,
    {
      case: "deliveryExhausted",
      value: {
        $typeName: "aigw.v1.DeliveryExhaustedEvent",
        deliveryId: d.id,
        endpoint: nameInOrg(d.endpoint, orgId),
        eventId: d.eventId,
        eventType: eventTypeName(d.eventType) ?? "unknown",
        attempts: d.attemptCount,
        lastError: d.lastError,
        originDeliveryId: d.originDeliveryId,
      },
    },
    d.endpoint,
  );
}

/** The endpoint (its key) an operator event is about: it never receives that event. */
export function subjectEndpoint(event: Event): string {
  const key = subjectKeys.get(event);
  if (key !== undefined) return key;
  const p = event.payload;
  switch (p.case) {
    case "endpointDisabled":
    case "endpointRecovered":
    case "deliveryExhausted":
      return p.value.endpoint;
    default:
      return "";
  }
}

/** The route of an operator event: `route`'s endpoints, less the one it is about. */
export function operatorTargets(route: OperatorRoute | undefined, event: Event): string[] {
  if (!route) return [];
  const subject = subjectEndpoint(event);
  return [...new Set(route(event))].filter((name) => name !== subject);
}

/** The describing text of a run of failures that disables an endpoint. */
export function failingDetail(forMs: number, attempts: number): string {
  return `every attempt failed for ${durationText(forMs)} (${attempts} attempts)`;
}

function durationText(ms: number): string {
  if (ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1_000) return `${Math.round(ms / 1_000)}s`;
  return `${ms}ms`;
}
