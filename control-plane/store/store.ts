import type { AnalyticsStore } from "./analytics.js";
import type { BudgetStore } from "./budgets.js";
import type { ClusterStore, StoreWatcher } from "./cluster.js";
import type { DeliveryQueue } from "./delivery-queue.js";
import type { EndpointStore } from "./endpoints.js";
import type { EventStore } from "./events.js";
import type { OperatorRoute } from "./operator-events.js";
import type { RetentionStore } from "./retention.js";
import type { TokenStore } from "./tokens.js";

/**
 * The largest value an integer column holds on every backend (PostgreSQL's `integer` is 32
 * bits): token indexes, latencies in ms. What could be larger is refused or capped before
 * it reaches the store, so one value never fails a whole batch or result.
 */
export const MAX_INT_COLUMN = 2_147_483_647;

/**
 * The control plane's durable state, one port per concern (events.ts, endpoints.ts,
 * delivery-queue.ts, analytics.ts, budgets.ts, retention.ts), each with the rules every backend applies.
 * Backends hold only what differs: SQL, transactions, claims, notifications —
 * `sqlite/` (the embedded default) and `postgres/` (replicas). Both pass one conformance
 * suite (test/store/conformance.ts). Every method is async; times are unix milliseconds.
 */
export interface Store
  extends EventStore,
    EndpointStore,
    DeliveryQueue,
    AnalyticsStore,
    BudgetStore,
    ClusterStore,
    RetentionStore,
    TokenStore {
  readonly kind: "sqlite" | "postgres";
  /**
   * Other processes may write to this store at the same time (PostgreSQL replicas): the
   * live feed is read back from the store in its order, and their writes are heard
   * through watch(). False when one process owns it (SQLite).
   */
  readonly shared: boolean;
  /**
   * Routes the operator events this store makes (operator-events.ts), and turns them on:
   * a store this was never called on (a tool's, a test's) makes none.
   */
  routeOperatorEvents(route: OperatorRoute): void;
  /** Hears other processes' writes (never called for a store one process owns). */
  watch(watcher: StoreWatcher): () => void;
  close(): Promise<void>;
}

export type * from "./analytics.js";
export type * from "./budgets.js";
export type * from "./cluster.js";
export type * from "./delivery-queue.js";
export type * from "./endpoints.js";
export type * from "./events.js";
export type * from "./operator-events.js";
export type * from "./retention.js";
export type * from "./tokens.js";

export class StoreConflictError extends Error {
  override readonly name = "StoreConflictError";
}

export class StoreNotFoundError extends Error {
  override readonly name = "StoreNotFoundError";
}
