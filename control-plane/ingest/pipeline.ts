import { eventTypeName, eventTypeOfCase, isOperatorEventType, isTestEvent } from "../../common/event-types.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { EVENT_ID_PATTERN } from "../../common/ids.js";
import type { Logger } from "../../common/logger.js";
import type { TrafficMetrics } from "../http/labelled-metrics.js";
import type { BudgetLedger } from "../budgets/budget-ledger.js";
import type { PriceBook } from "../budgets/price-book.js";
import type { EventRouter } from "../routing/event-router.js";
import type { OneOffEndpoints } from "../routing/one-off.js";
import { type IngestResult, MAX_INT_COLUMN, type Store, type StoredEvent } from "../store/store.js";

/**
 * The ingest path in one place, read top to bottom: validate → price → route (one-off
 * URLs included) → store (with the spend it adds, in one transaction, group-committed with
 * other batches) → observe budgets → publish to the live feed → wake the delivery lanes
 * the new deliveries went to. Sidecar batches (IngestService) and test events (the Admin
 * API's SendTestEvent) both come through here.
 */

export interface IngestMetrics {
  batches: number;
  eventsStored: number;
  eventsDuplicate: number;
  eventsRejected: number;
  connectedSidecars: number;
}

export function newIngestMetrics(): IngestMetrics {
  return { batches: 0, eventsStored: 0, eventsDuplicate: 0, eventsRejected: 0, connectedSidecars: 0 };
}

export interface IngestPipelineDeps {
  store: Store;
  prices: PriceBook;
  ledger: BudgetLedger;
  router: EventRouter;
  oneOff: OneOffEndpoints;
  /**
   * Publishes stored events to the live feed; absent when the store's own feed is read
   * back instead (replicas: cluster/feed-tail.ts), so every replica's events arrive in order.
   */
  publish: ((events: StoredEvent[]) => void) | undefined;
  /** Wakes the delivery lanes of these endpoints. */
  wake(endpoints: readonly string[]): void;
  metrics: IngestMetrics;
  /** Events per type, tokens and cost per model and org (for /metrics). */
  traffic?: TrafficMetrics;
  logger: Logger;
}

/** Where a batch came from, for the log line of an event dropped as invalid. */
export interface IngestSource {
  sidecar?: string;
  seq?: bigint;
}

export class IngestPipeline {
  constructor(private readonly deps: IngestPipelineDeps) {}

  /**
   * A sidecar's batch: resolves once the valid events are durable (the ack may go out).
   * Events that cannot be valid are dropped with a log line and a metric rather than
   * failing the batch: a poison event must never make a sidecar re-send a batch forever.
   */
  async ingest(events: readonly Event[], source: IngestSource = {}): Promise<IngestResult> {
    const valid = this.validate(events, source, true);
    const { router, oneOff, ledger } = this.deps;
    return this.run(valid, await oneOff.routeFor(valid, router), ledger.accounting(costOf));
  }

  /** Test events for the given endpoints: priced like any event, counted in nobody's spend. */
  ingestTo(events: readonly Event[], endpoints: readonly string[]): Promise<IngestResult> {
    return this.run(this.validate(events, {}, false), () => endpoints, undefined);
  }

  private validate(events: readonly Event[], source: IngestSource, fromSidecar: boolean): Event[] {
    const valid: Event[] = [];
    events.forEach((event, index) => {
      const problem = invalidEvent(event) ?? (fromSidecar ? operatorEventProblem(event) : undefined);
      if (problem === undefined) {
        valid.push(event);
        return;
      }
      this.deps.metrics.eventsRejected++;
      this.deps.logger.warn(
        { sidecar: source.sidecar, seq: source.seq, index, eventId: event.id.slice(0, 40), problem },
        "dropped an invalid event",
      );
    });
    return valid;
  }

  private async run(
    events: Event[],
    route: (event: Event) => readonly string[],
    accounting: ReturnType<BudgetLedger["accounting"]> | undefined,
  ): Promise<IngestResult> {
    if (events.length === 0) return { stored: [], duplicates: 0, deliveries: 0, endpoints: [] };
    const { store, prices, ledger, publish, metrics } = this.deps;
    for (const event of events) prices.priceEvent(event);
    // The lanes wake as soon as the deliveries are committed, before the flush that makes
    // them durable (SQLite), which is most of an ingest's time.
    const result = await store.ingest(events, route, accounting, (endpoints) => {
      if (endpoints.length > 0) this.deps.wake(endpoints);
    });
    metrics.eventsStored += result.stored.length;
    if (this.deps.traffic) countTraffic(this.deps.traffic, result);
    metrics.eventsDuplicate += result.duplicates;
    ledger.observe(result);
    publish?.(storedAndGenerated(result));
    return result;
  }
}

function invalidEvent(e: Event): string | undefined {
  if (!EVENT_ID_PATTERN.test(e.id))
    return `id: "${e.id.slice(0, 40)}" is not an event id (evt_ + 26 base32 characters)`;
  if (e.payload.case === undefined) {
    const unknown = e.$unknown?.map((f) => f.no) ?? [];
    return unknown.length > 0
      ? `payload: an event type this control plane does not know (field ${unknown.join(", ")}; a newer sidecar?)`
      : "payload: missing";
  }
  if (e.time === undefined) return "time: missing";
  // The protobuf Timestamp range (years 1 to 9999): beyond it a time is no time, and its
  // milliseconds would not fit the store's 64-bit column.
  if (e.time.seconds < MIN_TIMESTAMP_SECONDS || e.time.seconds > MAX_TIMESTAMP_SECONDS)
    return `time: ${e.time.seconds} s is outside the years 1 to 9999`;
  if (e.time.nanos < 0 || e.time.nanos > 999_999_999) return `time.nanos: ${e.time.nanos} is not 0 to 999999999`;
  if (e.payload.case === "streaming" && e.payload.value.tokenIndex > MAX_TOKEN_INDEX)
    return `payload.streaming.token_index: ${e.payload.value.tokenIndex} is over ${MAX_TOKEN_INDEX}`;
  // Stored as text columns and keys (PostgreSQL's text refuses NUL): no such name is real.
  const value = e.payload.value as { requestId?: unknown; model?: unknown };
  for (const [field, text] of [
    ["org_id", e.orgId],
    ["app", e.app],
    [`payload.${e.payload.case}.request_id`, value.requestId],
    [`payload.${e.payload.case}.model`, value.model],
  ] as const) {
    if (typeof text === "string" && text.includes("\u0000")) return `${field}: contains a NUL character`;
  }
  return undefined;
}

/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the protobuf Timestamp's range. */
const MIN_TIMESTAMP_SECONDS = -62_135_596_800n;
const MAX_TIMESTAMP_SECONDS = 253_402_300_799n;
/** A stream's token index is stored in an integer column. */
const MAX_TOKEN_INDEX = MAX_INT_COLUMN;

/** Operator events are the control plane's own: a sidecar cannot send one (nor forge one). */
function operatorEventProblem(e: Event): string | undefined {
  const type = eventTypeOfCase(e.payload.case);
  return isOperatorEventType(type)
    ? `payload: ${eventTypeName(type)} is an operator event, made by the control plane only`
    : undefined;
}

function costOf(event: Event): number {
  return event.payload.case === "completion" ? event.payload.value.costUsd : 0;
}

/** What an ingest stored and generated, in seq order: what the live feed gets. */
export function storedAndGenerated(result: IngestResult): StoredEvent[] {
  if (!result.generated?.length) return result.stored;
  return [...result.stored, ...result.generated].sort((a, b) => a.seq - b.seq);
}

/** Events per type, tokens and cost per model and org, of what was stored (budget events included). */
function countTraffic(traffic: TrafficMetrics, result: IngestResult): void {
  for (const { event } of storedAndGenerated(result)) {
    traffic.events.add([eventTypeName(eventTypeOfCase(event.payload.case)) ?? "unknown"]);
    if (event.payload.case === "completion" && !isTestEvent(event)) {
      const c = event.payload.value;
      traffic.tokens.add([c.model || "(unknown)", event.orgId], c.tokensUsed);
      traffic.cost.add([c.model || "(unknown)", event.orgId], c.costUsd);
    }
  }
}
