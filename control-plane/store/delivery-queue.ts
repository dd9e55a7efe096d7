import type { Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import type { StoredEvent } from "./events.js";

/** The delivery queue: lanes of due deliveries, leases, attempts and their outcomes, replays. */
export interface DeliveryQueue {
  /**
   * True when a claim sees every attempt result whose `completeAttempt` was called before
   * it, settled or not (one process writes the store, in call order: SQLite, whose claim
   * records the waiting results in its own transaction). The scheduler then gives a
   * request's slot back as soon as the attempt ends, not once it is recorded. Where it is
   * not (PostgreSQL: a result commits on its own connection, and every replica's claim counts
   * unexpired leases), slots come back when the result is recorded.
   */
  readonly claimsSeeSubmittedResults?: boolean;
  /**
   * Claims due deliveries lane by lane, a lane being one endpoint's queue: for each of
   * `lanes` whose endpoint is not paused (one lookup per lane; a paused lane claims
   * nothing and reports nothing due; a paused endpoint that is disabled is claimed, so
   * its deliveries fail as any disabled endpoint's do), up to its `limit` pending deliveries of that endpoint that are due at `now`
   * (their lease free or expired), oldest due first, leased to `leaseOwner` until
   * now + leaseMs. Only those rows are read: another endpoint's backlog, or rows not yet
   * due, cost nothing. A streaming delivery is not due while an earlier token of its
   * (endpoint, orderKey) is pending, so each endpoint gets a request's tokens in order.
   * With several processes on one store, `caps` hold across them all. One result per lane,
   * in order.
   */
  claim(options: ClaimOptions): Promise<LaneClaim[]>;
  /**
   * Endpoints with pending deliveries, by name after `after`, at most `limit`, each with
   * when it next has a claimable delivery (a lease's end included). Paused endpoints are
   * left out: they are not lanes. Its cost follows the number of lanes, not the number of
   * pending rows. Fewer than `limit`: there are no more.
   */
  pendingLanes(after: string, limit: number): Promise<PendingLane[]>;
  /**
   * Records an attempt and the delivery's new state, if the caller still holds the lease
   * it was claimed with (its owner and fencing token): a lease that expired and was claimed
   * again is not written over.
   */
  completeAttempt(delivery: LeasedDelivery, attempt: NewAttempt, outcome: AttemptOutcome): Promise<CompleteResult>;
  /** Gives claimed deliveries back (shutdown) without counting an attempt. */
  releaseLeases(leaseOwner: string): Promise<number>;
  /** Creates pending deliveries of a stored event (failover, test events). */
  createDeliveries(
    eventSeq: number,
    endpoints: readonly string[],
    originDeliveryId?: string,
  ): Promise<DeliveryRecord[]>;
  getDelivery(id: string): Promise<DeliveryDetail | undefined>;
  listDeliveries(filter: DeliveryFilter): Promise<{ deliveries: DeliveryRecord[]; nextPageToken: string }>;
  listAttempts(deliveryId: string): Promise<AttemptRecord[]>;
  /** A new pending delivery of the same event to the same endpoint. */
  replayDelivery(id: string): Promise<DeliveryRecord>;
  /**
   * Replays every dead-lettered delivery (of one endpoint, or all; of one org's endpoints
   * when orgId is given), in batches (replayWindow).
   */
  replayDeadLettered(endpoint?: string, orgId?: string): Promise<number>;
  /**
   * One bounded step of a replay by window: looks at up to `limit` failed or dead-lettered
   * deliveries that finished in [since, until), after `after`, in order of finish time,
   * and queues again (a new pending delivery, origin = the old one) each whose endpoint
   * exists and is enabled, unless it was replayed already or its event is pending for
   * that endpoint again: so a window replayed twice queues nothing the second time. One
   * transaction per step; the caller loops while `next` is set.
   */
  replayWindow(options: ReplayWindow): Promise<ReplayStep>;
  /** How many deliveries a replayWindow from the start of the window would look at (progress). */
  countReplayWindow(options: Omit<ReplayWindow, "after" | "limit">): Promise<number>;
  /** Deliveries pending (waiting, retrying or in flight), without walking them. */
  countPending(): Promise<number>;
  /**
   * Pending deliveries of paused or disabled endpoints: held, not moving. Walks those rows
   * (an index range per such endpoint), so callers read it sparingly.
   */
  countHeld(): Promise<number>;
  /** One endpoint's pending deliveries (an index range: for admin actions, not hot paths). */
  countEndpointPending(endpoint: string): Promise<number>;
}

export type ReplayableStatus = "failed" | "dead_lettered";

export interface ReplayWindow {
  /** Finish times from `since` (inclusive) to `until` (exclusive), unix ms. */
  since: number;
  until: number;
  /** Empty: every endpoint. */
  endpoint?: string;
  /** Only deliveries to this org's endpoints (an org token's replay); absent: every org's. */
  orgId?: string;
  statuses: readonly ReplayableStatus[];
  /** A ReplayStep's `next`; absent: from the start of the window. */
  after?: string;
  /** Deliveries looked at in this step, 1..5000. */
  limit: number;
}

export interface ReplayStep {
  replayed: number;
  /** Looked at and left (already replayed or pending again, endpoint gone or disabled). */
  skipped: number;
  /** Where the next step starts; undefined when the window is done. */
  next: string | undefined;
  /** Endpoints that got new pending deliveries: the lanes to wake. */
  endpoints: string[];
}

export type DeliveryStatus = "pending" | "delivered" | "failed" | "dead_lettered";

export interface DeliveryRecord {
  id: string;
  eventSeq: number;
  eventId: string;
  eventType: EventType;
  endpoint: string;
  status: DeliveryStatus;
  attemptCount: number;
  createdAt: number;
  nextAttemptAt: number;
  finishedAt: number | null;
  lastError: string;
  originDeliveryId: string;
  /** request_id for streaming events (ordered by orderIndex = token_index); "" otherwise. */
  orderKey: string;
  orderIndex: number;
  /** Delivered: from the event's time to the successful attempt's end, in ms. */
  eventLatencyMs?: number;
}

/** What completeAttempt needs to prove it still holds a delivery's lease. */
export interface LeasedDelivery {
  id: string;
  leaseOwner: string;
  /** The claim's fencing token: a later claim of the same row (after the lease expired) has another. */
  leaseToken: number;
}

export interface ClaimedDelivery extends DeliveryRecord, LeasedDelivery {
  /** The stored event, protobuf-encoded: decoded and rendered by the delivery worker, not the main thread. */
  eventBody: Uint8Array;
  leaseUntil: number;
}

export interface DeliveryDetail {
  delivery: DeliveryRecord;
  attempts: AttemptRecord[];
  event: Event;
}

export interface ClaimOptions {
  now: number;
  leaseOwner: string;
  leaseMs: number;
  lanes: readonly { endpoint: string; limit: number }[];
  /**
   * Requests in flight allowed per endpoint and in total, counted over every process that
   * claims from this store (unexpired leases); a lane gets no more than what is left.
   */
  caps?: { perEndpoint: number; total: number };
}

export interface LaneClaim {
  endpoint: string;
  deliveries: ClaimedDelivery[];
  /**
   * With fewer deliveries than the limit: when this lane next has a claimable delivery
   * (a retry, a lease's end), undefined when it has none pending. Undefined, too, when the
   * limit was reached: then more may be due now.
   */
  nextDueAt: number | undefined;
}

export interface PendingLane {
  endpoint: string;
  /** When its earliest pending delivery becomes claimable. */
  dueAt: number;
}

export interface NewAttempt {
  startedAt: number;
  statusCode: number;
  latencyMs: number;
  error: string;
  responseBody: string;
}

export interface AttemptRecord extends NewAttempt {
  deliveryId: string;
  number: number;
}

export type AttemptOutcome =
  | { status: "delivered" }
  | { status: "retry"; nextAttemptAt: number }
  | { status: "failed" }
  | { status: "dead_lettered"; failoverTo?: string }
  /** 410 Gone: the delivery fails and the endpoint is disabled with this reason. */
  | { status: "endpoint_gone"; reason: string };

export interface CompleteResult {
  /** False when the lease was lost (another owner took it); nothing was written. */
  recorded: boolean;
  failoverDelivery?: DeliveryRecord;
  /** Delivered: from the event's time to this attempt's end, in ms (as stored with the delivery). */
  eventLatencyMs?: number;
  /** Operator events this result made (endpoint.disabled on 410, delivery.exhausted), and their lanes. */
  generated?: StoredEvent[];
  endpoints?: string[];
}

export interface DeliveryFilter {
  endpoint?: string;
  status?: DeliveryStatus;
  eventId?: string;
  /** Only deliveries to endpoints of this org. */
  orgId?: string;
  /** 1..1000 */
  pageSize: number;
  pageToken?: string;
}

// ---- rules every backend applies ---------------------------------------------------------

/** due_at of a pending delivery that waits for an earlier one of its (endpoint, order_key). */
export const BLOCKED_DUE_AT = Number.MAX_SAFE_INTEGER;
/** Receivers can answer with anything; an attempt keeps enough of it to debug. */
export const MAX_RESPONSE_BODY_CHARS = 16_384;
/** A failover copy never goes to an endpoint its delivery's chain of origins already passed. */
export const MAX_FAILOVER_HOPS = 16;
export const DELIVERY_STATUSES: readonly DeliveryStatus[] = ["pending", "delivered", "failed", "dead_lettered"];

/** The delivery's last_error and the stats' failure reason for a failed attempt. */
export function failureText(attempt: NewAttempt): string {
  if (attempt.error !== "") return attempt.error;
  if (attempt.statusCode !== 0 && (attempt.statusCode < 200 || attempt.statusCode >= 300)) {
    return `HTTP ${attempt.statusCode}`;
  }
  return "";
}

/** What an attempt's outcome does to its delivery (and, for 410, to its endpoint). */
export interface NextDeliveryState {
  status: DeliveryStatus;
  attemptCount: number;
  nextAttemptAt: number;
  lastError: string;
  /** Set when the delivery leaves "pending". */
  finishedAt: number | null;
  /** 410 Gone: disable the endpoint with this reason. */
  disableEndpoint?: string;
  /** Dead-lettered with a failover target: a copy for it (when it exists and is enabled). */
  failoverTo?: string;
}

export function nextDeliveryState(
  current: { attemptCount: number; nextAttemptAt: number },
  attempt: NewAttempt,
  outcome: AttemptOutcome,
  now: number,
): NextDeliveryState {
  const failure = failureText(attempt);
  const attemptCount = current.attemptCount + 1;
  const done = (status: DeliveryStatus, lastError: string): NextDeliveryState => ({
    status,
    attemptCount,
    nextAttemptAt: current.nextAttemptAt,
    lastError,
    finishedAt: now,
  });
  switch (outcome.status) {
    case "delivered":
      return done("delivered", "");
    case "retry":
      return {
        status: "pending",
        attemptCount,
        nextAttemptAt: outcome.nextAttemptAt,
        lastError: failure,
        finishedAt: null,
      };
    case "failed":
      return done("failed", failure);
    case "dead_lettered": {
      const state = done("dead_lettered", failure);
      if (outcome.failoverTo) state.failoverTo = outcome.failoverTo;
      return state;
    }
    case "endpoint_gone":
      return { ...done("failed", failure || outcome.reason), disableEndpoint: outcome.reason };
    default:
      throw new TypeError(`completeAttempt: unknown outcome ${JSON.stringify(outcome)}`);
  }
}

/** Checks what completeAttempt is given before it touches the store. */
export function checkOutcome(outcome: AttemptOutcome): void {
  if (outcome.status === "retry" && !Number.isFinite(outcome.nextAttemptAt)) {
    throw new RangeError("completeAttempt: nextAttemptAt must be a finite number");
  }
}

export function positiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${what} must be a positive integer, got ${value}`);
  return value;
}

export function finiteNumber(value: number, what: string): number {
  if (!Number.isFinite(value)) throw new RangeError(`${what} must be a finite number, got ${value}`);
  return value;
}

/** The store's checks of a claim request. */
export function checkClaim(options: ClaimOptions): number {
  finiteNumber(options.now, "claim now");
  const leaseUntil = options.now + positiveInteger(options.leaseMs, "claim leaseMs");
  if (options.leaseOwner === "") throw new TypeError("claim: leaseOwner must not be empty");
  for (const lane of options.lanes) positiveInteger(lane.limit, `claim limit of lane "${lane.endpoint}"`);
  return leaseUntil;
}

export function checkDeliveryFilter(filter: DeliveryFilter): void {
  const pageSize = filter.pageSize;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
    throw new RangeError(`listDeliveries: pageSize must be an integer from 1 to 1000, got ${pageSize}`);
  }
  if (filter.status !== undefined && !DELIVERY_STATUSES.includes(filter.status)) {
    throw new RangeError(`listDeliveries: unknown status "${filter.status}"`);
  }
}

// Used by DeliveryDetail.
export type { Event };

export const REPLAY_STEP_MAX = 5_000;

/**
 * Every dead-lettered delivery (of one endpoint, or all; of one org's endpoints with orgId)
 * replayed through a queue's bounded replayWindow steps: the same rule on every backend.
 */
export async function replayAllDeadLettered(
  queue: Pick<DeliveryQueue, "replayWindow">,
  endpoint?: string,
  orgId?: string,
): Promise<number> {
  let replayed = 0;
  const window: ReplayWindow = {
    since: Number.MIN_SAFE_INTEGER,
    until: Number.MAX_SAFE_INTEGER,
    statuses: ["dead_lettered"],
    limit: 500,
    ...(endpoint ? { endpoint } : {}),
    ...(orgId ? { orgId } : {}),
  };
  for (let after: string | undefined; ; ) {
    const step = await queue.replayWindow(after === undefined ? window : { ...window, after });
    replayed += step.replayed;
    if (step.next === undefined) return replayed;
    after = step.next;
  }
}

/** The store's checks of a replay window. */
export function checkReplayWindow(w: Omit<ReplayWindow, "after" | "limit"> & { limit?: number }): void {
  finiteNumber(w.since, "replayWindow since");
  finiteNumber(w.until, "replayWindow until");
  if (w.statuses.length === 0) throw new RangeError("replayWindow: statuses must not be empty");
  for (const s of w.statuses) {
    if (s !== "failed" && s !== "dead_lettered") throw new RangeError(`replayWindow: status "${s}" is not replayable`);
  }
  if (w.limit !== undefined && (!Number.isInteger(w.limit) || w.limit < 1 || w.limit > REPLAY_STEP_MAX)) {
    throw new RangeError(`replayWindow: limit must be an integer from 1 to ${REPLAY_STEP_MAX}, got ${w.limit}`);
  }
}

/** A replay step's cursor: the (finished_at, seq) of the last delivery looked at. */
export function encodeReplayCursor(finishedAt: number, seq: number): string {
  return `${finishedAt}.${seq}`;
}

export function decodeReplayCursor(cursor: string | undefined): { finishedAt: number; seq: number } {
  if (cursor === undefined || cursor === "") return { finishedAt: Number.MIN_SAFE_INTEGER, seq: 0 };
  const m = /^(-?\d+)\.(\d+)$/.exec(cursor);
  if (!m) throw new TypeError(`replayWindow: malformed cursor "${cursor}"`);
  return { finishedAt: Number(m[1]), seq: Number(m[2]) };
}
