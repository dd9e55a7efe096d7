import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import type { Logger } from "../../../common/logger.js";
import { steadyNow } from "../../../common/clock.js";
import { newDeliveryId, ulid } from "../../../common/ids.js";
import { type Event, EventSchema, type EventType } from "../../../gen/aigw/v1/events_pb.js";
import {
  type EndpointStatsRecord,
  type QueueRecord,
  type SeriesQuery,
  type SeriesRowRecord,
  StatsBuilder,
  seriesParams,
  seriesSql,
} from "../analytics.js";
import type { BudgetLimitType, BudgetRecord, BudgetSpec, SpendAccounting, StoredModelPrice } from "../budgets.js";
import {
  type CircuitRecord,
  type SidecarRecord,
  type SidecarRow,
  type StoreWatcher,
  sidecarRecord,
} from "../cluster.js";
import {
  type AttemptOutcome,
  type AttemptRecord,
  BLOCKED_DUE_AT,
  type ClaimedDelivery,
  type ClaimOptions,
  type CompleteResult,
  checkClaim,
  checkDeliveryFilter,
  checkOutcome,
  type DeliveryDetail,
  type DeliveryFilter,
  type DeliveryRecord,
  type DeliveryStatus,
  finiteNumber,
  type LaneClaim,
  type LeasedDelivery,
  MAX_FAILOVER_HOPS,
  MAX_RESPONSE_BODY_CHARS,
  type NewAttempt,
  nextDeliveryState,
  type PendingLane,
  positiveInteger,
  checkReplayWindow,
  decodeReplayCursor,
  encodeReplayCursor,
  type ReplayStep,
  type ReplayWindow,
  replayAllDeadLettered,
} from "../delivery-queue.js";
import {
  type AutoDisable,
  type AutoDisableEffects,
  deliveryExhaustedEvent,
  endpointDisabledEvent,
  endpointRecoveredEvent,
  NO_EFFECTS,
  type OperatorEffects,
  type OperatorRoute,
  operatorTargets,
  runStillGoing,
} from "../operator-events.js";
import {
  configSecretContext,
  type EndpointPatch,
  type EndpointRecord,
  filtersJson,
  type NewEndpoint,
  orgKeyContext,
  parseFilters,
  patchedEndpoint,
  requireSecret,
  type SigningKey,
  signingKeyContext,
  upsertPlan,
  validateEndpoint,
} from "../endpoints.js";
import {
  checkIngest,
  committed,
  type DeliverySource,
  eventColumns,
  type IngestResult,
  type StoredEvent,
} from "../events.js";
import { GroupCommit } from "../group-commit.js";
import {
  COMPACTED_RESOLUTIONS,
  COMPACTED_SETTING,
  compactSql,
  eventLatencyMs,
  FINEST_RES,
  outcomeName,
  RollupBatch,
  type RollupRow,
} from "../rollups.js";
import { decodePageToken, encodePageToken } from "../page-token.js";
import { keyFileBeside, loadOrCreateKeyFile, SecretBox } from "../secret-box.js";
import { type Store, StoreConflictError, StoreNotFoundError } from "../store.js";
import { StoreUnavailableError } from "../unavailable.js";
import type { PurgeStep, PurgeStepOptions } from "../retention.js";
import { type NewToken, type TokenRecord, type TokenRow, toTokenRecord, validateNewToken } from "../tokens.js";
import { SqliteBudgetTables } from "./budgets.js";
import { Checkpointer, WalSync } from "./durability.js";
import { SqliteRetention } from "./retention.js";
import { migrate } from "./schema.js";

export interface SqliteStoreOptions {
  /** base64 of 32 bytes; absent or "": a key file beside the database (`<path>.key`). */
  encryptionKey?: string;
  logger?: Logger;
}

/**
 * How long a write waits for another process's lock before SQLITE_BUSY. Short: the wait
 * holds the main thread (SQLite's busy handler sleeps on it), and a lock held longer is
 * waited out asynchronously by the callers (StoreUnavailableError). Opening and migrating,
 * before anything is served, wait longer.
 */
const BUSY_TIMEOUT_MS = 100;
const OPEN_BUSY_TIMEOUT_MS = 5_000;
const KEY_CHECK_NAME = "key_check";
const KEY_CHECK_CONTEXT = "aigw store key check";
const KEY_CHECK_PLAINTEXT = "aigw";

interface DeliveryRow {
  seq: number;
  id: string;
  event_seq: number;
  event_id: string;
  event_type: number;
  endpoint: string;
  status: DeliveryStatus;
  attempt_count: number;
  next_attempt_at: number;
  due_at: number;
  lease_owner: string;
  lease_until: number;
  lease_token: number;
  created_at: number;
  finished_at: number | null;
  last_error: string;
  origin_delivery_id: string;
  order_key: string;
  order_index: number;
  /** Set when delivered (schema v6 / v3). */
  event_latency_ms?: number | null;
}

interface DeliveryWithBodyRow extends DeliveryRow {
  body: Uint8Array;
}

interface EventRow {
  seq: number;
  id: string;
  type: number;
  order_key: string;
  token_index: number;
  ingested_at: number;
  body: Uint8Array;
}

interface EndpointRow {
  name: string;
  url: string;
  enabled: number;
  event_types: string;
  failover_to: string;
  disabled_reason: string;
  config_secret: string;
  created_at: number;
  updated_at: number;
  key_count: number;
  /** JSON of EndpointFilters (schema v3). */
  filters: string;
  /** The endpoint's org (schema v3 for one-off endpoints, v6 for all); "" for an operator endpoint. */
  org_id: string;
  /** JSON list of apps (schema v6). */
  apps: string;
  /** 1 for a one-off endpoint (schema v6). */
  one_off: number;
  /** Schema v7. */
  paused: number;
  paused_at: number | null;
}

interface AttemptRow {
  delivery_id: string;
  number: number;
  started_at: number;
  status_code: number;
  latency_ms: number;
  error: string;
  response_body: string;
}

interface KeyRow {
  id: string;
  secret: string;
  created_at: number;
  expires_at: number | null;
}

interface QueuedCompletion {
  delivery: LeasedDelivery;
  attempt: NewAttempt;
  outcome: AttemptOutcome;
}

interface QueuedIngest {
  events: readonly Event[];
  route: (event: Event) => readonly string[];
  accounting: SpendAccounting | undefined;
  onCommitted: ((endpoints: readonly string[]) => void) | undefined;
}

/** Operator events made inside one transaction, and the lanes they woke. */
interface Fx {
  generated: StoredEvent[];
  endpoints: Set<string>;
}

type Stmt<P, R = unknown> = Database.Statement<[P], R>;
type Stmt0<R = unknown> = Database.Statement<[], R>;

function prepareStatements(db: Database.Database) {
  const endpointColumns = `e.*, CASE WHEN e.one_off = 0 THEN (SELECT COUNT(*) FROM signing_keys k
      WHERE k.endpoint = e.name AND (k.expires_at IS NULL OR k.expires_at > @now))
    ELSE (SELECT COUNT(*) FROM org_signing_keys o
      WHERE o.org_id = e.org_id AND (o.expires_at IS NULL OR o.expires_at > @now)) END AS key_count`;
  return {
    getMeta: db.prepare("SELECT value FROM meta WHERE name = ?") as Database.Statement<[string], { value: string }>,
    putMeta: db.prepare("INSERT OR REPLACE INTO meta (name, value) VALUES (@name, @value)") as Stmt<{
      name: string;
      value: string;
    }>,

    insertEvent: db.prepare(
      `INSERT INTO events (id, type, org_id, app, request_id, order_key, token_index, time_ms, ingested_at, body)
       VALUES (@id, @type, @orgId, @app, @requestId, @orderKey, @orderIndex, @timeMs, @ingestedAt, @body)
       ON CONFLICT (id) DO NOTHING RETURNING seq`,
    ) as Stmt<Record<string, unknown>, { seq: number }>,
    eventBySeq: db.prepare("SELECT * FROM events WHERE seq = ?") as Database.Statement<[number], EventRow>,
    eventMeta: db.prepare("SELECT org_id, time_ms, ingested_at FROM events WHERE seq = ?") as Database.Statement<
      [number],
      { org_id: string; time_ms: number; ingested_at: number }
    >,
    upsertRollup: db.prepare(
      `INSERT INTO rollups (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin, n, v1, v2)
       VALUES (@kind, @res, @bucket, @endpoint, @eventType, @orgId, @model, @outcome, @bin, @n, @v1, @v2)
       ON CONFLICT (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin)
       DO UPDATE SET n = n + excluded.n, v1 = v1 + excluded.v1, v2 = v2 + excluded.v2`,
    ) as Stmt<RollupRow>,
    compactRollups: db.prepare(compactSql((i) => ["", "@res", "@from", "@until"][i]!)) as Stmt<{
      res: number;
      from: number;
      until: number;
    }>,
    firstFineBucket: db.prepare("SELECT MIN(bucket) FROM rollups WHERE res = ?").pluck() as Database.Statement<
      [number],
      number | null
    >,
    purgeRollups: db.prepare("DELETE FROM rollups WHERE res = ? AND bucket < ?") as Database.Statement<
      [number, number]
    >,
    queues: db.prepare(
      `SELECT endpoint, SUM(status = 'pending') AS pending, SUM(status = 'dead_lettered') AS dead_lettered,
         MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending
       FROM deliveries WHERE status IN ('pending', 'dead_lettered') GROUP BY endpoint ORDER BY endpoint`,
    ) as Stmt0<{ endpoint: string; pending: number; dead_lettered: number; oldest_pending: number | null }>,
    // The feed's order is seq: one writer, so an event never commits after a later seq.
    eventsAfter: db.prepare(
      "SELECT seq, body, ingested_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
    ) as Database.Statement<[number, number], Pick<EventRow, "seq" | "body" | "ingested_at">>,
    // AUTOINCREMENT's counter: the highest seq ever given, so a cursor never moves back
    // even when purge has emptied the table.
    lastEventSeq: db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").pluck() as Stmt0<number>,
    // Walks the ingested_at index to its first entry at or after the time: O(log n).
    firstEventSeqSince: db
      .prepare("SELECT seq FROM events WHERE ingested_at >= ? ORDER BY ingested_at, seq LIMIT 1")
      .pluck() as Database.Statement<[number], number>,
    countEvents: db.prepare("SELECT COUNT(*) FROM events").pluck() as Stmt0<number>,
    countEventsSince: db.prepare("SELECT COUNT(*) FROM events WHERE ingested_at >= ?").pluck() as Database.Statement<
      [number],
      number
    >,
    countOrgEventsSince: db
      .prepare("SELECT COUNT(*) FROM events WHERE ingested_at >= ? AND org_id = ?")
      .pluck() as Database.Statement<[number, string], number>,
    insertToken: db.prepare(
      `INSERT INTO api_tokens (id, digest, org_id, kind, name, created_at, revoked_at)
       VALUES (@id, @digest, @orgId, @kind, @name, @createdAt, NULL)`,
    ) as Stmt<NewToken>,
    listTokens: db.prepare("SELECT * FROM api_tokens ORDER BY created_at, id") as Stmt0<TokenRow>,
    tokenById: db.prepare("SELECT * FROM api_tokens WHERE id = ?") as Database.Statement<[string], TokenRow>,
    revokeToken: db.prepare("UPDATE api_tokens SET revoked_at = @now WHERE id = @id AND revoked_at IS NULL") as Stmt<{
      id: string;
      now: number;
    }>,

    listEndpoints: db.prepare(`SELECT ${endpointColumns} FROM endpoints e WHERE e.one_off = 0 ORDER BY e.name`) as Stmt<
      { now: number },
      EndpointRow
    >,
    endpointByName: db.prepare(`SELECT ${endpointColumns} FROM endpoints e WHERE e.name = @name`) as Stmt<
      { now: number; name: string },
      EndpointRow
    >,
    insertEndpoint: db.prepare(
      `INSERT INTO endpoints (name, url, enabled, event_types, failover_to, disabled_reason, config_secret, created_at,
         updated_at, filters, org_id, apps, one_off)
       VALUES (@name, @url, @enabled, @eventTypes, @failoverTo, @disabledReason, @configSecret, @now, @now, @filters,
         @orgId, @apps, @oneOff)`,
    ) as Stmt<Record<string, unknown>>,
    updateEndpoint: db.prepare(
      `UPDATE endpoints SET url = @url, enabled = @enabled, event_types = @eventTypes, failover_to = @failoverTo,
         disabled_reason = @disabledReason, config_secret = @configSecret, updated_at = @now, filters = @filters,
         org_id = @orgId, apps = @apps
       WHERE name = @name`,
    ) as Stmt<Record<string, unknown>>,
    disableEndpoint: db.prepare(
      "UPDATE endpoints SET enabled = 0, disabled_reason = @reason, updated_at = @now WHERE name = @name",
    ) as Stmt<{ name: string; reason: string; now: number }>,
    deleteEndpoint: db.prepare("DELETE FROM endpoints WHERE name = ?") as Database.Statement<[string]>,
    touchEndpoint: db.prepare("UPDATE endpoints SET updated_at = @now WHERE name = @name") as Stmt<{
      name: string;
      now: number;
    }>,

    insertKey: db.prepare(
      "INSERT INTO signing_keys (id, endpoint, secret, created_at, expires_at) VALUES (@id, @endpoint, @secret, @now, NULL)",
    ) as Stmt<{ id: string; endpoint: string; secret: string; now: number }>,
    deleteKeys: db.prepare("DELETE FROM signing_keys WHERE endpoint = ?") as Database.Statement<[string]>,
    deleteExpiredKeys: db.prepare(
      "DELETE FROM signing_keys WHERE endpoint = @endpoint AND expires_at IS NOT NULL AND expires_at <= @now",
    ) as Stmt<{ endpoint: string; now: number }>,
    expireKeys: db.prepare(
      `UPDATE signing_keys SET expires_at = @expiresAt
       WHERE endpoint = @endpoint AND (expires_at IS NULL OR expires_at > @expiresAt)`,
    ) as Stmt<{ endpoint: string; expiresAt: number }>,
    activeKeys: db.prepare(
      `SELECT id, secret, created_at, expires_at FROM signing_keys
       WHERE endpoint = @endpoint AND (expires_at IS NULL OR expires_at > @now) ORDER BY seq DESC`,
    ) as Stmt<{ endpoint: string; now: number }, KeyRow>,

    insertDelivery: db.prepare(
      `INSERT INTO deliveries (id, event_seq, event_id, event_type, endpoint, status, attempt_count, next_attempt_at,
         due_at, lease_owner, lease_until, created_at, finished_at, last_error, origin_delivery_id, order_key, order_index)
       VALUES (@id, @eventSeq, @eventId, @eventType, @endpoint, 'pending', 0, @scheduleAt, @dueAt, '', 0, @now, NULL, '',
         @originDeliveryId, @orderKey, @orderIndex)`,
    ) as Stmt<Record<string, unknown>>,
    deliveryById: db.prepare("SELECT * FROM deliveries WHERE id = ?") as Database.Statement<[string], DeliveryRow>,
    deliveryWithBody: db.prepare(
      "SELECT d.*, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?",
    ) as Database.Statement<[string], DeliveryWithBodyRow>,
    // One lane: the endpoint's own range of deliveries_due, in due order, stopping at the
    // first row not yet due or after `limit` rows. Every row read is returned.
    claimLane: db.prepare(
      `SELECT d.*, e.body FROM deliveries d INDEXED BY deliveries_due JOIN events e ON e.seq = d.event_seq
       WHERE d.status = 'pending' AND d.endpoint = @endpoint AND d.due_at <= @now
       ORDER BY d.due_at, d.seq
       LIMIT @limit`,
    ) as Stmt<{ endpoint: string; now: number; limit: number }, DeliveryWithBodyRow>,
    laneNextDue: db
      .prepare(
        `SELECT due_at FROM deliveries INDEXED BY deliveries_due
         WHERE status = 'pending' AND endpoint = ? ORDER BY due_at LIMIT 1`,
      )
      .pluck() as Database.Statement<[string], number>,
    // A loose index scan: one seek per endpoint with pending rows, however many rows each has.
    pendingLanes: db.prepare(
      `WITH RECURSIVE lanes(endpoint) AS (
         SELECT (SELECT endpoint FROM deliveries INDEXED BY deliveries_due
                 WHERE status = 'pending' AND endpoint > @after ORDER BY endpoint LIMIT 1)
         UNION ALL
         SELECT (SELECT d.endpoint FROM deliveries d INDEXED BY deliveries_due
                 WHERE d.status = 'pending' AND d.endpoint > lanes.endpoint ORDER BY d.endpoint LIMIT 1)
         FROM lanes WHERE lanes.endpoint IS NOT NULL
         LIMIT @limit
       )
       SELECT endpoint, (SELECT due_at FROM deliveries INDEXED BY deliveries_due
                         WHERE status = 'pending' AND endpoint = lanes.endpoint ORDER BY due_at LIMIT 1) AS due_at
       FROM lanes WHERE endpoint IS NOT NULL`,
    ) as Stmt<{ after: string; limit: number }, { endpoint: string; due_at: number }>,
    // Streaming order (one probe of deliveries_order each): a new token waits while an
    // earlier one is pending; one arriving late makes the later ones not yet leased wait;
    // a finished token lets the next one go.
    orderPredecessor: db
      .prepare(
        `SELECT 1 FROM deliveries
         WHERE status = 'pending' AND order_key != '' AND endpoint = @endpoint AND order_key = @orderKey
           AND order_index < @orderIndex LIMIT 1`,
      )
      .pluck() as Stmt<{ endpoint: string; orderKey: string; orderIndex: number }, number>,
    blockSuccessors: db.prepare(
      `UPDATE deliveries SET due_at = ${BLOCKED_DUE_AT}
       WHERE status = 'pending' AND order_key != '' AND endpoint = @endpoint AND order_key = @orderKey
         AND order_index > @orderIndex AND lease_owner = '' AND due_at != ${BLOCKED_DUE_AT}`,
    ) as Stmt<{ endpoint: string; orderKey: string; orderIndex: number }>,
    unblockNext: db.prepare(
      `UPDATE deliveries SET due_at = next_attempt_at
       WHERE due_at = ${BLOCKED_DUE_AT} AND seq = (
         SELECT seq FROM deliveries
         WHERE status = 'pending' AND order_key != '' AND endpoint = @endpoint AND order_key = @orderKey
         ORDER BY order_index LIMIT 1)`,
    ) as Stmt<{ endpoint: string; orderKey: string }>,
    // One statement for a whole claim: a statement step per row was a measurable share of
    // the claim's cost at thousands of deliveries a second.
    lease: db.prepare(
      `UPDATE deliveries SET lease_owner = @owner, lease_until = @until, due_at = @until, lease_token = @token
       WHERE seq IN (SELECT value FROM json_each(@seqs))`,
    ) as Stmt<{
      owner: string;
      until: number;
      token: number;
      seqs: string;
    }>,
    // Fencing tokens: one per claim round, never reused (kept in meta across restarts).
    nextLeaseToken: db
      .prepare(
        `INSERT INTO meta (name, value) VALUES ('lease_token', '1')
         ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING CAST(value AS INTEGER)`,
      )
      .pluck() as Stmt0<number>,
    finishAttempt: db.prepare(
      `UPDATE deliveries SET status = @status, attempt_count = @attemptCount, next_attempt_at = @nextAttemptAt,
         due_at = @nextAttemptAt, last_error = @lastError, finished_at = @finishedAt, lease_owner = '', lease_until = 0,
         lease_token = 0, event_latency_ms = @eventLatencyMs
       WHERE seq = @seq`,
    ) as Stmt<Record<string, unknown>>,
    releaseLeases: db.prepare(
      `UPDATE deliveries INDEXED BY deliveries_leased SET lease_owner = '', lease_until = 0, due_at = next_attempt_at
       WHERE lease_owner = ? AND lease_owner != '' AND status = 'pending'`,
    ) as Database.Statement<[string]>,
    failEndpointDeliveries: db.prepare(
      `UPDATE deliveries SET status = 'failed', last_error = @error, finished_at = @now, lease_owner = '', lease_until = 0
       WHERE endpoint = @endpoint AND status = 'pending'`,
    ) as Stmt<{ endpoint: string; error: string; now: number }>,
    // A dead letter already replayed (a later delivery to the same endpoint names it as
    // origin) is not replayed again: its replay carries on, and a second bulk replay
    // must not multiply deliveries. Failover copies go to another endpoint and don't count.
    countPending: db.prepare("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").pluck() as Stmt0<number>,

    insertAttempt: db.prepare(
      `INSERT INTO attempts (delivery_id, number, endpoint, started_at, status_code, latency_ms, error, response_body)
       VALUES (@deliveryId, @number, @endpoint, @startedAt, @statusCode, @latencyMs, @error, @responseBody)`,
    ) as Stmt<Record<string, unknown>>,
    attemptsOf: db.prepare("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number") as Database.Statement<
      [string],
      AttemptRow
    >,

    statusCounts: db.prepare(
      `SELECT endpoint, status, COUNT(*) AS n FROM deliveries INDEXED BY deliveries_created_at
       WHERE created_at >= ? GROUP BY endpoint, status`,
    ) as Database.Statement<[number], { endpoint: string; status: DeliveryStatus; n: number }>,
    latencies: db.prepare(
      "SELECT endpoint, latency_ms FROM attempts WHERE started_at >= ? ORDER BY endpoint, latency_ms",
    ) as Database.Statement<[number], { endpoint: string; latency_ms: number }>,
    failureReasons: db.prepare(
      `SELECT endpoint, CASE WHEN error != '' THEN error ELSE 'HTTP ' || status_code END AS reason, COUNT(*) AS n
       FROM attempts WHERE started_at >= ? AND (error != '' OR status_code < 200 OR status_code >= 300)
       GROUP BY endpoint, reason ORDER BY endpoint, n DESC, reason`,
    ) as Database.Statement<[number], { endpoint: string; reason: string; n: number }>,
    endpointNames: db.prepare("SELECT name FROM endpoints").pluck() as Stmt0<string>,

    // Paused endpoints (schema v6): one primary-key probe per lane claimed.
    endpointPaused: db
      .prepare("SELECT 1 FROM endpoints WHERE name = ? AND paused = 1 AND enabled = 1")
      .pluck() as Database.Statement<[string], number>,
    pausedNames: db.prepare("SELECT name FROM endpoints WHERE paused = 1 AND enabled = 1").pluck() as Stmt0<string>,
    setPaused: db.prepare(
      "UPDATE endpoints SET paused = @paused, paused_at = @pausedAt, updated_at = @now WHERE name = @name",
    ) as Stmt<{ name: string; paused: number; pausedAt: number | null; now: number }>,
    countEndpointPending: db
      .prepare("SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending' AND endpoint = ?")
      .pluck() as Database.Statement<[string], number>,
    countHeld: db
      .prepare(
        `SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_due
         WHERE status = 'pending' AND endpoint IN (SELECT name FROM endpoints WHERE paused = 1 OR enabled = 0)`,
      )
      .pluck() as Stmt0<number>,
    // Replay by window: failed and dead-lettered deliveries in order of finish time, each
    // with what decides whether it is queued again (its endpoint, an earlier replay of it,
    // its event pending again for the same endpoint).
    replayCandidates: db.prepare(
      `SELECT d.*, ep.enabled AS ep_enabled,
         EXISTS (SELECT 1 FROM deliveries r INDEXED BY deliveries_origin
                   WHERE r.origin_delivery_id != '' AND r.origin_delivery_id = d.id AND r.endpoint = d.endpoint) AS replayed,
         EXISTS (SELECT 1 FROM deliveries p INDEXED BY deliveries_event WHERE p.event_seq = d.event_seq AND p.endpoint = d.endpoint
                   AND p.status = 'pending') AS pending_again
       FROM deliveries d INDEXED BY deliveries_finished LEFT JOIN endpoints ep ON ep.name = d.endpoint
       WHERE d.status IN ('failed', 'dead_lettered') AND d.status IN (@s1, @s2)
         AND d.finished_at >= @since AND d.finished_at < @until
         AND (d.finished_at > @afterAt OR (d.finished_at = @afterAt AND d.seq > @afterSeq))
         AND (@endpoint = '' OR d.endpoint = @endpoint)
         AND (@orgId = '' OR ep.org_id = @orgId)
       ORDER BY d.finished_at, d.seq LIMIT @limit`,
    ) as Stmt<
      Record<string, unknown>,
      DeliveryRow & { ep_enabled: number | null; replayed: number; pending_again: number }
    >,
    countReplayWindow: db
      .prepare(
        `SELECT COUNT(*) FROM deliveries d INDEXED BY deliveries_finished
         WHERE d.status IN ('failed', 'dead_lettered') AND d.status IN (@s1, @s2)
           AND d.finished_at >= @since AND d.finished_at < @until AND (@endpoint = '' OR d.endpoint = @endpoint)
           AND (@orgId = '' OR EXISTS (SELECT 1 FROM endpoints ep WHERE ep.name = d.endpoint AND ep.org_id = @orgId))`,
      )
      .pluck() as Stmt<Record<string, unknown>, number>,
    eventOrg: db.prepare("SELECT org_id FROM events WHERE seq = ?").pluck() as Database.Statement<[number], string>,
    circuitOf: db.prepare("SELECT open, opened_at FROM endpoint_circuits WHERE endpoint = ?") as Database.Statement<
      [string],
      { open: number; opened_at: number }
    >,
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** The embedded store: one better-sqlite3 connection in WAL mode (see DESIGN.md, Scale out). */
export class SqliteStore implements Store {
  readonly kind = "sqlite";
  readonly shared = false;
  readonly path: string;
  /** Claims record the attempt results submitted before them, in their own transaction (#write). */
  readonly claimsSeeSubmittedResults = true;
  readonly #db: Database.Database;
  readonly #box: SecretBox;
  readonly #s: Statements;
  /** One-off endpoints and org keys (schema v3). */
  readonly #oneOff: ReturnType<typeof prepareOneOffStatements>;
  readonly #cluster: ReturnType<typeof prepareClusterStatements>;
  /** Budgets and pricing tables (schema v2), used inside this store's transactions. */
  readonly #budgets: SqliteBudgetTables;
  /** Retention's statements (retention.ts). */
  readonly #retention: SqliteRetention;
  readonly #inTransaction: Database.Transaction<(fn: () => unknown) => unknown>;
  readonly #listStatements = new Map<string, Stmt<Record<string, unknown>, DeliveryRow>>();
  readonly #seriesStatements = new Map<string, Database.Statement<unknown[], SeriesRowRecord>>();
  /** Nested inside the batch transaction, so it runs in a savepoint. */
  /**
   * Attempt results and ingest batches are group-committed (group-commit.ts): those
   * arriving in the same event-loop turn share one transaction.
   */
  readonly #completions: GroupCommit<QueuedCompletion, CompleteResult>;
  readonly #ingests: GroupCommit<QueuedIngest, IngestResult>;
  /** Pending deliveries, kept as rows change so neither metrics nor the scheduler count them. */
  #pending: number;
  /** Changes to #pending inside the running transaction, applied when it commits. */
  #pendingDelta = 0;
  readonly #wal: WalSync;
  readonly #checkpointer: Checkpointer;
  #closed = false;
  #operatorRoute: OperatorRoute | undefined;

  /** Use openSqliteStore(); the constructor expects a migrated database. */
  constructor(db: Database.Database, path: string, box: SecretBox, logger?: Logger) {
    this.#db = db;
    this.path = path;
    this.#box = box;
    this.#s = prepareStatements(db);
    this.#oneOff = prepareOneOffStatements(db);
    this.#cluster = prepareClusterStatements(db);
    this.#budgets = new SqliteBudgetTables(db);
    this.#retention = new SqliteRetention(db);
    this.#inTransaction = db.transaction((fn: () => unknown) => fn());
    this.#completions = new GroupCommit((batch) => this.#bookkeeping(() => this.#applyCompletions(batch)));
    // Ingest commits are synced (see #durable): a group is many sidecars' batches for one flush.
    // The deliveries are claimable as soon as the transaction commits (onCommitted), while
    // the flush is in flight: a crash loses nothing a sidecar was told is stored.
    this.#ingests = new GroupCommit((batch) => {
      const now = Date.now();
      return this.#durable(
        () => {
          const results = batch.map((item) => this.#ingestOne(item, now));
          const rollups = new RollupBatch();
          for (const result of results) {
            for (const stored of result.stored) rollups.event(stored.event, now);
            for (const stored of result.generated ?? []) rollups.event(stored.event, now);
          }
          this.#writeRollups(rollups);
          return results;
        },
        (results) => {
          for (const [i, item] of batch.entries()) committed(item.onCommitted, results[i]?.endpoints ?? []);
        },
      );
    }, 256);
    this.#wal = new WalSync(`${path}-wal`);
    this.#checkpointer = new Checkpointer({ dbPath: path, ...(logger ? { logger } : {}) });
    this.#pending = this.#s.countPending.get() ?? 0;
  }

  // Durability (sqlite-durability.ts): every commit runs with synchronous=NORMAL, so a
  // process crash loses nothing; what must also survive power loss waits for a flush of the
  // WAL done off the main thread. ingest() is followed by an ack that lets a sidecar drop
  // the events from its spool, and endpoint, key and replay changes are what an operator
  // expects kept: those are #durable. Delivery bookkeeping (claims, attempt results, lease
  // releases) and purges are #bookkeeping: power loss can forget the last few, which only
  // means a delivery goes out again (at-least-once allows that) or a purge runs again.
  async #durable<T>(fn: () => T, beforeFlush?: (result: T) => void): Promise<T> {
    const result = this.#write(fn);
    beforeFlush?.(result);
    await this.#wal.sync();
    return result;
  }

  #bookkeeping<T>(fn: () => T): T {
    return this.#write(fn);
  }

  /**
   * One write transaction, which first records the attempt results waiting for theirs (so
   * a claim right after results costs one transaction, not two, and sees them); the pending
   * count follows what commits.
   */
  #write<T>(fn: () => T): T {
    return this.#completions.commitWith(
      () => this.#transaction(fn),
      (batch, write) => {
        let results: CompleteResult[] = [];
        const value = this.#transaction(() => {
          results = this.#applyCompletions(batch);
          return write();
        });
        return { results, value };
      },
    );
  }

  #transaction<T>(fn: () => T): T {
    // Nested (a write made inside another's transaction): its changes count with the outer one's.
    if (this.#db.inTransaction) return fn();
    this.#pendingDelta = 0;
    try {
      const result = this.#inTransaction.immediate(fn) as T;
      this.#pending += this.#pendingDelta;
      return result;
    } catch (err) {
      throw unavailableOr(err, this.path);
    } finally {
      this.#pendingDelta = 0;
    }
  }

  /** Attempt results, in a transaction the caller holds. */
  #applyCompletions(batch: readonly QueuedCompletion[]): CompleteResult[] {
    const now = Date.now();
    const rollups = new RollupBatch();
    const results = batch.map((completion) => this.#completeOne(completion, now, rollups));
    this.#writeRollups(rollups);
    return results;
  }

  /** Every reader of deliveries calls this first, so it sees every attempt already reported. */
  #flushCompletions(): void {
    this.#completions.flushSync();
  }

  // ---- events -------------------------------------------------------------------------

  async ingest(
    events: readonly Event[],
    route: (event: Event) => readonly string[],
    accounting?: SpendAccounting,
    onCommitted?: (endpoints: readonly string[]) => void,
  ): Promise<IngestResult> {
    checkIngest(events);
    if (this.#closed) throw new Error(`SQLite store ${this.path} is closed`);
    return this.#ingests.submit({ events, route, accounting, onCommitted });
  }

  #ingestOne({ events, route, accounting }: QueuedIngest, now: number): IngestResult {
    const stored: StoredEvent[] = [];
    const endpoints = new Set<string>();
    let duplicates = 0;
    let deliveries = 0;
    const spend = accounting && this.#budgets.newBatch(accounting);
    for (const event of events) {
      const columns = eventColumns(event);
      const inserted = this.#s.insertEvent.get({
        id: event.id,
        ...columns,
        ingestedAt: now,
        body: toBinary(EventSchema, event),
      });
      if (inserted === undefined) {
        duplicates++;
        continue;
      }
      stored.push({ seq: inserted.seq, event, ingestedAt: now, cursor: String(inserted.seq) });
      const source: DeliverySource = {
        eventSeq: inserted.seq,
        eventId: event.id,
        eventType: columns.type,
        orderKey: columns.orderKey,
        orderIndex: columns.orderIndex,
      };
      for (const endpoint of new Set(route(event))) {
        this.#insertDelivery(source, endpoint, "", now);
        endpoints.add(endpoint);
        deliveries++;
      }
      if (spend) this.#budgets.account(event, spend, now, (e) => this.#storeGenerated(e, route, now, endpoints));
    }
    if (!spend) return { stored, duplicates, deliveries, endpoints: [...endpoints] };
    return {
      stored,
      duplicates,
      deliveries: deliveries + spend.deliveries,
      endpoints: [...endpoints],
      generated: spend.generated,
      spend: this.#budgets.finish(spend, now),
    };
  }

  async readFeed(after: string | undefined, limit: number): Promise<StoredEvent[]> {
    const afterSeq = after === undefined ? 0 : parseSeqCursor(after);
    return this.#s.eventsAfter.all(afterSeq, positiveInteger(limit, "readFeed limit")).map((row) => ({
      seq: row.seq,
      event: decodeEvent(row.body, row.seq),
      ingestedAt: row.ingested_at,
      cursor: String(row.seq),
    }));
  }

  async feedHead(): Promise<string> {
    return String(this.#s.lastEventSeq.get() ?? 0);
  }

  compareCursors(a: string, b: string): number {
    return parseSeqCursor(a) - parseSeqCursor(b);
  }

  async feedCursorSince(timeMs: number): Promise<string> {
    const first = this.#s.firstEventSeqSince.get(timeMs);
    return first === undefined ? await this.feedHead() : String(first - 1);
  }

  async countEvents(sinceMs?: number, orgId?: string): Promise<number> {
    if (orgId !== undefined) return this.#s.countOrgEventsSince.get(sinceMs ?? 0, orgId) ?? 0;
    return (sinceMs === undefined ? this.#s.countEvents.get() : this.#s.countEventsSince.get(sinceMs)) ?? 0;
  }

  // ---- endpoints and their signing keys -------------------------------------------------

  async listEndpoints(): Promise<EndpointRecord[]> {
    this.#flushCompletions();
    return this.#s.listEndpoints.all({ now: Date.now() }).map(toEndpointRecord);
  }

  async getEndpoint(name: string): Promise<EndpointRecord | undefined> {
    this.#flushCompletions();
    const row = this.#s.endpointByName.get({ now: Date.now(), name });
    return row && toEndpointRecord(row);
  }

  async createEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord> {
    validateEndpoint(endpoint);
    requireSecret(secret, endpoint.name);
    const now = Date.now();
    return this.#durable(() => {
      if (this.#s.endpointByName.get({ now, name: endpoint.name })) {
        throw new StoreConflictError(`endpoint "${endpoint.name}" already exists`);
      }
      try {
        this.#s.insertEndpoint.run(endpointParams(endpoint, "", "", now));
      } catch (err) {
        if (isUniqueViolation(err)) throw new StoreConflictError(`endpoint "${endpoint.name}" already exists`);
        throw err;
      }
      this.#insertKey(endpoint.name, secret, now);
      return this.#endpointRecord(endpoint.name, now);
    });
  }

  async upsertEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord> {
    validateEndpoint(endpoint);
    requireSecret(secret, endpoint.name);
    const now = Date.now();
    const configSecret = this.#box.seal(secret, configSecretContext(endpoint.name));
    return this.#durable(() => {
      const existing = this.#s.endpointByName.get({ now, name: endpoint.name });
      if (existing === undefined) {
        this.#s.insertEndpoint.run(endpointParams(endpoint, "", configSecret, now));
        this.#insertKey(endpoint.name, secret, now);
        return this.#endpointRecord(endpoint.name, now);
      }
      const sameSecret =
        existing.config_secret !== "" &&
        this.#box.open(existing.config_secret, configSecretContext(endpoint.name)) === secret;
      const plan = upsertPlan(endpoint, existing.disabled_reason, sameSecret);
      this.#s.updateEndpoint.run(
        endpointParams(endpoint, plan.disabledReason, sameSecret ? existing.config_secret : configSecret, now),
      );
      if (plan.replaceKeys) this.#replaceKeys(endpoint.name, secret, now);
      return this.#endpointRecord(endpoint.name, now);
    });
  }

  async updateEndpoint(name: string, patch: EndpointPatch): Promise<EndpointRecord> {
    if (patch.secret !== undefined) requireSecret(patch.secret, name);
    const now = Date.now();
    return this.#durable(() => {
      const row = this.#s.endpointByName.get({ now, name });
      if (row === undefined) throw new StoreNotFoundError(`endpoint "${name}" not found`);
      const { next, disabledReason } = patchedEndpoint(toEndpointRecord(row), patch);
      this.#s.updateEndpoint.run(endpointParams(next, disabledReason, row.config_secret, now));
      if (patch.secret !== undefined) this.#replaceKeys(name, patch.secret, now);
      return this.#endpointRecord(name, now);
    });
  }

  async deleteEndpoint(name: string): Promise<boolean> {
    const now = Date.now();
    return this.#durable(() => {
      if (this.#s.endpointByName.get({ now, name }) === undefined) return false;
      this.#pendingDelta -= this.#s.failEndpointDeliveries.run({
        endpoint: name,
        error: "endpoint deleted",
        now,
      }).changes;
      this.#s.deleteKeys.run(name);
      this.#s.deleteEndpoint.run(name);
      return true;
    });
  }

  async addSigningKey(endpoint: string, secret: string, previousExpireAt: number): Promise<void> {
    requireSecret(secret, endpoint);
    finiteNumber(previousExpireAt, "previousExpireAt");
    const now = Date.now();
    await this.#durable(() => {
      if (this.#s.endpointByName.get({ now, name: endpoint }) === undefined) {
        throw new StoreNotFoundError(`endpoint "${endpoint}" not found`);
      }
      this.#s.deleteExpiredKeys.run({ endpoint, now });
      this.#s.expireKeys.run({ endpoint, expiresAt: previousExpireAt });
      this.#insertKey(endpoint, secret, now);
      this.#s.touchEndpoint.run({ name: endpoint, now });
    });
  }

  async activeSigningKeys(endpoint: string, now: number): Promise<SigningKey[]> {
    this.#flushCompletions();
    const orgId = this.#oneOff.endpointOrg.get(endpoint);
    if (orgId) return this.activeOrgSigningKeys(orgId, now);
    return this.#s.activeKeys.all({ endpoint, now }).map((row) => ({
      id: row.id,
      secret: this.#box.open(row.secret, signingKeyContext(row.id)),
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    }));
  }

  // ---- org-scoped API tokens (digests only) ------------------------------------------------

  async createToken(token: NewToken): Promise<TokenRecord> {
    validateNewToken(token);
    return this.#durable(() => {
      try {
        this.#s.insertToken.run(token);
      } catch (err) {
        if (isUniqueViolation(err)) throw new StoreConflictError(`token "${token.id}" already exists`);
        throw err;
      }
      return { ...token, revokedAt: null };
    });
  }

  async listTokens(): Promise<TokenRecord[]> {
    return this.#s.listTokens.all().map(toTokenRecord);
  }

  async revokeToken(id: string, now: number): Promise<TokenRecord | undefined> {
    return this.#durable(() => {
      this.#s.revokeToken.run({ id, now });
      const row = this.#s.tokenById.get(id);
      return row && toTokenRecord(row);
    });
  }

  // ---- one-off endpoints (x-aigw-webhook-url) and org signing keys ------------------------

  async ensureOneOffEndpoint(
    name: string,
    orgId: string,
    url: string,
    newSecret: () => string,
  ): Promise<{ endpoint: EndpointRecord; createdOrgKey: boolean }> {
    if (orgId === "") throw new TypeError(`one-off endpoint "${name}": org id must not be empty`);
    const now = Date.now();
    // Most calls find both in place: answer those without a write transaction.
    const found = this.#s.endpointByName.get({ now, name });
    if (
      found !== undefined &&
      found.one_off === 1 &&
      found.org_id === orgId &&
      found.url === url &&
      found.key_count > 0
    ) {
      return { endpoint: toEndpointRecord(found), createdOrgKey: false };
    }
    return this.#durable(() => {
      const existing = this.#s.endpointByName.get({ now, name });
      if (existing === undefined) {
        const endpoint: NewEndpoint = { name, url, enabled: true, eventTypes: [], failoverTo: "" };
        this.#s.insertEndpoint.run({ ...endpointParams(endpoint, "", "", now), orgId, oneOff: 1 });
      } else if (existing.one_off !== 1 || existing.org_id !== orgId || existing.url !== url) {
        throw new StoreConflictError(`endpoint "${name}" exists and is not the one-off endpoint of this org and URL`);
      }
      let createdOrgKey = false;
      if (this.#oneOff.activeOrgKeys.all({ orgId, now }).length === 0) {
        this.#insertOrgKey(orgId, newSecret(), now);
        createdOrgKey = true;
      }
      return { endpoint: this.#endpointRecord(name, now), createdOrgKey };
    });
  }

  async addOrgSigningKey(orgId: string, secret: string, previousExpireAt: number): Promise<void> {
    if (orgId === "") throw new TypeError("org signing key: org id must not be empty");
    requireSecret(secret, `org ${orgId}`);
    finiteNumber(previousExpireAt, "previousExpireAt");
    const now = Date.now();
    await this.#durable(() => {
      this.#oneOff.deleteExpiredOrgKeys.run({ orgId, now });
      this.#oneOff.expireOrgKeys.run({ orgId, expiresAt: previousExpireAt });
      this.#insertOrgKey(orgId, secret, now);
    });
  }

  async activeOrgSigningKeys(orgId: string, now: number): Promise<SigningKey[]> {
    return this.#oneOff.activeOrgKeys.all({ orgId, now }).map((row) => ({
      id: row.id,
      secret: this.#box.open(row.secret, orgKeyContext(row.id)),
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    }));
  }

  #insertOrgKey(orgId: string, secret: string, now: number): void {
    const id = `okey_${ulid(now)}`;
    this.#oneOff.insertOrgKey.run({ id, orgId, secret: this.#box.seal(secret, orgKeyContext(id)), now });
  }

  #insertKey(endpoint: string, secret: string, now: number): void {
    const id = `key_${ulid(now)}`;
    this.#s.insertKey.run({ id, endpoint, secret: this.#box.seal(secret, signingKeyContext(id)), now });
  }

  #replaceKeys(endpoint: string, secret: string, now: number): void {
    this.#s.deleteKeys.run(endpoint);
    this.#insertKey(endpoint, secret, now);
  }

  #endpointRecord(name: string, now: number): EndpointRecord {
    const row = this.#s.endpointByName.get({ now, name });
    if (row === undefined) throw new StoreNotFoundError(`endpoint "${name}" not found`);
    return toEndpointRecord(row);
  }

  // ---- deliveries ------------------------------------------------------------------------

  async claim(options: ClaimOptions): Promise<LaneClaim[]> {
    const leaseUntil = checkClaim(options);
    const { now, leaseOwner, lanes } = options;
    if (lanes.length === 0) return [];
    // One process owns a SQLite file, so its scheduler's caps are the only ones: options.caps
    // need no enforcing here (PostgreSQL counts every replica's leases).
    const claimed = this.#bookkeeping(() => {
      const token = this.#s.nextLeaseToken.get() as number;
      return lanes.map(({ endpoint, limit }) => {
        // A paused endpoint is not a lane: nothing claimed, nothing reported due.
        if (this.#s.endpointPaused.get(endpoint) !== undefined) {
          return { endpoint, rows: [] as DeliveryWithBodyRow[], nextDueAt: undefined, token };
        }
        const rows = this.#s.claimLane.all({ endpoint, now, limit });
        if (rows.length > 0) {
          const seqs = JSON.stringify(rows.map((row) => row.seq));
          this.#s.lease.run({ owner: leaseOwner, until: leaseUntil, token, seqs });
        }
        let nextDueAt: number | undefined;
        if (rows.length < limit) {
          const due = this.#s.laneNextDue.get(endpoint);
          nextDueAt = due === undefined || due >= BLOCKED_DUE_AT ? undefined : due;
        }
        return { endpoint, rows, nextDueAt, token };
      });
    });
    return claimed.map(({ endpoint, rows, nextDueAt, token }) => ({
      endpoint,
      deliveries: rows.map((row) => toClaimedDelivery(row, leaseOwner, leaseUntil, token)),
      nextDueAt,
    }));
  }

  async pendingLanes(after: string, limit: number): Promise<PendingLane[]> {
    this.#flushCompletions();
    positiveInteger(limit, "pendingLanes limit");
    const paused = new Set(this.#s.pausedNames.all());
    const lanes: PendingLane[] = [];
    // Lanes left out (paused, or only blocked rows) do not shorten a page: read on.
    for (let cursor = after; ; ) {
      const rows = this.#s.pendingLanes.all({ after: cursor, limit });
      for (const row of rows) {
        if (row.due_at < BLOCKED_DUE_AT && !paused.has(row.endpoint)) {
          lanes.push({ endpoint: row.endpoint, dueAt: row.due_at });
        }
      }
      const last = rows[rows.length - 1];
      if (rows.length < limit || last === undefined || lanes.length >= limit) break;
      cursor = last.endpoint;
    }
    return lanes.slice(0, limit);
  }

  /**
   * Completions are group-committed: those arriving in the same event-loop turn (a pool of
   * workers finishing together) share one transaction; if it fails, each is committed
   * alone, so one bad completion fails alone. The promise resolves after the commit.
   */
  completeAttempt(delivery: LeasedDelivery, attempt: NewAttempt, outcome: AttemptOutcome): Promise<CompleteResult> {
    if (this.#closed) return Promise.reject(new Error(`SQLite store ${this.path} is closed`));
    try {
      checkOutcome(outcome);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#completions.submit({ delivery, attempt, outcome });
  }

  #writeRollups(rollups: RollupBatch): void {
    for (const row of rollups.rows()) this.#s.upsertRollup.run(row);
  }

  #completeOne({ delivery, attempt, outcome }: QueuedCompletion, now: number, rollups: RollupBatch): CompleteResult {
    const row = this.#s.deliveryById.get(delivery.id);
    if (
      row === undefined ||
      row.status !== "pending" ||
      row.lease_owner !== delivery.leaseOwner ||
      row.lease_token !== delivery.leaseToken
    ) {
      return { recorded: false };
    }
    const next = nextDeliveryState(
      { attemptCount: row.attempt_count, nextAttemptAt: row.next_attempt_at },
      attempt,
      outcome,
      now,
    );
    this.#s.insertAttempt.run({
      deliveryId: row.id,
      number: next.attemptCount,
      endpoint: row.endpoint,
      startedAt: attempt.startedAt,
      statusCode: attempt.statusCode,
      latencyMs: attempt.latencyMs,
      error: attempt.error,
      responseBody: attempt.responseBody.slice(0, MAX_RESPONSE_BODY_CHARS),
    });
    const wasEnabled =
      next.disableEndpoint !== undefined && this.#s.endpointByName.get({ now, name: row.endpoint })?.enabled === 1;
    if (next.disableEndpoint !== undefined) {
      this.#s.disableEndpoint.run({ name: row.endpoint, reason: next.disableEndpoint, now });
    }
    const meta = this.#s.eventMeta.get(row.event_seq);
    const eventTimeMs = meta === undefined ? undefined : meta.time_ms > 0 ? meta.time_ms : meta.ingested_at;
    const delivered = next.status === "delivered" && eventTimeMs !== undefined;
    rollups.attempt({
      now,
      endpoint: row.endpoint,
      eventType: row.event_type,
      orgId: meta?.org_id ?? "",
      outcome: outcomeName(next.status),
      latencyMs: attempt.latencyMs,
      eventTimeMs: delivered ? eventTimeMs : undefined,
    });
    this.#s.finishAttempt.run({
      seq: row.seq,
      eventLatencyMs: delivered ? eventLatencyMs(eventTimeMs, now) : null,
      status: next.status,
      attemptCount: next.attemptCount,
      nextAttemptAt: next.nextAttemptAt,
      lastError: next.lastError,
      finishedAt: next.finishedAt,
    });
    if (next.status !== "pending") {
      this.#pendingDelta--;
      if (row.order_key !== "") this.#s.unblockNext.run({ endpoint: row.endpoint, orderKey: row.order_key });
    }
    const result: CompleteResult = { recorded: true };
    // Operator events are rare: nothing is allocated for them on a delivered attempt.
    const operator = this.#operatorRoute !== undefined && (wasEnabled || next.status === "dead_lettered");
    const fx: Fx | undefined = operator ? { generated: [], endpoints: new Set() } : undefined;
    if (wasEnabled && fx) {
      const endpoint = { name: row.endpoint, orgId: this.#endpointOrg(row.endpoint, now) };
      const pending = this.#s.countEndpointPending.get(row.endpoint) ?? 0;
      const last = { statusCode: attempt.statusCode, lastError: next.lastError };
      const event = endpointDisabledEvent(endpoint, "gone", next.disableEndpoint ?? "", last, pending, now);
      this.#storeOperator(event, now, fx);
    }
    if (next.failoverTo && !this.#failoverVisited(row, next.failoverTo)) {
      const target = this.#s.endpointByName.get({ now, name: next.failoverTo });
      if (target?.enabled) result.failoverDelivery = this.#insertDelivery(sourceOf(row), target.name, row.id, now);
    }
    if (delivered) result.eventLatencyMs = eventLatencyMs(eventTimeMs, now);
    if (next.status === "dead_lettered" && !result.failoverDelivery && fx) {
      const exhausted = deliveryExhaustedEvent(
        {
          id: row.id,
          endpoint: row.endpoint,
          eventId: row.event_id,
          eventType: row.event_type,
          attemptCount: next.attemptCount,
          lastError: next.lastError,
          originDeliveryId: row.origin_delivery_id,
        },
        this.#endpointOrg(row.endpoint, now),
        now,
      );
      this.#storeOperator(exhausted, now, fx);
    }
    if (fx && fx.generated.length > 0) {
      result.generated = fx.generated;
      result.endpoints = [...fx.endpoints];
    }
    return result;
  }

  #endpointOrg(name: string, now: number): string {
    return this.#s.endpointByName.get({ now, name })?.org_id ?? "";
  }

  /** Stores an operator event (operator-events.ts) and its deliveries inside the running transaction. */
  #storeOperator(event: Event | undefined, now: number, fx: Fx): void {
    // Made only once the control plane routes them (a bare store, as in tools and tests, makes none).
    if (event === undefined || this.#operatorRoute === undefined) return;
    const route = (e: Event) => operatorTargets(this.#operatorRoute, e);
    fx.generated.push(this.#storeGenerated(event, route, now, fx.endpoints).stored);
  }

  routeOperatorEvents(route: OperatorRoute): void {
    this.#operatorRoute = route;
  }

  /**
   * Whether `target` is the delivery's own endpoint or one its chain of origins (failover
   * copies, replays) passed: failover chains are validated, and this is the backstop that
   * keeps any chain from sending one event round in circles.
   */
  #failoverVisited(row: DeliveryRow, target: string): boolean {
    if (row.endpoint === target) return true;
    let origin = row.origin_delivery_id;
    for (let hop = 0; origin !== "" && hop < MAX_FAILOVER_HOPS; hop++) {
      const previous = this.#s.deliveryById.get(origin);
      if (previous === undefined) return false;
      if (previous.endpoint === target) return true;
      origin = previous.origin_delivery_id;
    }
    return origin !== "";
  }

  async releaseLeases(leaseOwner: string): Promise<number> {
    return this.#bookkeeping(() => this.#s.releaseLeases.run(leaseOwner).changes);
  }

  async createDeliveries(
    eventSeq: number,
    endpoints: readonly string[],
    originDeliveryId?: string,
  ): Promise<DeliveryRecord[]> {
    const now = Date.now();
    return this.#durable(() => {
      const event = this.#s.eventBySeq.get(eventSeq);
      if (event === undefined) throw new StoreNotFoundError(`event seq ${eventSeq} not found`);
      const source: DeliverySource = {
        eventSeq,
        eventId: event.id,
        eventType: event.type,
        orderKey: event.order_key,
        orderIndex: event.token_index,
      };
      return [...new Set(endpoints)].map((endpoint) => {
        if (this.#s.endpointByName.get({ now, name: endpoint }) === undefined) {
          throw new StoreNotFoundError(`endpoint "${endpoint}" not found`);
        }
        return this.#insertDelivery(source, endpoint, originDeliveryId ?? "", now);
      });
    });
  }

  async getDelivery(id: string): Promise<DeliveryDetail | undefined> {
    this.#flushCompletions();
    const row = this.#s.deliveryWithBody.get(id);
    if (row === undefined) return undefined;
    return {
      delivery: toDeliveryRecord(row),
      attempts: this.#s.attemptsOf.all(id).map(toAttemptRecord),
      event: decodeEvent(row.body, row.event_seq),
    };
  }

  async listDeliveries(filter: DeliveryFilter): Promise<{ deliveries: DeliveryRecord[]; nextPageToken: string }> {
    this.#flushCompletions();
    checkDeliveryFilter(filter);
    const pageSize = filter.pageSize;
    const beforeSeq = filter.pageToken ? decodePageToken(filter.pageToken) : Number.MAX_SAFE_INTEGER;
    const params: Record<string, unknown> = { beforeSeq, limit: pageSize + 1 };
    if (filter.endpoint !== undefined) params.endpoint = filter.endpoint;
    if (filter.status !== undefined) params.status = filter.status;
    if (filter.eventId !== undefined) params.eventId = filter.eventId;
    if (filter.orgId !== undefined) params.orgId = filter.orgId;
    const rows = this.#listStatement(filter).all(params);
    const page = rows.slice(0, pageSize);
    const last = page[page.length - 1];
    return {
      deliveries: page.map(toDeliveryRecord),
      nextPageToken: rows.length > pageSize && last ? encodePageToken(last.seq) : "",
    };
  }

  /** One statement per filter shape, so each uses its own index instead of `? IS NULL OR`. */
  #listStatement(filter: DeliveryFilter): Stmt<Record<string, unknown>, DeliveryRow> {
    const conditions = ["seq < @beforeSeq"];
    if (filter.endpoint !== undefined) conditions.push("endpoint = @endpoint");
    if (filter.status !== undefined) conditions.push("status = @status");
    if (filter.eventId !== undefined) conditions.push("event_seq = (SELECT seq FROM events WHERE id = @eventId)");
    if (filter.orgId !== undefined) conditions.push("endpoint IN (SELECT name FROM endpoints WHERE org_id = @orgId)");
    const sql = `SELECT * FROM deliveries WHERE ${conditions.join(" AND ")} ORDER BY seq DESC LIMIT @limit`;
    let statement = this.#listStatements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql) as Stmt<Record<string, unknown>, DeliveryRow>;
      this.#listStatements.set(sql, statement);
    }
    return statement;
  }

  async listAttempts(deliveryId: string): Promise<AttemptRecord[]> {
    this.#flushCompletions();
    return this.#s.attemptsOf.all(deliveryId).map(toAttemptRecord);
  }

  async replayDelivery(id: string): Promise<DeliveryRecord> {
    const now = Date.now();
    return this.#durable(() => {
      const row = this.#s.deliveryById.get(id);
      if (row === undefined) throw new StoreNotFoundError(`delivery "${id}" not found`);
      if (this.#s.endpointByName.get({ now, name: row.endpoint }) === undefined) {
        throw new StoreNotFoundError(`endpoint "${row.endpoint}" of delivery "${id}" no longer exists`);
      }
      return this.#insertDelivery(sourceOf(row), row.endpoint, row.id, now);
    });
  }

  replayDeadLettered(endpoint?: string, orgId?: string): Promise<number> {
    return replayAllDeadLettered(this, endpoint, orgId);
  }

  async replayWindow(options: ReplayWindow): Promise<ReplayStep> {
    checkReplayWindow(options);
    const cursor = decodeReplayCursor(options.after);
    const now = Date.now();
    return this.#durable(() => {
      const rows = this.#s.replayCandidates.all({
        ...replayParams(options),
        afterAt: cursor.finishedAt,
        afterSeq: cursor.seq,
        limit: options.limit,
      });
      let replayed = 0;
      const endpoints = new Set<string>();
      for (const row of rows) {
        if (row.ep_enabled !== 1 || row.replayed === 1 || row.pending_again === 1) continue;
        this.#insertDelivery(sourceOf(row), row.endpoint, row.id, now);
        endpoints.add(row.endpoint);
        replayed++;
      }
      const last = rows[rows.length - 1];
      return {
        replayed,
        skipped: rows.length - replayed,
        next:
          rows.length < options.limit || last === undefined
            ? undefined
            : encodeReplayCursor(last.finished_at ?? 0, last.seq),
        endpoints: [...endpoints],
      };
    });
  }

  async countReplayWindow(options: Omit<ReplayWindow, "after" | "limit">): Promise<number> {
    checkReplayWindow(options);
    this.#flushCompletions();
    return this.#s.countReplayWindow.get(replayParams(options)) ?? 0;
  }

  async countHeld(): Promise<number> {
    this.#flushCompletions();
    return this.#s.countHeld.get() ?? 0;
  }

  async countEndpointPending(endpoint: string): Promise<number> {
    this.#flushCompletions();
    return this.#s.countEndpointPending.get(endpoint) ?? 0;
  }

  async pauseEndpoint(name: string, paused: boolean): Promise<{ endpoint: EndpointRecord; pending: number }> {
    const now = Date.now();
    return this.#durable(() => {
      const row = this.#s.endpointByName.get({ now, name });
      if (row === undefined) throw new StoreNotFoundError(`endpoint "${name}" not found`);
      // Pausing again keeps the first pause's time.
      if ((row.paused === 1) !== paused) {
        this.#s.setPaused.run({ name, paused: paused ? 1 : 0, pausedAt: paused ? now : null, now });
      }
      return { endpoint: this.#endpointRecord(name, now), pending: this.#s.countEndpointPending.get(name) ?? 0 };
    });
  }

  async autoDisableEndpoint(name: string, why: AutoDisable): Promise<AutoDisableEffects> {
    const now = Date.now();
    return this.#durable((): AutoDisableEffects => {
      const row = this.#s.endpointByName.get({ now, name });
      if (row === undefined || row.enabled !== 1) return NO_EFFECTS;
      if (why.runStartedAt !== undefined) {
        const runInStore = this.#cluster.failingSince.get(name) ?? 0;
        if (!runStillGoing(runInStore, why.runStartedAt)) return { ...NO_EFFECTS, runInStore };
      }
      this.#s.disableEndpoint.run({ name, reason: why.detail, now });
      const fx: Fx = { generated: [], endpoints: new Set() };
      const pending = this.#s.countEndpointPending.get(name) ?? 0;
      const event = endpointDisabledEvent(
        { name, orgId: row.org_id },
        "failing",
        why.detail,
        { statusCode: why.statusCode, lastError: why.lastError },
        pending,
        now,
        { since: why.failingSince, attempts: why.failedAttempts },
      );
      this.#storeOperator(event, now, fx);
      return { generated: fx.generated, endpoints: [...fx.endpoints] };
    });
  }

  async countPending(): Promise<number> {
    this.#flushCompletions();
    return this.#pending;
  }

  async stats(sinceMs: number): Promise<EndpointStatsRecord[]> {
    this.#flushCompletions();
    const stats = new StatsBuilder();
    // One read transaction, so the three queries see the same snapshot.
    this.#inTransaction.deferred(() => {
      for (const name of this.#s.endpointNames.all()) stats.entry(name);
      for (const { endpoint, status, n } of this.#s.statusCounts.all(sinceMs)) stats.count(endpoint, status, n);
      let endpoint = "";
      let latencies: number[] = [];
      for (const row of this.#s.latencies.iterate(sinceMs)) {
        if (row.endpoint !== endpoint) {
          stats.latencies(endpoint, latencies);
          endpoint = row.endpoint;
          latencies = [];
        }
        latencies.push(row.latency_ms);
      }
      stats.latencies(endpoint, latencies);
      for (const { endpoint, reason, n } of this.#s.failureReasons.all(sinceMs)) stats.reason(endpoint, reason, n);
    });
    return stats.build();
  }

  async seriesRows(query: SeriesQuery): Promise<SeriesRowRecord[]> {
    this.#flushCompletions();
    const sql = seriesSql(query, () => "?");
    let statement = this.#seriesStatements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql) as Database.Statement<unknown[], SeriesRowRecord>;
      this.#seriesStatements.set(sql, statement);
    }
    const read = statement;
    // One snapshot: the coarse rows, and the 10 s rows compaction has not summed into them yet.
    return this.#inTransaction.deferred(() => {
      const rows = read.all(...seriesParams(query, query.res, query.from));
      if (query.res === FINEST_RES) return rows;
      const watermark = Number(this.#cluster.getSetting.get(COMPACTED_SETTING) ?? 0);
      return rows.concat(read.all(...seriesParams(query, FINEST_RES, Math.max(query.from, watermark))));
    }) as SeriesRowRecord[];
  }

  async compactRollups(until: number): Promise<number> {
    if (this.#closed) throw new Error(`SQLite store ${this.path} is closed`);
    return this.#bookkeeping(() => {
      const stored = this.#cluster.getSetting.get(COMPACTED_SETTING);
      const from = stored !== undefined ? Number(stored) : (this.#s.firstFineBucket.get(FINEST_RES) ?? until);
      const to = Math.max(from, until);
      if (to > from) for (const res of COMPACTED_RESOLUTIONS) this.#s.compactRollups.run({ res, from, until: to });
      if (stored === undefined || to > from) {
        this.#cluster.putSetting.run({ name: COMPACTED_SETTING, value: String(to), now: Date.now() });
      }
      return to;
    });
  }

  async rollupWatermark(): Promise<number> {
    return Number(this.#cluster.getSetting.get(COMPACTED_SETTING) ?? 0);
  }

  async queues(): Promise<QueueRecord[]> {
    this.#flushCompletions();
    return this.#s.queues.all().map((r) => ({
      endpoint: r.endpoint,
      pending: r.pending,
      deadLettered: r.dead_lettered,
      oldestPendingAt: r.oldest_pending ?? undefined,
    }));
  }

  async purgeRollups(cutoffs: readonly { res: number; before: number }[]): Promise<number> {
    if (this.#closed) throw new Error(`SQLite store ${this.path} is closed`);
    return this.#bookkeeping(() => {
      let n = 0;
      const watermark = Number(this.#cluster.getSetting.get(COMPACTED_SETTING) ?? 0);
      for (const { res, before } of cutoffs) {
        n += this.#s.purgeRollups.run(res, res === FINEST_RES ? Math.min(before, watermark) : before).changes;
      }
      return n;
    });
  }

  async purgeStep(options: PurgeStepOptions): Promise<PurgeStep> {
    finiteNumber(options.beforeMs, "purgeStep beforeMs");
    finiteNumber(options.now, "purgeStep now");
    positiveInteger(options.limit, "purgeStep limit");
    if (this.#closed) throw new Error(`SQLite store ${this.path} is closed`);
    return this.#bookkeeping(() =>
      this.#retention.step(options, (endpoint, orderKey) => {
        this.#pendingDelta--;
        // A stream's later tokens waited for the one deleted: let the next one go.
        if (orderKey !== "") this.#s.unblockNext.run({ endpoint, orderKey });
      }),
    );
  }

  // ---- budgets and pricing (rules in control-plane/budgets) ---------------------------------

  /** A budget event made inside ingest's transaction: stored and routed like any event. */
  #storeGenerated(event: Event, route: (event: Event) => readonly string[], now: number, endpoints: Set<string>) {
    const columns = eventColumns(event);
    const inserted = this.#s.insertEvent.get({
      id: event.id,
      ...columns,
      ingestedAt: now,
      body: toBinary(EventSchema, event),
    });
    if (inserted === undefined) throw new Error(`generated event ${event.id} collides with a stored event id`);
    const source: DeliverySource = {
      eventSeq: inserted.seq,
      eventId: event.id,
      eventType: columns.type,
      orderKey: columns.orderKey,
      orderIndex: columns.orderIndex,
    };
    let deliveries = 0;
    for (const endpoint of new Set(route(event))) {
      this.#insertDelivery(source, endpoint, "", now);
      endpoints.add(endpoint);
      deliveries++;
    }
    return { stored: { seq: inserted.seq, event, ingestedAt: now, cursor: String(inserted.seq) }, deliveries };
  }

  async listBudgets(periodOf: (limitType: BudgetLimitType) => string): Promise<BudgetRecord[]> {
    return this.#inTransaction.deferred(() => this.#budgets.listBudgets(periodOf)) as BudgetRecord[];
  }

  async putBudget(budget: BudgetSpec): Promise<void> {
    const now = Date.now();
    await this.#durable(() => this.#budgets.putBudget(budget, now));
  }

  async deleteBudget(orgId: string, limitType: BudgetLimitType): Promise<boolean> {
    return this.#durable(() => this.#budgets.deleteBudget(orgId, limitType));
  }

  async listModelPrices(): Promise<StoredModelPrice[]> {
    return this.#budgets.listModelPrices();
  }

  async putModelPrice(price: StoredModelPrice): Promise<void> {
    const now = Date.now();
    await this.#durable(() => this.#budgets.putModelPrice(price, now));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flushCompletions();
    this.#closed = true;
    await this.#wal.close();
    await this.#checkpointer.stop();
    this.#db.close();
  }

  /** Starts checkpointing in a worker thread (openSqliteStore does, once the store is usable). */
  startCheckpoints(): void {
    this.#checkpointer.start();
  }

  /** For tests and metrics: WAL flushes made for durable commits, and checkpoints run. */
  durability(): { walSyncs: number; checkpoints: number } {
    return { walSyncs: this.#wal.syncs, checkpoints: this.#checkpointer.checkpoints };
  }

  #insertDelivery(source: DeliverySource, endpoint: string, originDeliveryId: string, now: number): DeliveryRecord {
    const id = newDeliveryId();
    // Due now on the scheduler's clock (common/clock.ts), which a wall clock step does not move.
    const scheduleAt = steadyNow();
    let dueAt = scheduleAt;
    if (source.orderKey !== "") {
      const key = { endpoint, orderKey: source.orderKey, orderIndex: source.orderIndex };
      if (this.#s.orderPredecessor.get(key) !== undefined) dueAt = BLOCKED_DUE_AT;
      this.#s.blockSuccessors.run(key);
    }
    this.#pendingDelta++;
    this.#s.insertDelivery.run({
      dueAt,
      id,
      eventSeq: source.eventSeq,
      eventId: source.eventId,
      eventType: source.eventType,
      endpoint,
      originDeliveryId,
      orderKey: source.orderKey,
      orderIndex: source.orderIndex,
      now,
      scheduleAt,
    });
    return {
      id,
      eventSeq: source.eventSeq,
      eventId: source.eventId,
      eventType: source.eventType as EventType,
      endpoint,
      status: "pending",
      attemptCount: 0,
      createdAt: now,
      nextAttemptAt: scheduleAt,
      finishedAt: null,
      lastError: "",
      originDeliveryId,
      orderKey: source.orderKey,
      orderIndex: source.orderIndex,
    };
  }

  // ---- what processes on one store share (one process owns a SQLite file) ------------------

  /** Never calls: this process is the only writer. */
  watch(_watcher: StoreWatcher): () => void {
    return () => {};
  }

  async nextConfigVersion(now: number): Promise<bigint> {
    const value = this.#bookkeeping(() => this.#cluster.nextVersion.get({ now }) as string);
    return BigInt(value);
  }

  async putCircuit(circuit: CircuitRecord): Promise<OperatorEffects> {
    const now = Date.now();
    return this.#bookkeeping(() => {
      const before = circuit.open ? undefined : this.#s.circuitOf.get(circuit.endpoint);
      this.#cluster.putCircuit.run({
        endpoint: circuit.endpoint,
        open: circuit.open ? 1 : 0,
        openedAt: circuit.openedAt,
        now,
      });
      const endpoint = before?.open === 1 ? this.#s.endpointByName.get({ now, name: circuit.endpoint }) : undefined;
      if (endpoint === undefined) return NO_EFFECTS;
      const fx: Fx = { generated: [], endpoints: new Set() };
      this.#storeOperator(
        endpointRecoveredEvent({ name: endpoint.name, orgId: endpoint.org_id }, before?.opened_at ?? 0, now),
        now,
        fx,
      );
      return { generated: fx.generated, endpoints: [...fx.endpoints] };
    });
  }

  async listCircuits(): Promise<CircuitRecord[]> {
    return this.#cluster.circuits
      .all()
      .map((r) => ({ endpoint: r.endpoint, open: r.open === 1, openedAt: r.opened_at, failingSince: r.failing_since }));
  }

  async startFailingRun(endpoint: string, since: number): Promise<number> {
    const now = Date.now();
    return this.#bookkeeping(() => this.#cluster.startFailingRun.get({ endpoint, since, now }) as number);
  }

  async endFailingRun(endpoint: string): Promise<void> {
    const now = Date.now();
    this.#bookkeeping(() => this.#cluster.endFailingRun.run({ endpoint, now }));
  }

  async putSidecars(owner: string, sidecars: readonly SidecarRecord[], now: number): Promise<void> {
    if (sidecars.length === 0) return;
    this.#bookkeeping(() => {
      for (const s of sidecars) {
        this.#cluster.putSidecar.run({
          id: s.id,
          orgId: s.orgId,
          app: s.app,
          owner,
          now,
          version: s.version ?? "",
          spoolBatches: s.spoolBatches ?? 0,
          spoolBytes: s.spoolBytes ?? 0,
        });
      }
    });
  }

  async removeSidecar(id: string): Promise<void> {
    this.#bookkeeping(() => this.#cluster.removeSidecar.run(id));
  }

  async listSidecars(since: number): Promise<SidecarRecord[]> {
    return this.#cluster.sidecars.all(since).map(sidecarRecord);
  }

  async getSetting(name: string): Promise<string | undefined> {
    return this.#cluster.getSetting.get(name) ?? undefined;
  }

  async putSetting(name: string, value: string): Promise<void> {
    await this.#durable(() => this.#cluster.putSetting.run({ name, value, now: Date.now() }));
  }

  /** For tests and diagnostics: the plan SQLite picks for the claim query. */
  explainClaim(): string[] {
    const sql = this.#s.claimLane.source;
    return (
      this.#db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all({ endpoint: "", now: 0, limit: 1 }) as { detail: string }[]
    ).map((row) => row.detail);
  }

  /** For tests and diagnostics: a connection pragma's current value. */
  pragma(name: string): unknown {
    return this.#db.pragma(name, { simple: true });
  }

  /** Verifies the key against the check value sealed at first open, or seals one. */
  async verifyKey(): Promise<void> {
    const check = this.#s.getMeta.get(KEY_CHECK_NAME);
    if (check === undefined) {
      await this.#durable(() =>
        this.#s.putMeta.run({ name: KEY_CHECK_NAME, value: this.#box.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_CONTEXT) }),
      );
      return;
    }
    try {
      this.#box.open(check.value, KEY_CHECK_CONTEXT);
    } catch {
      throw new Error(
        `SQLite store ${this.path}: the encryption key does not match the one its signing secrets were sealed with ` +
          `(check storage.encryption_key or the key file ${this.path}.key)`,
      );
    }
  }
}

/**
 * Opens (creating if needed) the SQLite store at `path`, with its parent directories,
 * migrated to the current schema, and with the key for signing secrets checked.
 */
export async function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<SqliteStore> {
  const fullPath = resolve(path);
  await mkdir(dirname(fullPath), { recursive: true });
  let db: Database.Database;
  let store: SqliteStore | undefined;
  try {
    db = new Database(fullPath);
  } catch (err) {
    throw new Error(`cannot open SQLite store ${fullPath}: ${(err as Error).message}`, { cause: err });
  }
  try {
    db.pragma("journal_mode = WAL");
    // Commits never flush on this thread; durable ones wait for WalSync, and checkpoints
    // run in their own thread (sqlite-durability.ts). A WAL that grew is cut back after a checkpoint.
    db.pragma("synchronous = NORMAL");
    db.pragma("wal_autocheckpoint = 0");
    db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
    db.pragma(`busy_timeout = ${OPEN_BUSY_TIMEOUT_MS}`);
    db.pragma("foreign_keys = ON");
    db.pragma("cache_size = -65536");
    migrate(db, fullPath, options.logger);
    const hasSealedSecrets =
      db.prepare("SELECT 1 FROM meta WHERE name = ?").get(KEY_CHECK_NAME) !== undefined ||
      db.prepare("SELECT 1 FROM signing_keys LIMIT 1").get() !== undefined;
    const box = options.encryptionKey
      ? SecretBox.fromBase64(options.encryptionKey, "storage.encryption_key")
      : await loadOrCreateKeyFile(keyFileBeside(fullPath), !hasSealedSecrets, options.logger);
    store = new SqliteStore(db, fullPath, box, options.logger);
    await store.verifyKey();
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    store.startCheckpoints();
    return store;
  } catch (err) {
    if (store) await store.close().catch(() => {});
    else db.close();
    const unavailable = unavailableOr(err, fullPath);
    if (unavailable !== err) throw unavailable;
    if (err instanceof Error && /not a database|malformed/i.test(err.message)) {
      throw new Error(`cannot open SQLite store ${fullPath}: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

/** SQLite's "not now" errors as StoreUnavailableError with its catalogue code; anything else as it is. */
function unavailableOr(err: unknown, path: string): unknown {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== "string") return err;
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return new StoreUnavailableError(
      "AIGW_STORE_LOCKED",
      `SQLite store ${path}: the database is locked by another process (another control plane on the same file, or a tool holding a write transaction); nothing was written, and the write is tried again`,
      { cause: err },
    );
  }
  if (code === "SQLITE_FULL") {
    return new StoreUnavailableError(
      "AIGW_STORE_DISK_FULL",
      `SQLite store ${path}: the disk is full; nothing was written, and the write is tried again once there is space`,
      { cause: err },
    );
  }
  return err;
}

function toDeliveryRecord(row: DeliveryRow): DeliveryRecord {
  const record = toDeliveryFields(row);
  if (row.event_latency_ms !== null && row.event_latency_ms !== undefined) record.eventLatencyMs = row.event_latency_ms;
  return record;
}

function toDeliveryFields(row: DeliveryRow): DeliveryRecord {
  return {
    id: row.id,
    eventSeq: row.event_seq,
    eventId: row.event_id,
    eventType: row.event_type as EventType,
    endpoint: row.endpoint,
    status: row.status,
    attemptCount: row.attempt_count,
    createdAt: row.created_at,
    nextAttemptAt: row.next_attempt_at,
    finishedAt: row.finished_at,
    lastError: row.last_error,
    originDeliveryId: row.origin_delivery_id,
    orderKey: row.order_key,
    orderIndex: row.order_index,
  };
}

/** toDeliveryRecord's fields plus the claim's, added in place (an object spread is a slow clone in V8). */
function toClaimedDelivery(
  row: DeliveryWithBodyRow,
  leaseOwner: string,
  leaseUntil: number,
  leaseToken: number,
): ClaimedDelivery {
  const claimed = toDeliveryRecord(row) as ClaimedDelivery;
  claimed.eventBody = row.body;
  claimed.leaseOwner = leaseOwner;
  claimed.leaseUntil = leaseUntil;
  claimed.leaseToken = leaseToken;
  return claimed;
}

function replayParams(w: Omit<ReplayWindow, "after" | "limit">): Record<string, unknown> {
  return {
    s1: w.statuses[0],
    s2: w.statuses[1] ?? w.statuses[0],
    since: Math.max(Number.MIN_SAFE_INTEGER, Math.floor(w.since)),
    until: Math.min(Number.MAX_SAFE_INTEGER, Math.ceil(w.until)),
    endpoint: w.endpoint ?? "",
    orgId: w.orgId ?? "",
  };
}

/** SQLite's feed cursor is the event seq. */
function parseSeqCursor(cursor: string): number {
  if (!/^\d{1,15}$/.test(cursor)) throw new TypeError(`"${cursor.slice(0, 40)}" is not a cursor of this store`);
  return Number(cursor);
}

function sourceOf(row: DeliveryRow): DeliverySource {
  return {
    eventSeq: row.event_seq,
    eventId: row.event_id,
    eventType: row.event_type,
    orderKey: row.order_key,
    orderIndex: row.order_index,
  };
}

function toAttemptRecord(row: AttemptRow): AttemptRecord {
  return {
    deliveryId: row.delivery_id,
    number: row.number,
    startedAt: row.started_at,
    statusCode: row.status_code,
    latencyMs: row.latency_ms,
    error: row.error,
    responseBody: row.response_body,
  };
}

function toEndpointRecord(row: EndpointRow): EndpointRecord {
  return {
    name: row.name,
    url: row.url,
    enabled: row.enabled === 1,
    eventTypes: JSON.parse(row.event_types) as EventType[],
    failoverTo: row.failover_to,
    disabledReason: row.disabled_reason,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    signingKeyCount: row.key_count,
    filters: parseFilters(row.filters),
    orgId: row.org_id,
    apps: JSON.parse(row.apps) as string[],
    oneOff: row.one_off === 1,
    fromConfig: row.config_secret !== "",
    paused: row.paused === 1,
    pausedAt: row.paused_at,
  };
}

// ---- one-off endpoints and org keys (schema v3) ---------------------------------------------

function prepareClusterStatements(db: Database.Database) {
  return {
    nextVersion: db
      .prepare(
        `INSERT INTO meta (name, value) VALUES ('config_version', CAST(CAST(@now AS INTEGER) AS TEXT))
         ON CONFLICT (name) DO UPDATE SET value = CAST(MAX(CAST(value AS INTEGER) + 1, CAST(@now AS INTEGER)) AS TEXT)
         RETURNING value`,
      )
      .pluck() as Stmt<{ now: number }, string>,
    putCircuit: db.prepare(
      `INSERT INTO endpoint_circuits (endpoint, open, opened_at, updated_at) VALUES (@endpoint, @open, @openedAt, @now)
       ON CONFLICT (endpoint) DO UPDATE SET open = excluded.open, opened_at = excluded.opened_at,
         updated_at = excluded.updated_at`,
    ) as Stmt<{ endpoint: string; open: number; openedAt: number; now: number }>,
    circuits: db.prepare("SELECT endpoint, open, opened_at, failing_since FROM endpoint_circuits") as Stmt0<{
      endpoint: string;
      open: number;
      opened_at: number;
      failing_since: number;
    }>,
    startFailingRun: db
      .prepare(
        `INSERT INTO endpoint_circuits (endpoint, open, opened_at, updated_at, failing_since)
         VALUES (@endpoint, 0, 0, @now, @since)
         ON CONFLICT (endpoint) DO UPDATE SET updated_at = excluded.updated_at,
           failing_since = CASE WHEN failing_since = 0 OR failing_since > excluded.failing_since
             THEN excluded.failing_since ELSE failing_since END
         RETURNING failing_since`,
      )
      .pluck() as Stmt<{ endpoint: string; since: number; now: number }, number>,
    endFailingRun: db.prepare(
      "UPDATE endpoint_circuits SET failing_since = 0, updated_at = @now WHERE endpoint = @endpoint AND failing_since != 0",
    ) as Stmt<{ endpoint: string; now: number }>,
    failingSince: db
      .prepare("SELECT failing_since FROM endpoint_circuits WHERE endpoint = ?")
      .pluck() as Database.Statement<[string], number>,
    putSidecar: db.prepare(
      `INSERT INTO sidecars (id, org_id, app, owner, seen_at, version, spool_batches, spool_bytes)
       VALUES (@id, @orgId, @app, @owner, @now, @version, @spoolBatches, @spoolBytes)
       ON CONFLICT (id) DO UPDATE SET org_id = excluded.org_id, app = excluded.app, owner = excluded.owner,
         seen_at = excluded.seen_at, version = excluded.version, spool_batches = excluded.spool_batches,
         spool_bytes = excluded.spool_bytes`,
    ) as Stmt<{
      id: string;
      orgId: string;
      app: string;
      owner: string;
      now: number;
      version: string;
      spoolBatches: number;
      spoolBytes: number;
    }>,
    removeSidecar: db.prepare("DELETE FROM sidecars WHERE id = ?") as Database.Statement<[string]>,
    sidecars: db.prepare(
      "SELECT id, org_id, app, version, spool_batches, spool_bytes, seen_at FROM sidecars WHERE seen_at >= ? ORDER BY id",
    ) as Database.Statement<[number], SidecarRow>,
    getSetting: db.prepare("SELECT value FROM settings WHERE name = ?").pluck() as Database.Statement<[string], string>,
    putSetting: db.prepare(
      `INSERT INTO settings (name, value, updated_at) VALUES (@name, @value, @now)
       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    ) as Stmt<{ name: string; value: string; now: number }>,
  };
}

function prepareOneOffStatements(db: Database.Database) {
  return {
    endpointOrg: db
      .prepare("SELECT org_id FROM endpoints WHERE name = ? AND one_off = 1")
      .pluck() as Database.Statement<[string], string>,
    insertOrgKey: db.prepare(
      "INSERT INTO org_signing_keys (id, org_id, secret, created_at, expires_at) VALUES (@id, @orgId, @secret, @now, NULL)",
    ) as Stmt<{ id: string; orgId: string; secret: string; now: number }>,
    deleteExpiredOrgKeys: db.prepare(
      "DELETE FROM org_signing_keys WHERE org_id = @orgId AND expires_at IS NOT NULL AND expires_at <= @now",
    ) as Stmt<{ orgId: string; now: number }>,
    expireOrgKeys: db.prepare(
      `UPDATE org_signing_keys SET expires_at = @expiresAt
       WHERE org_id = @orgId AND (expires_at IS NULL OR expires_at > @expiresAt)`,
    ) as Stmt<{ orgId: string; expiresAt: number }>,
    activeOrgKeys: db.prepare(
      `SELECT id, secret, created_at, expires_at FROM org_signing_keys
       WHERE org_id = @orgId AND (expires_at IS NULL OR expires_at > @now) ORDER BY seq DESC`,
    ) as Stmt<{ orgId: string; now: number }, KeyRow>,
  };
}

function endpointParams(
  endpoint: NewEndpoint,
  disabledReason: string,
  configSecret: string,
  now: number,
): Record<string, unknown> {
  return {
    name: endpoint.name,
    url: endpoint.url,
    enabled: endpoint.enabled ? 1 : 0,
    eventTypes: JSON.stringify(endpoint.eventTypes),
    failoverTo: endpoint.failoverTo,
    disabledReason,
    configSecret,
    now,
    filters: filtersJson(endpoint.filters),
    orgId: endpoint.orgId ?? "",
    apps: JSON.stringify(endpoint.apps ?? []),
    oneOff: 0,
  };
}

function decodeEvent(body: Uint8Array, seq: number): Event {
  try {
    return fromBinary(EventSchema, body);
  } catch (err) {
    throw new Error(`stored event seq ${seq} cannot be decoded: ${(err as Error).message}`, { cause: err });
  }
}

function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}
