import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeOfCase } from "../../common/event-types.js";
import type { SpendAccounting, SpendTotal } from "./budgets.js";

/** Events: stored once by id, with their deliveries and the spend they add, in one transaction. */
export interface EventStore {
  /**
   * Stores the events that are new (by id) and, in the same transaction, one pending
   * delivery per endpoint name that `route` returns for each new event. Returns only
   * when everything is durable; duplicates (an id already stored) are skipped, and
   * get no new deliveries.
   *
   * With `accounting`, the same transaction also adds each new event's cost to its org's
   * spend per (limit type, period), records every budget threshold reached for the first
   * time in that period, and stores a budget event for it (routed with `route`), returned
   * in `generated`. A duplicate is never counted twice; see control-plane/budgets.
   *
   * `onCommitted` gets the endpoints of the new deliveries as soon as the transaction has
   * committed, which may be before it is durable (SQLite: before the WAL's flush): the
   * deliveries can be claimed then, since a crash before the flush loses nothing a sidecar
   * was told is stored (its events come again and go out again: at-least-once). It is
   * called by every store when the transaction holding the batch commits, before ingest
   * resolves; an exception from it is ignored (the events are stored either way).
   */
  ingest(
    events: readonly Event[],
    route: (event: Event) => readonly string[],
    accounting?: SpendAccounting,
    onCommitted?: (endpoints: readonly string[]) => void,
  ): Promise<IngestResult>;
  /**
   * Stored events after `after` (a cursor; undefined: from the first), at most `limit`, in
   * the feed's order: resumable from any event's cursor, and never skipping an event that
   * commits after one with a later cursor was read (a concern with several writers).
   */
  readFeed(after: string | undefined, limit: number): Promise<StoredEvent[]>;
  /** The cursor of the live edge: readFeed(head) returns only events stored after this call. */
  feedHead(): Promise<string>;
  /**
   * The cursor to readFeed after for the events stored at or after `timeMs` (their
   * ingested_at): just before the first of them, or feedHead() when there is none.
   */
  feedCursorSince(timeMs: number): Promise<string>;
  /** Orders two cursors of this store (negative: a before b). Throws a TypeError for a malformed one. */
  compareCursors(a: string, b: string): number;
  /** Events ingested since `sinceMs` (all when absent), of one org when `orgId` is given. */
  countEvents(sinceMs?: number, orgId?: string): Promise<number>;
}

export interface StoredEvent {
  seq: number;
  event: Event;
  ingestedAt: number;
  /** Where the event is in the live feed (pass back to readFeed to resume after it). */
  cursor: string;
}

export interface IngestResult {
  stored: StoredEvent[];
  duplicates: number;
  /** Deliveries created, those of `generated` events included. */
  deliveries: number;
  /** Endpoints those deliveries went to (each once): the lanes to wake. */
  endpoints: string[];
  /** Events the store created in the same transaction (budget events), oldest first. */
  generated?: StoredEvent[];
  /** Spend after this batch of every (org, limit type, period) it changed. */
  spend?: SpendTotal[];
}

/**
 * The parts of an Event a store keeps in columns beside the protobuf body, so it can
 * filter, order and purge without decoding. Shared by every store implementation.
 */
export interface EventColumns {
  type: EventType;
  orgId: string;
  app: string;
  requestId: string;
  /** request_id for streaming events: their deliveries go out in token_index order. */
  orderKey: string;
  orderIndex: number;
  timeMs: number;
}

export function eventColumns(event: Event): EventColumns {
  const payload = event.payload;
  const requestId =
    payload.case === "completion" ||
    payload.case === "error" ||
    payload.case === "streaming" ||
    payload.case === "rateLimit"
      ? payload.value.requestId
      : "";
  const streaming = payload.case === "streaming";
  return {
    type: eventTypeOfCase(payload.case),
    orgId: event.orgId,
    app: event.app,
    requestId,
    orderKey: streaming ? requestId : "",
    orderIndex: streaming ? payload.value.tokenIndex : 0,
    timeMs: event.time ? timestampMs(event.time) : 0,
  };
}

/** What ingest rejects before writing anything (the store's own guard; the pipeline validates first). */
export function checkIngest(events: readonly Event[]): void {
  events.forEach((event, index) => {
    if (event.id === "") throw new TypeError(`ingest: event at index ${index} has an empty id`);
  });
}

/** What a new delivery copies from its event (or from the delivery it replays). */
export interface DeliverySource {
  eventSeq: number;
  eventId: string;
  eventType: number;
  orderKey: string;
  orderIndex: number;
}

/** The feed and the delivery queue both order by it; stored events after this many are one page. */
export const FEED_PAGE_MAX = 10_000;

/** Calls an ingest's onCommitted callback, which must not fail the ingest. */
export function committed(
  callback: ((endpoints: readonly string[]) => void) | undefined,
  endpoints: readonly string[],
): void {
  try {
    callback?.(endpoints);
  } catch {
    // The caller's business (waking lanes); the events are stored either way.
  }
}
