import type { Event, EventType } from "../../gen/aigw/v1/events_pb.js";

/**
 * The control plane's durable state. Every method is async so SQLite (embedded default)
 * and PostgreSQL (replicas) implement the same interface and pass the same conformance
 * suite (test/store/conformance.ts). Times are unix milliseconds.
 */
export interface Store {
  readonly kind: "sqlite" | "postgres";

  // ---- events -------------------------------------------------------------------------
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
   */
  ingest(
    events: readonly Event[],
    route: (event: Event) => readonly string[],
    accounting?: SpendAccounting,
  ): Promise<IngestResult>;
  /** Events with seq > afterSeq, oldest first. */
  readEventsAfter(afterSeq: number, limit: number): Promise<StoredEvent[]>;
  /** The highest event seq stored (0 when empty). */
  lastEventSeq(): Promise<number>;
  /**
   * The seq to read after (readEventsAfter) for the events ingested at or after `timeMs`:
   * one less than the first such event's, or lastEventSeq() when there is none.
   */
  eventSeqBefore(timeMs: number): Promise<number>;
  countEvents(sinceMs?: number): Promise<number>;

  // ---- endpoints and their signing keys -------------------------------------------------
  /** Configured endpoints; one-off endpoints (orgId set) are left out: see getEndpoint. */
  listEndpoints(): Promise<EndpointRecord[]>;
  /** Any endpoint, one-off endpoints included. */
  getEndpoint(name: string): Promise<EndpointRecord | undefined>;
  /** Creates; throws StoreConflictError when the name exists. */
  createEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord>;
  /** Creates or overwrites (config at startup); a changed secret becomes the only key. */
  upsertEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord>;
  /** Throws StoreNotFoundError when absent. */
  updateEndpoint(name: string, patch: EndpointPatch): Promise<EndpointRecord>;
  /** Deletes the endpoint, its keys, and fails its pending deliveries. False if absent. */
  deleteEndpoint(name: string): Promise<boolean>;
  /** Adds a key; existing keys expire at `previousExpireAt` (overlap window). */
  addSigningKey(endpoint: string, secret: string, previousExpireAt: number): Promise<void>;
  /** Keys valid at `now`, newest first (a one-off endpoint's are its org's). Secrets are decrypted. */
  activeSigningKeys(endpoint: string, now: number): Promise<SigningKey[]>;

  // ---- one-off endpoints (x-aigw-webhook-url) and org signing keys -----------------------
  /**
   * The one-off endpoint `name` of (orgId, url), created on first use, signed with the
   * org's keys; when the org has no active key, one is created from `newSecret()` in the
   * same transaction (`createdOrgKey`). Throws StoreConflictError when `name` belongs to
   * another endpoint.
   */
  ensureOneOffEndpoint(
    name: string,
    orgId: string,
    url: string,
    newSecret: () => string,
  ): Promise<{ endpoint: EndpointRecord; createdOrgKey: boolean }>;
  /** Adds an org key; the org's existing keys expire at `previousExpireAt` (overlap window). */
  addOrgSigningKey(orgId: string, secret: string, previousExpireAt: number): Promise<void>;
  /** The org's keys valid at `now`, newest first. Secrets are decrypted. */
  activeOrgSigningKeys(orgId: string, now: number): Promise<SigningKey[]>;

  // ---- deliveries ------------------------------------------------------------------------
  /**
   * Claims due deliveries lane by lane, a lane being one endpoint's queue: for each of
   * `lanes`, up to its `limit` pending deliveries of that endpoint that are due at `now`
   * (their lease free or expired), oldest due first, leased to `leaseOwner` until
   * now + leaseMs. Only those rows are read: another endpoint's backlog, or rows not yet
   * due, cost nothing. A streaming delivery is not due while an earlier token of its
   * (endpoint, orderKey) is pending, so each endpoint gets a request's tokens in order.
   * One result per lane, in order.
   */
  claim(options: ClaimOptions): Promise<LaneClaim[]>;
  /**
   * Endpoints with pending deliveries, by name after `after`, at most `limit`, each with
   * when it next has a claimable delivery (a lease's end included). Its cost follows the
   * number of lanes returned, not the number of pending rows.
   */
  pendingLanes(after: string, limit: number): Promise<PendingLane[]>;
  /** Records an attempt and the delivery's new state, if the caller still holds its lease. */
  completeAttempt(
    deliveryId: string,
    leaseOwner: string,
    attempt: NewAttempt,
    outcome: AttemptOutcome,
  ): Promise<CompleteResult>;
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
  /** Replays every dead-lettered delivery (of one endpoint, or all). */
  replayDeadLettered(endpoint?: string): Promise<number>;
  /** Deliveries pending (waiting, retrying or in flight), without walking them. */
  countPending(): Promise<number>;
  stats(sinceMs: number): Promise<EndpointStatsRecord[]>;

  /** Deletes events (and their deliveries and attempts) ingested before `beforeMs` whose deliveries are all finished. */
  purge(beforeMs: number): Promise<{ events: number; deliveries: number }>;
  close(): Promise<void>;

  // ---- budgets and pricing (control-plane/budgets) ----------------------------------------
  /** Every budget with its spend and fired thresholds in the period `periodOf` names. */
  listBudgets(periodOf: (limitType: BudgetLimitType) => string): Promise<BudgetRecord[]>;
  /** Creates or replaces the budget of (orgId, limitType); its spend and fired thresholds stay. */
  putBudget(budget: BudgetSpec): Promise<void>;
  /** False when absent. Spend history stays (it is the org's, not the budget's). */
  deleteBudget(orgId: string, limitType: BudgetLimitType): Promise<boolean>;
  /** Prices set at runtime (SetModelPrice), by model. */
  listModelPrices(): Promise<StoredModelPrice[]>;
  putModelPrice(price: StoredModelPrice): Promise<void>;
}

export interface StoredEvent {
  seq: number;
  event: Event;
  ingestedAt: number;
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

// ---- budgets and pricing ------------------------------------------------------------------

export type BudgetLimitType = "daily" | "monthly";

export interface BudgetSpec {
  orgId: string;
  limitType: BudgetLimitType;
  /** USD, above 0. */
  budgetLimit: number;
  /** Percentages, ascending, 1..100. */
  thresholds: number[];
  enforce: boolean;
}

export interface BudgetRecord extends BudgetSpec {
  period: string;
  currentSpend: number;
  /** Ascending. */
  firedThresholds: number[];
}

export interface SpendTotal {
  orgId: string;
  limitType: BudgetLimitType;
  period: string;
  spend: number;
}

/** A budget threshold reached for the first time in a period. */
export interface BudgetCrossing {
  budget: BudgetSpec;
  period: string;
  currentSpend: number;
  threshold: number;
  /** The id the budget event must have (recorded with the threshold). */
  eventId: string;
}

/** What ingest needs to count spend; its rules live in control-plane/budgets. */
export interface SpendAccounting {
  /** The period key of each limit type for this batch (one clock reading per batch). */
  periodOf(limitType: BudgetLimitType): string;
  /** USD an event adds to its org's spend; 0 for none. */
  costOf(event: Event): number;
  /** Thresholds (percent) the spend has reached, fired or not. */
  reached(budget: BudgetSpec, spend: number): number[];
  budgetEvent(crossing: BudgetCrossing): Event;
}

export interface StoredModelPrice {
  model: string;
  inputPerMillion: number;
  outputPerMillion: number;
}

export interface NewEndpoint {
  name: string;
  url: string;
  enabled: boolean;
  /** Empty: every subscribed type. */
  eventTypes: EventType[];
  /** "" for none; the config layer fills the primary→backup default. */
  failoverTo: string;
  /** Applied after the global filters; absent: none. */
  filters?: EndpointFilters;
}

/** events.filters' shape for one endpoint (the Admin API's EventFilters); empty lists: all. */
export interface EndpointFilters {
  /** Exact names, or a prefix ending in "*". */
  completionModels: string[];
  completionMinTokens: number;
  /** warning, error, critical */
  errorSeverities: string[];
}

export interface EndpointRecord extends NewEndpoint {
  filters: EndpointFilters;
  /** The org of a one-off endpoint (x-aigw-webhook-url), signed with that org's keys; "" otherwise. */
  orgId: string;
  disabledReason: string;
  createdAt: number;
  updatedAt: number;
  signingKeyCount: number;
}

export interface EndpointPatch {
  url?: string;
  enabled?: boolean;
  eventTypes?: EventType[];
  failoverTo?: string;
  disabledReason?: string;
  /** Replaces every key with this one. */
  secret?: string;
  filters?: EndpointFilters;
}

export interface SigningKey {
  id: string;
  secret: string;
  createdAt: number;
  expiresAt: number | null;
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
}

export interface ClaimedDelivery extends DeliveryRecord {
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
}

export interface DeliveryFilter {
  endpoint?: string;
  status?: DeliveryStatus;
  eventId?: string;
  /** 1..1000 */
  pageSize: number;
  pageToken?: string;
}

export interface EndpointStatsRecord {
  endpoint: string;
  delivered: number;
  failed: number;
  deadLettered: number;
  pending: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  failureReasons: { reason: string; count: number }[];
}

export class StoreConflictError extends Error {
  override readonly name = "StoreConflictError";
}

export class StoreNotFoundError extends Error {
  override readonly name = "StoreNotFoundError";
}
