import { fromBinary, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
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
import {
  type BudgetLimitType,
  type BudgetRecord,
  type BudgetSpec,
  checkBudgetSpec,
  checkModelPrice,
  type ModelPriceRow,
  modelPriceColumns,
  modelPriceOfRow,
  type SpendAccounting,
  spendKey,
  SpendTracker,
  type StoredModelPrice,
} from "../budgets.js";
import {
  type CircuitRecord,
  type SidecarRecord,
  type SidecarRow,
  type StoreWatcher,
  sidecarRecord,
} from "../cluster.js";
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
  type NextDeliveryState,
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
import { type NewToken, type TokenRecord, type TokenRow, toTokenRecord, validateNewToken } from "../tokens.js";
import { emptyPurgeStep, type PurgeStep, type PurgeStepOptions, retentionVerdict } from "../retention.js";
import { decodePageToken, encodePageToken } from "../page-token.js";
import { SecretBox } from "../secret-box.js";
import { type Store, StoreConflictError, StoreNotFoundError } from "../store.js";
import { isStoreUnavailable } from "../unavailable.js";
import { CHANNEL_CHANGES, CHANNEL_EVENTS, CHANNEL_LANES, PgListener } from "./listener.js";
import { isStaleClient, PreparingClient, StorePool, unavailableOr } from "./pool.js";
import { migratePostgres } from "./schema.js";

export interface PostgresStoreOptions {
  /** base64 of 32 bytes: required, every replica must seal and open secrets with the same key. */
  encryptionKey?: string;
  logger?: Logger;
  /** This process's name in the pending counts and NOTIFY payloads; default host/pid/random. */
  owner?: string;
  /** Connections in the pool; default 10. */
  maxConnections?: number;
}

const KEY_CHECK_NAME = "key_check";
const KEY_CHECK_CONTEXT = "aigw store key check";
const KEY_CHECK_PLAINTEXT = "aigw";
/** Every claimer counts live leases under this lock, so caps hold across replicas. */
const CLAIM_LOCK = 7_366_274_902;
/** Ingest commits hand out feed positions under this lock (see #placeInFeed). */
const FEED_LOCK = 7_366_274_903;
const RETRYABLE = new Set(["40001", "40P01"]);
const { escapeLiteral } = pg;
/** How long attempt results wait for a claim to record them before they commit on their own. */
const RESULT_LINGER_MS = 20;
/** A lane the caps held back (other replicas' leases) is looked at again after this. */
const CAPPED_RETRY_MS = 250;

/** What the completion's read joins from each delivery's event (null: the event is gone). */
interface EventMetaColumns {
  event_org_id: string | null;
  event_time_ms: number | null;
  event_ingested_at: number | null;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

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

interface EndpointRow {
  name: string;
  url: string;
  enabled: boolean;
  event_types: string;
  failover_to: string;
  disabled_reason: string;
  config_secret: string;
  created_at: number;
  updated_at: number;
  key_count: number;
  filters: string;
  org_id: string;
  apps: string;
  one_off: boolean;
  paused: boolean;
  paused_at: number | null;
}

interface KeyRow {
  id: string;
  secret: string;
  created_at: number;
  expires_at: number | null;
}

interface BudgetRow {
  org_id: string;
  limit_type: BudgetLimitType;
  budget_limit: number;
  thresholds: string;
  enforce: boolean;
}

interface QueuedIngest {
  events: readonly Event[];
  route: (event: Event) => readonly string[];
  accounting: SpendAccounting | undefined;
}

/**
 * What a claim of this process read of a delivery it leased: enough to record its attempt
 * in one statement, fenced on the same values (PostgresStore.#completeFast).
 */
interface HeldLease {
  seq: number;
  leaseOwner: string;
  leaseToken: number;
  attemptCount: number;
  nextAttemptAt: number;
  endpoint: string;
  eventType: number;
  orderKey: string;
  orgId: string;
  eventTimeMs: number;
}
/** Held leases remembered at most; past it they are forgotten (their results take the general path). */
const MAX_HELD_LEASES = 100_000;

/** A common group of attempt results, as #fastResults reads it: what its statement writes. */
interface FastResults {
  batch: readonly QueuedCompletion[];
  held: HeldLease[];
  nexts: NextDeliveryState[];
  /** Each delivered one's event→delivered latency (ms), null for the others. */
  latency: (number | null)[];
  rollups: RollupBatch;
  results: CompleteResult[];
  /** Results that end their delivery (no longer pending). */
  finished: number;
}

/** A row of aigw_claim: a delivery leased, or (seq null) a lane's summary. */
interface ClaimRow {
  seq: number | null;
  id: string;
  event_seq: number;
  event_id: string;
  event_type: number;
  endpoint: string;
  attempt_count: number;
  next_attempt_at: number;
  created_at: number;
  last_error: string;
  origin_delivery_id: string;
  order_key: string;
  order_index: number;
  body: Buffer;
  event_org_id: string | null;
  event_time_ms: number | null;
  event_ingested_at: number | null;
  lease_token: number;
  lane_allowed: number | null;
  lane_next_due: number | null;
}

interface QueuedCompletion {
  delivery: LeasedDelivery;
  attempt: NewAttempt;
  outcome: AttemptOutcome;
}

/** A row a transaction inserts into deliveries. */
interface NewDeliveryRow {
  id: string;
  source: DeliverySource;
  endpoint: string;
  originDeliveryId: string;
  /** Waits for an earlier token of its (endpoint, order key) inserted in the same statement. */
  blocked: boolean;
}

/** A transaction's effect on shared state, applied as it commits. */
interface TxEffects {
  pending: number;
  lanes: Set<string>;
  changes: Set<string>;
  events: boolean;
}

// int8 (bigint) as a JS number: times in ms and row numbers stay far below 2^53.
const types = {
  getTypeParser(oid: number, format?: string) {
    if (oid === 20) return (value: string) => Number.parseInt(value, 10);
    return pg.types.getTypeParser(oid, format as "text");
  },
};

const ENDPOINT_COLUMNS = `e.*, CASE WHEN NOT e.one_off THEN (SELECT COUNT(*)::int FROM signing_keys k
      WHERE k.endpoint = e.name AND (k.expires_at IS NULL OR k.expires_at > $1))
    ELSE (SELECT COUNT(*)::int FROM org_signing_keys o
      WHERE o.org_id = e.org_id AND (o.expires_at IS NULL OR o.expires_at > $1)) END AS key_count`;

/**
 * The PostgreSQL store: several control-plane replicas on one database. The same semantics
 * as the SQLite store (the conformance suite holds both to them), written for many writers:
 * claims lock rows with SKIP LOCKED and count every replica's live leases against the caps;
 * leases carry a fencing token; feed positions are handed out in commit order; changes,
 * new deliveries and new events are announced with NOTIFY.
 * Hot paths are set-based: a batch of events, deliveries or results is a few statements.
 */
export class PostgresStore implements Store {
  readonly kind = "postgres";
  readonly shared = true;
  /** A claim records this process's results submitted before it first (PostgresStore.claim). */
  readonly claimsSeeSubmittedResults = true;
  readonly where: string;
  readonly owner: string;
  readonly #pool: pg.Pool;
  readonly #box: SecretBox;
  readonly #ingests: GroupCommit<QueuedIngest, IngestResult>;
  readonly #completions: GroupCommit<QueuedCompletion, CompleteResult>;
  readonly #logger: Logger | undefined;
  readonly #listener: PgListener;
  #closed = false;
  /** Leases this process's claims handed out and not yet completed, by delivery id. */
  readonly #held = new Map<string, HeldLease>();
  #operatorRoute: OperatorRoute | undefined;

  /** Use openPostgresStore(). */
  constructor(pool: pg.Pool, url: string, box: SecretBox, owner: string, logger?: Logger) {
    const where = redactUrl(url);
    this.#listener = new PgListener(url, owner, logger);
    this.#pool = pool;
    this.where = where;
    this.#box = box;
    this.owner = owner;
    this.#logger = logger;
    this.#ingests = new GroupCommit((batch) => {
      const now = Date.now();
      return this.#tx(async (c, fx) => {
        const out: IngestResult[] = [];
        for (const item of batch) out.push(await this.#ingestOne(c, fx, item, now));
        await this.#placeInFeed(c, out);
        const rollups = new RollupBatch();
        for (const result of out) {
          for (const stored of result.stored) rollups.event(stored.event, now);
          for (const stored of result.generated ?? []) rollups.event(stored.event, now);
        }
        await this.#writeRollups(c, rollups);
        return out;
      });
    }, 256);
    // Results wait a little for the next claim, which records them in its own statement
    // (claim): most then cost no statement of their own. Their slots are free already.
    this.#completions = new GroupCommit((batch) => this.#completeGroup(batch), 512, RESULT_LINGER_MS);
  }

  /** The pool, for LISTEN connections and tests. */
  get pool(): pg.Pool {
    return this.#pool;
  }

  // ---- transactions --------------------------------------------------------------------

  /**
   * One transaction; retried on serialization failures and deadlocks. Effects (the pending
   * count, NOTIFYs) are written inside it, so other replicas learn of them when it commits.
   *
   * `lazy`: the commit does not wait for its WAL flush (synchronous_commit off; the WAL
   * writer flushes it within a fraction of a second). Only for writes whose loss in a
   * database crash is redone rather than lost: a claim's lease (the delivery is claimed
   * again), an attempt's outcome (the delivery is attempted again: at least once), circuit
   * and presence state. What a sidecar is acked for, and configuration, always wait.
   */
  async #tx<T>(fn: (c: pg.PoolClient, fx: TxEffects) => Promise<T>, lazy = false): Promise<T> {
    if (this.#closed) throw new Error(`PostgreSQL store ${this.where} is closed`);
    // One round trip to begin, one for the effects and the commit.
    const begin = lazy ? "BEGIN; SET LOCAL synchronous_commit = off" : "BEGIN";
    for (let attempt = 1; ; attempt++) {
      const c = await this.#pool.connect();
      const fx: TxEffects = { pending: 0, lanes: new Set(), changes: new Set(), events: false };
      let committing = false;
      try {
        await c.query(begin);
        const result = await fn(c, fx);
        const effects = this.#effectsSql(fx);
        committing = true;
        await c.query(`${effects}COMMIT`);
        c.release();
        return result;
      } catch (raw) {
        const err = unavailableOr(raw, this.where);
        const stale = isStaleClient(c);
        const lost = isStoreUnavailable(err);
        if (stale || lost) {
          // Its prepared statements predate a schema change, or its connection broke:
          // discard it; the server rolled the transaction back (unless it broke during
          // COMMIT, when nobody can tell: then the caller's retry finds it done or not).
          c.release(true);
        } else {
          await c.query("ROLLBACK").catch(() => {});
          c.release();
        }
        const code = (err as { code?: string }).code;
        // Every pooled connection may hold the stale statement: each is discarded in turn.
        if (stale && attempt < 5 + this.#pool.options.max) continue;
        // One connection cut (pg_terminate_backend, an idle one the server dropped): a fresh one.
        if (lost && !committing && attempt < 3) continue;
        if (attempt < 5 && code !== undefined && RETRYABLE.has(code)) continue;
        throw err;
      }
    }
  }

  /**
   * The transaction's effects as statements sent with its COMMIT (one round trip): the
   * pending count and the NOTIFYs. Literals only (simple protocol), each escaped.
   */
  #effectsSql(fx: TxEffects): string {
    let sql = "";
    if (fx.pending !== 0) {
      sql +=
        "INSERT INTO pending_counts (owner, pending, updated_at) " +
        `VALUES (${escapeLiteral(this.owner)}, ${Math.trunc(fx.pending)}, ${Date.now()}) ` +
        "ON CONFLICT (owner) DO UPDATE SET pending = pending_counts.pending + excluded.pending, " +
        "updated_at = excluded.updated_at; ";
    }
    if (fx.lanes.size > 0) sql += this.#notifySql(CHANNEL_LANES, { from: this.owner, endpoints: [...fx.lanes] });
    if (fx.changes.size > 0) sql += this.#notifySql(CHANNEL_CHANGES, { from: this.owner, changes: [...fx.changes] });
    if (fx.events) sql += this.#notifySql(CHANNEL_EVENTS, { from: this.owner });
    return sql;
  }

  #notifySql(channel: string, payload: unknown): string {
    let text = JSON.stringify(payload);
    // NOTIFY payloads are limited to 8000 bytes: a long list of endpoints becomes "look".
    if (text.length > 7_000) text = JSON.stringify({ from: this.owner, all: true });
    return `SELECT pg_notify(${escapeLiteral(channel)}, ${escapeLiteral(text)}); `;
  }

  // ---- events ----------------------------------------------------------------------------

  async ingest(
    events: readonly Event[],
    route: (event: Event) => readonly string[],
    accounting?: SpendAccounting,
    onCommitted?: (endpoints: readonly string[]) => void,
  ): Promise<IngestResult> {
    checkIngest(events);
    // The commit is the durable point here (synchronous_commit on): the lanes wake after it.
    const result = await this.#ingests.submit({ events, route, accounting });
    committed(onCommitted, result.endpoints);
    return result;
  }

  async #ingestOne(c: pg.PoolClient, fx: TxEffects, item: QueuedIngest, now: number): Promise<IngestResult> {
    const { events, route, accounting } = item;
    // New events, first occurrence of each id; a re-sent one is a duplicate (no deliveries, no spend).
    const ids = [...new Set(events.map((e) => e.id))];
    const existing = new Set(
      (await c.query<{ id: string }>("SELECT id FROM events WHERE id = ANY($1::text[])", [ids])).rows.map((r) => r.id),
    );
    const seen = new Set<string>();
    const fresh: Event[] = [];
    for (const event of events) {
      if (existing.has(event.id) || seen.has(event.id)) continue;
      seen.add(event.id);
      fresh.push(event);
    }
    const tracker = accounting ? await this.#spendTracker(c, accounting, fresh, now) : undefined;
    // Events in order, each budget event right after the event whose spend fired it.
    const rows: { event: Event; generated: boolean }[] = [];
    for (const event of fresh) {
      rows.push({ event, generated: false });
      for (const crossing of tracker?.add(event) ?? [])
        rows.push({ event: tracker!.budgetEvent(crossing), generated: true });
    }
    const stored =
      rows.length > 0
        ? await this.#insertEvents(
            c,
            rows.map((r) => r.event),
            now,
          )
        : [];
    if (stored.length !== rows.length) {
      // Another writer stored one of these ids after we looked: retry the transaction.
      throw Object.assign(new Error("concurrent insert of the same event id"), { code: "40001" });
    }
    const deliveries: NewDeliveryRow[] = [];
    for (const s of stored) {
      const columns = eventColumns(s.event);
      const source: DeliverySource = {
        eventSeq: s.seq,
        eventId: s.event.id,
        eventType: columns.type,
        orderKey: columns.orderKey,
        orderIndex: columns.orderIndex,
      };
      for (const endpoint of new Set(route(s.event))) {
        deliveries.push({ id: newDeliveryId(), source, endpoint, originDeliveryId: "", blocked: false });
      }
    }
    await this.#insertDeliveries(c, fx, deliveries, now);
    if (tracker) {
      const fired = tracker.crossings;
      if (fired.length > 0) {
        await c.query(
          `INSERT INTO budget_thresholds_fired (org_id, limit_type, period, threshold, event_id, fired_at)
           SELECT o, l, p, t, e, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[]) AS u(o, l, p, t, e)
           ON CONFLICT DO NOTHING`,
          [
            fired.map((f) => f.budget.orgId),
            fired.map((f) => f.budget.limitType),
            fired.map((f) => f.period),
            fired.map((f) => f.threshold),
            fired.map((f) => f.eventId),
            now,
          ],
        );
      }
      const added = tracker.added();
      if (added.length > 0) {
        await c.query(
          `UPDATE budget_spend s SET spend = s.spend + u.a, updated_at = $5
           FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) AS u(o, l, p, a)
           WHERE s.org_id = u.o AND s.limit_type = u.l AND s.period = u.p`,
          [
            added.map((a) => a.orgId),
            added.map((a) => a.limitType),
            added.map((a) => a.period),
            added.map((a) => a.spend),
            now,
          ],
        );
      }
    }
    if (stored.length > 0) fx.events = true;
    const result: IngestResult = {
      stored: stored.filter((_, i) => !rows[i]!.generated),
      duplicates: events.length - fresh.length,
      deliveries: deliveries.length,
      endpoints: [...new Set(deliveries.map((d) => d.endpoint))],
    };
    if (!tracker) return result;
    return { ...result, generated: stored.filter((_, i) => rows[i]!.generated), spend: tracker.totals() };
  }

  /** Locks the spend rows a batch will add to (creating them), and reads budgets and fired thresholds. */
  async #spendTracker(
    c: pg.PoolClient,
    accounting: SpendAccounting,
    fresh: Event[],
    now: number,
  ): Promise<SpendTracker> {
    const keys = new Map<string, { orgId: string; limitType: BudgetLimitType; period: string }>();
    for (const event of fresh) {
      for (const k of SpendTracker.keysOf(accounting, event)) keys.set(spendKey(k.orgId, k.limitType, k.period), k);
    }
    const spend = new Map<string, number>();
    const fired = new Map<string, number[]>();
    const budgets = new Map<string, BudgetSpec>();
    if (keys.size > 0) {
      const list = [...keys.values()];
      const arrays = [list.map((k) => k.orgId), list.map((k) => k.limitType), list.map((k) => k.period)];
      // Rows exist before they are locked, so two replicas adding to one org's spend take turns.
      await c.query(
        `INSERT INTO budget_spend (org_id, limit_type, period, spend, updated_at)
         SELECT o, l, p, 0, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(o, l, p)
         ORDER BY o, l, p ON CONFLICT DO NOTHING`,
        [...arrays, now],
      );
      const locked = await c.query<{ org_id: string; limit_type: BudgetLimitType; period: string; spend: number }>(
        `SELECT s.org_id, s.limit_type, s.period, s.spend FROM budget_spend s
         JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(o, l, p) ON s.org_id = u.o AND s.limit_type = u.l AND s.period = u.p
         ORDER BY s.org_id, s.limit_type, s.period FOR UPDATE OF s`,
        arrays,
      );
      for (const r of locked.rows) spend.set(spendKey(r.org_id, r.limit_type, r.period), r.spend);
      const firedRows = await c.query<{
        org_id: string;
        limit_type: BudgetLimitType;
        period: string;
        threshold: number;
      }>(
        `SELECT f.org_id, f.limit_type, f.period, f.threshold FROM budget_thresholds_fired f
         JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(o, l, p) ON f.org_id = u.o AND f.limit_type = u.l AND f.period = u.p`,
        arrays,
      );
      for (const r of firedRows.rows) {
        const key = spendKey(r.org_id, r.limit_type, r.period);
        fired.set(key, [...(fired.get(key) ?? []), r.threshold]);
      }
      const budgetRows = await c.query<BudgetRow>("SELECT * FROM budgets WHERE org_id = ANY($1::text[])", [
        [...new Set(list.map((k) => k.orgId))],
      ]);
      for (const r of budgetRows.rows) budgets.set(`${r.org_id}\u0000${r.limit_type}`, toBudgetSpec(r));
    }
    return new SpendTracker(accounting, {
      spend: (orgId, limitType, period) => spend.get(spendKey(orgId, limitType, period)) ?? 0,
      budget: (orgId, limitType) => budgets.get(`${orgId}\u0000${limitType}`),
      fired: (orgId, limitType, period) => fired.get(spendKey(orgId, limitType, period)) ?? [],
    });
  }

  /**
   * Gives the transaction's new events their feed positions, last thing before commit,
   * under a lock held until commit: positions are handed out in commit order, so the feed
   * never skips an event that commits after a later one was read. Ingest commits take turns
   * here (a few ms each); group commit makes each turn carry many batches.
   */
  async #placeInFeed(c: pg.PoolClient, results: IngestResult[]): Promise<void> {
    const events = results.flatMap((r) => [...r.stored, ...(r.generated ?? [])]).sort((a, b) => a.seq - b.seq);
    if (events.length === 0) return;
    await c.query("SELECT pg_advisory_xact_lock($1)", [FEED_LOCK]);
    const { rows } = await c.query<{ position: number; event_seq: number }>(
      `INSERT INTO feed (event_seq) SELECT s FROM unnest($1::bigint[]) WITH ORDINALITY AS u(s, ord) ORDER BY ord
       RETURNING position, event_seq`,
      [events.map((e) => e.seq)],
    );
    const positions = new Map(rows.map((r) => [r.event_seq, r.position]));
    for (const e of events) e.cursor = String(positions.get(e.seq) ?? "");
  }

  async #insertEvents(c: pg.PoolClient, events: Event[], now: number): Promise<StoredEvent[]> {
    const cols = events.map((e) => eventColumns(e));
    const { rows } = await c.query<{ seq: number; id: string }>(
      `INSERT INTO events (id, type, org_id, app, request_id, order_key, token_index, time_ms, ingested_at, body)
       SELECT id, type, org_id, app, request_id, order_key, token_index, time_ms, $10, body
       FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bigint[], $9::bytea[])
         WITH ORDINALITY AS u(id, type, org_id, app, request_id, order_key, token_index, time_ms, body, ord)
       ORDER BY ord
       ON CONFLICT (id) DO NOTHING
       RETURNING seq, id`,
      [
        events.map((e) => e.id),
        cols.map((x) => x.type),
        cols.map((x) => x.orgId),
        cols.map((x) => x.app),
        cols.map((x) => x.requestId),
        cols.map((x) => x.orderKey),
        cols.map((x) => x.orderIndex),
        cols.map((x) => x.timeMs),
        events.map((e) => Buffer.from(toBinary(EventSchema, e))),
        now,
      ],
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    const out: StoredEvent[] = [];
    for (const event of events) {
      const r = byId.get(event.id);
      // The cursor is the feed position, given just before commit (#placeInFeed).
      if (r) out.push({ seq: r.seq, event, ingestedAt: now, cursor: "" });
    }
    return out;
  }

  /**
   * Inserts deliveries in one statement. Streaming order: of a request's tokens for one
   * endpoint, only the earliest may be due, and only if no earlier one is pending already;
   * a token that arrives late makes the later ones not yet leased wait.
   */
  async #insertDeliveries(c: pg.PoolClient, fx: TxEffects, rows: NewDeliveryRow[], now: number): Promise<void> {
    if (rows.length === 0) return;
    const firstOfGroup = new Map<string, NewDeliveryRow>();
    for (const row of rows) {
      if (row.source.orderKey === "") continue;
      const key = `${row.endpoint}\u0000${row.source.orderKey}`;
      const first = firstOfGroup.get(key);
      if (first === undefined || row.source.orderIndex < first.source.orderIndex) {
        if (first) first.blocked = true;
        firstOfGroup.set(key, row);
      } else row.blocked = true;
    }
    await c.query(
      `INSERT INTO deliveries (id, event_seq, event_id, event_type, endpoint, status, attempt_count, next_attempt_at,
         due_at, lease_owner, lease_until, lease_token, created_at, finished_at, last_error, origin_delivery_id,
         order_key, order_index)
       SELECT u.id, u.event_seq, u.event_id, u.event_type, u.endpoint, 'pending', 0, $11,
         CASE WHEN u.blocked OR (u.order_key <> '' AND EXISTS (
           SELECT 1 FROM deliveries p WHERE p.status = 'pending' AND p.order_key <> '' AND p.endpoint = u.endpoint
             AND p.order_key = u.order_key AND p.order_index < u.order_index)) THEN ${BLOCKED_DUE_AT} ELSE $11 END,
         '', 0, 0, $10, NULL, '', u.origin, u.order_key, u.order_index
       FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bool[])
         WITH ORDINALITY AS u(id, event_seq, event_id, event_type, endpoint, origin, order_key, order_index, blocked, ord)
       ORDER BY u.ord`,
      [
        rows.map((r) => r.id),
        rows.map((r) => r.source.eventSeq),
        rows.map((r) => r.source.eventId),
        rows.map((r) => r.source.eventType),
        rows.map((r) => r.endpoint),
        rows.map((r) => r.originDeliveryId),
        rows.map((r) => r.source.orderKey),
        rows.map((r) => r.source.orderIndex),
        rows.map((r) => r.blocked),
        now,
        // Due now on the scheduler's clock (common/clock.ts), which a wall clock step does not move.
        steadyNow(),
      ],
    );
    const groups = [...firstOfGroup.values()];
    if (groups.length > 0) {
      await c.query(
        `UPDATE deliveries d SET due_at = ${BLOCKED_DUE_AT}
         FROM unnest($1::text[], $2::text[], $3::int[]) AS u(endpoint, order_key, order_index)
         WHERE d.status = 'pending' AND d.order_key <> '' AND d.endpoint = u.endpoint AND d.order_key = u.order_key
           AND d.order_index > u.order_index AND d.lease_owner = '' AND d.due_at <> ${BLOCKED_DUE_AT}`,
        [groups.map((g) => g.endpoint), groups.map((g) => g.source.orderKey), groups.map((g) => g.source.orderIndex)],
      );
    }
    fx.pending += rows.length;
    for (const r of rows) fx.lanes.add(r.endpoint);
  }

  async readFeed(after: string | undefined, limit: number): Promise<StoredEvent[]> {
    const position = after === undefined ? 0 : parsePosition(after);
    const { rows } = await this.#pool.query<{ position: number; seq: number; body: Buffer; ingested_at: number }>(
      `SELECT f.position, e.seq, e.body, e.ingested_at FROM feed f JOIN events e ON e.seq = f.event_seq
       WHERE f.position > $1 ORDER BY f.position LIMIT $2`,
      [position, positiveInteger(limit, "readFeed limit")],
    );
    return rows.map((r) => ({
      seq: r.seq,
      event: decodeEvent(r.body, r.seq),
      ingestedAt: r.ingested_at,
      cursor: String(r.position),
    }));
  }

  async feedHead(): Promise<string> {
    const { rows } = await this.#pool.query<{ position: number | null }>("SELECT MAX(position) AS position FROM feed");
    return String(rows[0]?.position ?? 0);
  }

  async feedCursorSince(timeMs: number): Promise<string> {
    // The first such event in the feed's (commit) order, not by ingested_at alone: with
    // several writers an event stored earlier can commit later. The rows this walks are the
    // ones the replay after it reads anyway.
    const { rows } = await this.#pool.query<{ position: string | number | null }>(
      `SELECT MIN(f.position) AS position FROM feed f JOIN events e ON e.seq = f.event_seq
       WHERE e.ingested_at >= $1`,
      [timeMs],
    );
    const first = rows[0]?.position;
    return first === null || first === undefined ? await this.feedHead() : String(Number(first) - 1);
  }

  compareCursors(a: string, b: string): number {
    return parsePosition(a) - parsePosition(b);
  }

  async countEvents(sinceMs?: number, orgId?: string): Promise<number> {
    if (orgId !== undefined) {
      const { rows } = await this.#pool.query<{ n: number }>(
        "SELECT COUNT(*)::bigint AS n FROM events WHERE ingested_at >= $1 AND org_id = $2",
        [sinceMs ?? 0, orgId],
      );
      return rows[0]?.n ?? 0;
    }
    const { rows } =
      sinceMs === undefined
        ? await this.#pool.query<{ n: number }>("SELECT COUNT(*)::bigint AS n FROM events")
        : await this.#pool.query<{ n: number }>("SELECT COUNT(*)::bigint AS n FROM events WHERE ingested_at >= $1", [
            sinceMs,
          ]);
    return rows[0]?.n ?? 0;
  }

  // ---- org-scoped API tokens (digests only) ------------------------------------------------

  async createToken(token: NewToken): Promise<TokenRecord> {
    validateNewToken(token);
    return this.#tx(async (c) => {
      const inserted = await c.query(
        `INSERT INTO api_tokens (id, digest, org_id, kind, name, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL) ON CONFLICT DO NOTHING`,
        [token.id, token.digest, token.orgId, token.kind, token.name, token.createdAt],
      );
      if (inserted.rowCount === 0) throw new StoreConflictError(`token "${token.id}" already exists`);
      return { ...token, revokedAt: null };
    });
  }

  async listTokens(): Promise<TokenRecord[]> {
    const { rows } = await this.#pool.query<TokenRow>("SELECT * FROM api_tokens ORDER BY created_at, id");
    return rows.map(toTokenRecord);
  }

  async revokeToken(id: string, now: number): Promise<TokenRecord | undefined> {
    return this.#tx(async (c) => {
      await c.query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", [id, now]);
      const { rows } = await c.query<TokenRow>("SELECT * FROM api_tokens WHERE id = $1", [id]);
      return rows[0] && toTokenRecord(rows[0]);
    });
  }

  // ---- endpoints and their signing keys ---------------------------------------------------

  async listEndpoints(): Promise<EndpointRecord[]> {
    const { rows } = await this.#pool.query<EndpointRow>(
      `SELECT ${ENDPOINT_COLUMNS} FROM endpoints e WHERE NOT e.one_off ORDER BY e.name COLLATE "C"`,
      [Date.now()],
    );
    return rows.map(toEndpointRecord);
  }

  async getEndpoint(name: string): Promise<EndpointRecord | undefined> {
    const row = await endpointRow(this.#pool, name, Date.now());
    return row && toEndpointRecord(row);
  }

  async createEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord> {
    validateEndpoint(endpoint);
    requireSecret(secret, endpoint.name);
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      const inserted = await c.query(
        `INSERT INTO endpoints (name, url, enabled, event_types, failover_to, disabled_reason, config_secret,
           created_at, updated_at, filters, org_id, apps)
         VALUES ($1, $2, $3, $4, $5, '', '', $6, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING`,
        endpointParams(endpoint, now),
      );
      if (inserted.rowCount === 0) throw new StoreConflictError(`endpoint "${endpoint.name}" already exists`);
      await this.#insertKey(c, endpoint.name, secret, now);
      fx.changes.add("endpoints");
      return this.#endpointRecord(c, endpoint.name, now);
    });
  }

  async upsertEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord> {
    validateEndpoint(endpoint);
    requireSecret(secret, endpoint.name);
    const now = Date.now();
    const configSecret = this.#box.seal(secret, configSecretContext(endpoint.name));
    return this.#tx(async (c, fx) => {
      fx.changes.add("endpoints");
      const existing = (
        await c.query<EndpointRow>("SELECT *, 0 AS key_count FROM endpoints WHERE name = $1 FOR UPDATE", [
          endpoint.name,
        ])
      ).rows[0];
      if (existing === undefined) {
        await c.query(
          `INSERT INTO endpoints (name, url, enabled, event_types, failover_to, disabled_reason, config_secret,
             created_at, updated_at, filters, org_id, apps)
           VALUES ($1, $2, $3, $4, $5, '', $10, $6, $6, $7, $8, $9)`,
          [...endpointParams(endpoint, now), configSecret],
        );
        await this.#insertKey(c, endpoint.name, secret, now);
        return this.#endpointRecord(c, endpoint.name, now);
      }
      const sameSecret =
        existing.config_secret !== "" &&
        this.#box.open(existing.config_secret, configSecretContext(endpoint.name)) === secret;
      const plan = upsertPlan(endpoint, existing.disabled_reason, sameSecret);
      await this.#updateEndpointRow(
        c,
        endpoint,
        plan.disabledReason,
        sameSecret ? existing.config_secret : configSecret,
        now,
      );
      if (plan.replaceKeys) await this.#replaceKeys(c, endpoint.name, secret, now);
      return this.#endpointRecord(c, endpoint.name, now);
    });
  }

  async updateEndpoint(name: string, patch: EndpointPatch): Promise<EndpointRecord> {
    if (patch.secret !== undefined) requireSecret(patch.secret, name);
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      const row = await endpointRow(c, name, now, true);
      if (row === undefined) throw new StoreNotFoundError(`endpoint "${name}" not found`);
      const { next, disabledReason } = patchedEndpoint(toEndpointRecord(row), patch);
      await this.#updateEndpointRow(c, next, disabledReason, row.config_secret, now);
      if (patch.secret !== undefined) await this.#replaceKeys(c, name, patch.secret, now);
      fx.changes.add("endpoints");
      return this.#endpointRecord(c, name, now);
    });
  }

  async deleteEndpoint(name: string): Promise<boolean> {
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      const found = await c.query("SELECT 1 FROM endpoints WHERE name = $1 FOR UPDATE", [name]);
      if (found.rowCount === 0) return false;
      const failed = await c.query(
        `UPDATE deliveries SET status = 'failed', last_error = 'endpoint deleted', finished_at = $2, lease_owner = '',
           lease_until = 0, lease_token = 0
         WHERE endpoint = $1 AND status = 'pending'`,
        [name, now],
      );
      fx.pending -= failed.rowCount ?? 0;
      await c.query("DELETE FROM signing_keys WHERE endpoint = $1", [name]);
      await c.query("DELETE FROM endpoints WHERE name = $1", [name]);
      fx.changes.add("endpoints");
      return true;
    });
  }

  async addSigningKey(endpoint: string, secret: string, previousExpireAt: number): Promise<void> {
    requireSecret(secret, endpoint);
    finiteNumber(previousExpireAt, "previousExpireAt");
    const now = Date.now();
    await this.#tx(async (c, fx) => {
      const found = await c.query("SELECT 1 FROM endpoints WHERE name = $1 FOR UPDATE", [endpoint]);
      if (found.rowCount === 0) throw new StoreNotFoundError(`endpoint "${endpoint}" not found`);
      await c.query("DELETE FROM signing_keys WHERE endpoint = $1 AND expires_at IS NOT NULL AND expires_at <= $2", [
        endpoint,
        now,
      ]);
      await c.query(
        "UPDATE signing_keys SET expires_at = $2 WHERE endpoint = $1 AND (expires_at IS NULL OR expires_at > $2)",
        [endpoint, previousExpireAt],
      );
      await this.#insertKey(c, endpoint, secret, now);
      await c.query("UPDATE endpoints SET updated_at = $2 WHERE name = $1", [endpoint, now]);
      fx.changes.add("keys");
    });
  }

  async activeSigningKeys(endpoint: string, now: number): Promise<SigningKey[]> {
    const org = await this.#pool.query<{ org_id: string }>("SELECT org_id FROM endpoints WHERE name = $1 AND one_off", [
      endpoint,
    ]);
    const orgId = org.rows[0]?.org_id;
    if (orgId) return this.activeOrgSigningKeys(orgId, now);
    const { rows } = await this.#pool.query<KeyRow>(
      `SELECT id, secret, created_at, expires_at FROM signing_keys
       WHERE endpoint = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY seq DESC`,
      [endpoint, now],
    );
    return rows.map((row) => this.#openKey(row, signingKeyContext(row.id)));
  }

  async ensureOneOffEndpoint(
    name: string,
    orgId: string,
    url: string,
    newSecret: () => string,
  ): Promise<{ endpoint: EndpointRecord; createdOrgKey: boolean }> {
    if (orgId === "") throw new TypeError(`one-off endpoint "${name}": org id must not be empty`);
    const now = Date.now();
    const found = await endpointRow(this.#pool, name, now);
    if (found?.one_off && found.org_id === orgId && found.url === url && found.key_count > 0) {
      return { endpoint: toEndpointRecord(found), createdOrgKey: false };
    }
    return this.#tx(async (c, fx) => {
      // One org key, whichever replica creates it first.
      await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`aigw org key ${orgId}`]);
      const existing = await endpointRow(c, name, now, true);
      if (existing === undefined) {
        const endpoint: NewEndpoint = { name, url, enabled: true, eventTypes: [], failoverTo: "", orgId };
        await c.query(
          `INSERT INTO endpoints (name, url, enabled, event_types, failover_to, disabled_reason, config_secret,
             created_at, updated_at, filters, org_id, apps, one_off)
           VALUES ($1, $2, $3, $4, $5, '', '', $6, $6, $7, $8, $9, true)`,
          endpointParams(endpoint, now),
        );
      } else if (!existing.one_off || existing.org_id !== orgId || existing.url !== url) {
        throw new StoreConflictError(`endpoint "${name}" exists and is not the one-off endpoint of this org and URL`);
      }
      let createdOrgKey = false;
      const keys = await c.query(
        "SELECT 1 FROM org_signing_keys WHERE org_id = $1 AND (expires_at IS NULL OR expires_at > $2) LIMIT 1",
        [orgId, now],
      );
      if (keys.rowCount === 0) {
        await this.#insertOrgKey(c, orgId, newSecret(), now);
        createdOrgKey = true;
        fx.changes.add("keys");
      }
      return { endpoint: await this.#endpointRecord(c, name, now), createdOrgKey };
    });
  }

  async addOrgSigningKey(orgId: string, secret: string, previousExpireAt: number): Promise<void> {
    if (orgId === "") throw new TypeError("org signing key: org id must not be empty");
    requireSecret(secret, `org ${orgId}`);
    finiteNumber(previousExpireAt, "previousExpireAt");
    const now = Date.now();
    await this.#tx(async (c, fx) => {
      await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`aigw org key ${orgId}`]);
      await c.query("DELETE FROM org_signing_keys WHERE org_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2", [
        orgId,
        now,
      ]);
      await c.query(
        "UPDATE org_signing_keys SET expires_at = $2 WHERE org_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
        [orgId, previousExpireAt],
      );
      await this.#insertOrgKey(c, orgId, secret, now);
      fx.changes.add("keys");
    });
  }

  async activeOrgSigningKeys(orgId: string, now: number): Promise<SigningKey[]> {
    const { rows } = await this.#pool.query<KeyRow>(
      `SELECT id, secret, created_at, expires_at FROM org_signing_keys
       WHERE org_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY seq DESC`,
      [orgId, now],
    );
    return rows.map((row) => this.#openKey(row, orgKeyContext(row.id)));
  }

  #openKey(row: KeyRow, context: string): SigningKey {
    return {
      id: row.id,
      secret: this.#box.open(row.secret, context),
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    };
  }

  async #insertKey(c: pg.PoolClient, endpoint: string, secret: string, now: number): Promise<void> {
    const id = `key_${ulid(now)}`;
    await c.query(
      "INSERT INTO signing_keys (id, endpoint, secret, created_at, expires_at) VALUES ($1, $2, $3, $4, NULL)",
      [id, endpoint, this.#box.seal(secret, signingKeyContext(id)), now],
    );
  }

  async #insertOrgKey(c: pg.PoolClient, orgId: string, secret: string, now: number): Promise<void> {
    const id = `okey_${ulid(now)}`;
    await c.query(
      "INSERT INTO org_signing_keys (id, org_id, secret, created_at, expires_at) VALUES ($1, $2, $3, $4, NULL)",
      [id, orgId, this.#box.seal(secret, orgKeyContext(id)), now],
    );
  }

  async #replaceKeys(c: pg.PoolClient, endpoint: string, secret: string, now: number): Promise<void> {
    await c.query("DELETE FROM signing_keys WHERE endpoint = $1", [endpoint]);
    await this.#insertKey(c, endpoint, secret, now);
  }

  async #updateEndpointRow(
    c: pg.PoolClient,
    endpoint: NewEndpoint,
    disabledReason: string,
    configSecret: string,
    now: number,
  ): Promise<void> {
    await c.query(
      `UPDATE endpoints SET url = $2, enabled = $3, event_types = $4, failover_to = $5, updated_at = $6, filters = $7,
         org_id = $8, apps = $9, disabled_reason = $10, config_secret = $11
       WHERE name = $1`,
      [...endpointParams(endpoint, now), disabledReason, configSecret],
    );
  }

  async #endpointRecord(c: pg.PoolClient, name: string, now: number): Promise<EndpointRecord> {
    const row = await endpointRow(c, name, now);
    if (row === undefined) throw new StoreNotFoundError(`endpoint "${name}" not found`);
    return toEndpointRecord(row);
  }

  // ---- deliveries --------------------------------------------------------------------------

  /**
   * One statement (aigw_claim, one round trip, its own transaction): the attempt results of
   * this process submitted before the claim and not yet committed are recorded first (when
   * every one still holds its lease and needs nothing but its row: else they are recorded
   * the general way first), so the claim sees them (claimsSeeSubmittedResults); then, with
   * caps, every replica's live leases are counted under the claim lock and the caps applied;
   * then each lane's due rows are leased with SKIP LOCKED and the lanes' next due times read.
   */
  claim(options: ClaimOptions): Promise<LaneClaim[]> {
    let leaseUntil: number;
    try {
      leaseUntil = checkClaim(options);
    } catch (err) {
      return Promise.reject(err);
    }
    if (options.lanes.length === 0) return Promise.resolve([]);
    return this.#completions.commitWithAsync(
      () => this.#claim(options, leaseUntil, undefined),
      (batch) => {
        const fast = this.#fastResults(batch, Date.now());
        if (fast === undefined) return undefined;
        return this.#claim(options, leaseUntil, fast).then((value) => {
          for (const { delivery } of batch) this.#held.delete(delivery.id);
          return { results: fast.results, value };
        });
      },
    );
  }

  async #claim(options: ClaimOptions, leaseUntil: number, fast: FastResults | undefined): Promise<LaneClaim[]> {
    if (this.#closed) throw new Error(`PostgreSQL store ${this.where} is closed`);
    const { now, leaseOwner, lanes, caps } = options;
    const params = [
      fast ? JSON.stringify(fastResultRows(fast)) : null,
      fast ? JSON.stringify(sortedRollupRows(fast.rollups)) : null,
      this.owner,
      fast?.finished ?? 0,
      lanes.map((l) => l.endpoint),
      lanes.map((l) => l.limit),
      now,
      leaseOwner,
      leaseUntil,
      caps ? caps.perEndpoint : null,
      caps ? caps.total : null,
    ];
    let rows: ClaimRow[];
    for (let attempt = 1; ; attempt++) {
      try {
        rows = (
          await this.#pool.query<ClaimRow>(
            `SELECT * FROM aigw_claim($1::json, $2::json, $3::text, $4::int, $5::text[], $6::int[], $7::bigint,
               $8::text, $9::bigint, $10::int, $11::int)`,
            params,
          )
        ).rows;
        break;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt < 5 && code !== undefined && RETRYABLE.has(code)) continue;
        throw err;
      }
    }
    const byLane = new Map<string, ClaimRow[]>();
    const laneRows: ClaimRow[] = [];
    for (const row of rows) {
      if (row.seq === null) laneRows.push(row);
      else {
        const lane = byLane.get(row.endpoint);
        if (lane) lane.push(row);
        else byLane.set(row.endpoint, [row]);
      }
    }
    if (this.#held.size + rows.length - laneRows.length > MAX_HELD_LEASES) this.#held.clear();
    const claimedByLane = new Map<string, ClaimedDelivery[]>();
    for (const [endpoint, laneClaimed] of byLane) {
      // Within a lane, in the order they were due (oldest first).
      laneClaimed.sort((a, b) => a.next_attempt_at - b.next_attempt_at || a.seq! - b.seq!);
      claimedByLane.set(
        endpoint,
        laneClaimed.map((row) => {
          this.#held.set(row.id, {
            seq: row.seq!,
            leaseOwner,
            leaseToken: row.lease_token,
            attemptCount: row.attempt_count,
            nextAttemptAt: row.next_attempt_at,
            endpoint: row.endpoint,
            eventType: row.event_type,
            orderKey: row.order_key,
            orgId: row.event_org_id ?? "",
            eventTimeMs: row.event_time_ms! > 0 ? row.event_time_ms! : row.event_ingested_at!,
          });
          return {
            id: row.id,
            eventSeq: row.event_seq,
            eventId: row.event_id,
            eventType: row.event_type as EventType,
            endpoint: row.endpoint,
            status: "pending",
            attemptCount: row.attempt_count,
            createdAt: row.created_at,
            nextAttemptAt: row.next_attempt_at,
            finishedAt: null,
            lastError: row.last_error,
            originDeliveryId: row.origin_delivery_id,
            orderKey: row.order_key,
            orderIndex: row.order_index,
            eventBody: new Uint8Array(row.body.buffer, row.body.byteOffset, row.body.byteLength),
            leaseOwner,
            leaseUntil,
            leaseToken: row.lease_token,
          };
        }),
      );
    }
    return lanes.map((lane, i) => {
      const info = laneRows[i];
      const claimed = claimedByLane.get(lane.endpoint) ?? [];
      const allowed = info?.lane_allowed ?? 0;
      let nextDueAt: number | undefined;
      if (claimed.length < allowed) {
        const due = info?.lane_next_due ?? null;
        if (due !== null && due < BLOCKED_DUE_AT) nextDueAt = due;
      }
      // Held back by other replicas' leases: due work, so look again shortly.
      else if (allowed < lane.limit) nextDueAt = now + CAPPED_RETRY_MS;
      return { endpoint: lane.endpoint, deliveries: claimed, nextDueAt };
    });
  }

  async pendingLanes(after: string, limit: number): Promise<PendingLane[]> {
    positiveInteger(limit, "pendingLanes limit");
    const paused = new Set(
      (await this.#pool.query<{ name: string }>("SELECT name FROM endpoints WHERE paused AND enabled")).rows.map(
        (r) => r.name,
      ),
    );
    const lanes: PendingLane[] = [];
    // Lanes left out (paused, or only blocked rows) do not shorten a page: read on.
    for (let cursor = after; ; ) {
      const { rows } = await this.#pool.query<{ endpoint: string; due_at: number }>(
        `WITH RECURSIVE lanes(endpoint) AS (
           (SELECT endpoint FROM deliveries WHERE status = 'pending' AND endpoint > $1 ORDER BY endpoint LIMIT 1)
           UNION ALL
           SELECT (SELECT d.endpoint FROM deliveries d WHERE d.status = 'pending' AND d.endpoint > lanes.endpoint
                   ORDER BY d.endpoint LIMIT 1)
           FROM lanes WHERE lanes.endpoint IS NOT NULL
         )
         SELECT endpoint, (SELECT due_at FROM deliveries WHERE status = 'pending' AND endpoint = lanes.endpoint
                           ORDER BY due_at LIMIT 1) AS due_at
         FROM lanes WHERE endpoint IS NOT NULL LIMIT $2`,
        [cursor, limit],
      );
      for (const r of rows) {
        if (r.due_at < BLOCKED_DUE_AT && !paused.has(r.endpoint)) lanes.push({ endpoint: r.endpoint, dueAt: r.due_at });
      }
      const last = rows[rows.length - 1];
      if (rows.length < limit || last === undefined || lanes.length >= limit) break;
      cursor = last.endpoint;
    }
    return lanes.slice(0, limit);
  }

  completeAttempt(delivery: LeasedDelivery, attempt: NewAttempt, outcome: AttemptOutcome): Promise<CompleteResult> {
    if (this.#closed) return Promise.reject(new Error(`PostgreSQL store ${this.where} is closed`));
    try {
      checkOutcome(outcome);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#completions.submit({ delivery, attempt, outcome });
  }

  /**
   * A group of attempt results. The common group (every result still holds the lease this
   * process's claim handed out, none ends in a dead letter, a failover, an ordered
   * successor to unblock or an endpoint to disable) is one statement in its own
   * transaction: one round trip. Anything else, or a group that statement refuses (a lease
   * lost meanwhile), goes through #complete, which refuses stale results row by row.
   */
  async #completeGroup(batch: readonly QueuedCompletion[]): Promise<CompleteResult[]> {
    const now = Date.now();
    const fast = this.#completeFast(batch, now);
    if (fast !== undefined) {
      try {
        await this.#pool.query(fast.sql, fast.params);
        for (const { delivery } of batch) this.#held.delete(delivery.id);
        return fast.results;
      } catch {
        // Refused (a stale lease), or the connection broke (then the statement committed
        // or not: #complete finds its rows done, refused, or records them): row by row.
      }
    }
    const results = await this.#tx((c, fx) => this.#complete(c, fx, batch, now), true);
    for (const { delivery } of batch) this.#held.delete(delivery.id);
    return results;
  }

  /**
   * What a common group of results writes (see #completeGroup), from what this process's
   * claims read of the leases; undefined when the group is not one.
   */
  #fastResults(batch: readonly QueuedCompletion[], now: number): FastResults | undefined {
    const held: HeldLease[] = [];
    const nexts: NextDeliveryState[] = [];
    const seen = new Set<string>();
    for (const { delivery, attempt, outcome } of batch) {
      const lease = this.#held.get(delivery.id);
      if (
        lease === undefined ||
        lease.leaseOwner !== delivery.leaseOwner ||
        lease.leaseToken !== delivery.leaseToken ||
        seen.has(delivery.id)
      )
        return undefined;
      seen.add(delivery.id);
      const next = nextDeliveryState(
        { attemptCount: lease.attemptCount, nextAttemptAt: lease.nextAttemptAt },
        attempt,
        outcome,
        now,
      );
      if (
        next.disableEndpoint !== undefined ||
        next.failoverTo ||
        next.status === "dead_lettered" ||
        (next.status !== "pending" && lease.orderKey !== "")
      )
        return undefined;
      held.push(lease);
      nexts.push(next);
    }
    const rollups = new RollupBatch();
    const results: CompleteResult[] = [];
    const latency: (number | null)[] = [];
    let finished = 0;
    batch.forEach(({ attempt }, i) => {
      const lease = held[i]!;
      const next = nexts[i]!;
      const delivered = next.status === "delivered";
      if (next.status !== "pending") finished++;
      const ms = delivered ? eventLatencyMs(lease.eventTimeMs, now) : undefined;
      latency.push(ms ?? null);
      rollups.attempt({
        now,
        endpoint: lease.endpoint,
        eventType: lease.eventType,
        orgId: lease.orgId,
        outcome: outcomeName(next.status),
        latencyMs: attempt.latencyMs,
        eventTimeMs: delivered ? lease.eventTimeMs : undefined,
      });
      results.push(ms === undefined ? { recorded: true } : { recorded: true, eventLatencyMs: ms });
    });
    return { batch, held, nexts, latency, rollups, results, finished };
  }

  /**
   * The one statement for a common group of results, or undefined when the group is not one.
   * The deliveries are updated only where the lease (owner, fencing token) and the attempt
   * count are still those the claim read; aigw_all_recorded aborts the whole statement
   * unless every row was. It commits without waiting for its WAL flush, as #tx(lazy) does.
   */
  #completeFast(
    batch: readonly QueuedCompletion[],
    now: number,
  ): { sql: string; params: unknown[]; results: CompleteResult[] } | undefined {
    const fast = this.#fastResults(batch, now);
    if (fast === undefined) return undefined;
    const { held, nexts, latency, rollups, results, finished } = fast;
    const upsert = rollupUpsert(rollups, 22);
    const sql = `WITH moved AS (
         UPDATE deliveries d SET status = u.status, attempt_count = u.attempt_count, next_attempt_at = u.next_attempt_at,
           due_at = u.next_attempt_at, last_error = u.last_error, finished_at = u.finished_at, lease_owner = '',
           lease_until = 0, lease_token = 0, event_latency_ms = u.event_latency_ms
         FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::bigint[], $7::int[],
                     $8::text[], $9::bigint[], $10::int[])
           AS u(seq, status, attempt_count, next_attempt_at, last_error, finished_at, event_latency_ms,
                lease_owner, lease_token, held_attempt_count)
         -- Each row by its key (index probes), never a read of every pending delivery, as in
         -- aigw_claim (schema v8): stale statistics cannot make that look cheaper.
         WHERE d.seq = ANY($1::bigint[]) AND d.seq = u.seq AND (d.status = 'pending') IS TRUE
           AND d.lease_owner = u.lease_owner
           AND d.lease_token = u.lease_token AND d.attempt_count = u.held_attempt_count
         RETURNING d.seq
       ), recorded AS (
         INSERT INTO attempts (delivery_id, number, endpoint, started_at, status_code, latency_ms, error, response_body)
         SELECT * FROM unnest($11::text[], $12::int[], $13::text[], $14::bigint[], $15::int[], $16::int[], $17::text[], $18::text[])
       ), counted AS (
         INSERT INTO pending_counts (owner, pending, updated_at) SELECT $19::text, $20::bigint, $21::bigint WHERE $20::bigint <> 0
         ON CONFLICT (owner) DO UPDATE SET pending = pending_counts.pending + excluded.pending,
           updated_at = excluded.updated_at
       ), rolled AS (
         ${upsert.sql}
       )
       SELECT aigw_all_recorded((SELECT COUNT(*) FROM moved), $22::int) AS n,
         set_config('synchronous_commit', 'off', true) AS lazy`;
    return {
      sql,
      params: [
        held.map((l) => l.seq),
        nexts.map((n) => n.status),
        nexts.map((n) => n.attemptCount),
        nexts.map((n) => n.nextAttemptAt),
        nexts.map((n) => n.lastError),
        nexts.map((n) => n.finishedAt),
        latency,
        held.map((l) => l.leaseOwner),
        held.map((l) => l.leaseToken),
        held.map((l) => l.attemptCount),
        batch.map((b) => b.delivery.id),
        nexts.map((n) => n.attemptCount),
        held.map((l) => l.endpoint),
        batch.map((b) => b.attempt.startedAt),
        batch.map((b) => b.attempt.statusCode),
        batch.map((b) => Math.round(b.attempt.latencyMs)),
        batch.map((b) => b.attempt.error),
        batch.map((b) => b.attempt.responseBody.slice(0, MAX_RESPONSE_BODY_CHARS).replaceAll("\u0000", "")),
        this.owner,
        -finished,
        now,
        batch.length,
        ...upsert.params,
      ],
      results,
    };
  }

  /** A group of attempt results in one transaction: a handful of statements, whatever its size. */
  async #complete(
    c: pg.PoolClient,
    fx: TxEffects,
    batch: readonly QueuedCompletion[],
    now: number,
  ): Promise<CompleteResult[]> {
    const { rows } = await c.query<DeliveryRow & EventMetaColumns>(
      `SELECT d.*, e.org_id AS event_org_id, e.time_ms AS event_time_ms, e.ingested_at AS event_ingested_at
       FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq
       WHERE d.id = ANY($1::text[]) ORDER BY d.seq FOR UPDATE OF d`,
      [batch.map((b) => b.delivery.id)],
    );
    const rollups = new RollupBatch();
    const eventLatency = new Map<number, number>();
    const byId = new Map(rows.map((r) => [r.id, r]));
    const attempts: { row: DeliveryRow; attempt: NewAttempt; number: number }[] = [];
    const updates: { row: DeliveryRow; next: ReturnType<typeof nextDeliveryState> }[] = [];
    const results: CompleteResult[] = [];
    const recorded = new Set<string>();
    for (const { delivery, attempt, outcome } of batch) {
      const row = byId.get(delivery.id);
      if (
        row === undefined ||
        row.status !== "pending" ||
        row.lease_owner !== delivery.leaseOwner ||
        row.lease_token !== delivery.leaseToken ||
        recorded.has(row.id)
      ) {
        results.push({ recorded: false });
        continue;
      }
      recorded.add(row.id);
      const next = nextDeliveryState(
        { attemptCount: row.attempt_count, nextAttemptAt: row.next_attempt_at },
        attempt,
        outcome,
        now,
      );
      attempts.push({ row, attempt, number: next.attemptCount });
      updates.push({ row, next });
      const eventTimeMs =
        row.event_ingested_at === null
          ? undefined
          : row.event_time_ms! > 0
            ? row.event_time_ms!
            : row.event_ingested_at;
      const delivered = next.status === "delivered" && eventTimeMs !== undefined;
      if (delivered) eventLatency.set(row.seq, eventLatencyMs(eventTimeMs, now));
      rollups.attempt({
        now,
        endpoint: row.endpoint,
        eventType: row.event_type,
        orgId: row.event_org_id ?? "",
        outcome: outcomeName(next.status),
        latencyMs: attempt.latencyMs,
        eventTimeMs: delivered ? eventTimeMs : undefined,
      });
      const ms = eventLatency.get(row.seq);
      results.push(ms === undefined ? { recorded: true } : { recorded: true, eventLatencyMs: ms });
    }
    if (attempts.length > 0) {
      // The attempts, the deliveries' new states and the rollups: one statement, one round trip.
      const upsert = rollupUpsert(rollups, 15);
      await c.query(
        `WITH recorded AS (
           INSERT INTO attempts (delivery_id, number, endpoint, started_at, status_code, latency_ms, error, response_body)
           SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::text[], $8::text[])
         ), moved AS (
           UPDATE deliveries d SET status = u.status, attempt_count = u.attempt_count, next_attempt_at = u.next_attempt_at,
             due_at = u.next_attempt_at, last_error = u.last_error, finished_at = u.finished_at, lease_owner = '',
             lease_until = 0, lease_token = 0, event_latency_ms = u.event_latency_ms
           FROM unnest($9::bigint[], $10::text[], $11::int[], $12::bigint[], $13::text[], $14::bigint[], $15::int[])
             AS u(seq, status, attempt_count, next_attempt_at, last_error, finished_at, event_latency_ms)
           WHERE d.seq = u.seq
         )
         ${upsert.sql}`,
        [
          attempts.map((a) => a.row.id),
          attempts.map((a) => a.number),
          attempts.map((a) => a.row.endpoint),
          attempts.map((a) => a.attempt.startedAt),
          attempts.map((a) => a.attempt.statusCode),
          attempts.map((a) => Math.round(a.attempt.latencyMs)),
          attempts.map((a) => a.attempt.error),
          attempts.map((a) => a.attempt.responseBody.slice(0, MAX_RESPONSE_BODY_CHARS).replaceAll("\u0000", "")),
          updates.map((u) => u.row.seq),
          updates.map((u) => u.next.status),
          updates.map((u) => u.next.attemptCount),
          updates.map((u) => u.next.nextAttemptAt),
          updates.map((u) => u.next.lastError),
          updates.map((u) => u.next.finishedAt),
          updates.map((u) => eventLatency.get(u.row.seq) ?? null),
          ...upsert.params,
        ],
      );
    }
    const finished = updates.filter((u) => u.next.status !== "pending");
    fx.pending -= finished.length;
    // Operator events of this group, each with the result it belongs to.
    const operator: { index: number; event: Event | undefined }[] = [];
    const recordedIndex = results.flatMap((r, i) => (r.recorded ? [i] : []));
    for (const [j, { row, next, attempt }] of updates.map(
      (u, j) => [j, { ...u, attempt: attempts[j]!.attempt }] as const,
    )) {
      if (next.disableEndpoint !== undefined) {
        const before = (
          await c.query<{ enabled: boolean; org_id: string }>(
            "SELECT enabled, org_id FROM endpoints WHERE name = $1 FOR UPDATE",
            [row.endpoint],
          )
        ).rows[0];
        await c.query("UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE name = $1", [
          row.endpoint,
          next.disableEndpoint,
          now,
        ]);
        fx.changes.add("endpoints");
        if (before?.enabled) {
          const pending = await this.#countEndpointPending(c, row.endpoint);
          const last = { statusCode: attempt.statusCode, lastError: next.lastError };
          const event = endpointDisabledEvent(
            { name: row.endpoint, orgId: before.org_id },
            "gone",
            next.disableEndpoint,
            last,
            pending,
            now,
          );
          operator.push({ index: recordedIndex[j]!, event });
        }
      }
    }
    const ordered = finished.filter((u) => u.row.order_key !== "");
    if (ordered.length > 0) {
      await c.query(
        `UPDATE deliveries d SET due_at = d.next_attempt_at
         FROM (SELECT DISTINCT ON (u.endpoint, u.order_key) p.seq FROM unnest($1::text[], $2::text[]) AS u(endpoint, order_key)
               JOIN deliveries p ON p.status = 'pending' AND p.order_key <> '' AND p.endpoint = u.endpoint AND p.order_key = u.order_key
               ORDER BY u.endpoint, u.order_key, p.order_index) n
         WHERE d.seq = n.seq AND d.due_at = ${BLOCKED_DUE_AT}`,
        [ordered.map((u) => u.row.endpoint), ordered.map((u) => u.row.order_key)],
      );
      for (const u of ordered) fx.lanes.add(u.row.endpoint);
    }
    for (let i = 0, j = 0; i < batch.length; i++) {
      if (!results[i]!.recorded) continue;
      const { row, next } = updates[j++]!;
      if (!next.failoverTo || (await this.#failoverVisited(c, row, next.failoverTo))) continue;
      const target = await c.query<{ enabled: boolean }>("SELECT enabled FROM endpoints WHERE name = $1", [
        next.failoverTo,
      ]);
      if (target.rows[0]?.enabled !== true) continue;
      const copy: NewDeliveryRow = {
        id: newDeliveryId(),
        source: sourceOf(row),
        endpoint: next.failoverTo,
        originDeliveryId: row.id,
        blocked: false,
      };
      await this.#insertDeliveries(c, fx, [copy], now);
      results[i] = { ...results[i]!, failoverDelivery: newDeliveryRecord(copy, now) };
    }
    // Dead-lettered with no failover copy made: delivery.exhausted.
    const exhausted = updates
      .map((u, j) => ({ ...u, index: recordedIndex[j]! }))
      .filter((u) => u.next.status === "dead_lettered" && !results[u.index]!.failoverDelivery);
    if (exhausted.length > 0) {
      const orgs = await this.#endpointOrgs(
        c,
        exhausted.map((u) => u.row.endpoint),
      );
      for (const { row, next, index } of exhausted) {
        const event = deliveryExhaustedEvent(
          {
            id: row.id,
            endpoint: row.endpoint,
            eventId: row.event_id,
            eventType: row.event_type,
            attemptCount: next.attemptCount,
            lastError: next.lastError,
            originDeliveryId: row.origin_delivery_id,
          },
          orgs.get(row.endpoint) ?? "",
          now,
        );
        operator.push({ index, event });
      }
    }
    const made = operator.filter((o): o is { index: number; event: Event } => o.event !== undefined);
    if (made.length > 0) {
      const effects = await this.#storeOperator(
        c,
        fx,
        made.map((o) => o.event),
        now,
      );
      effects.forEach((e, k) => {
        const result = results[made[k]!.index]!;
        result.generated = [...(result.generated ?? []), e.stored];
        result.endpoints = [...new Set([...(result.endpoints ?? []), ...e.endpoints])];
      });
    }
    return results;
  }

  /** One statement for a transaction's rollup rows, however many. */
  async #writeRollups(c: pg.PoolClient, rollups: RollupBatch): Promise<void> {
    if (rollups.size === 0) return;
    const { sql, params } = rollupUpsert(rollups, 0);
    await c.query(sql, params);
  }

  async seriesRows(query: SeriesQuery): Promise<SeriesRowRecord[]> {
    const sql = seriesSql(query, (i) => `$${i}`);
    let rows: SeriesRowRecord[];
    if (query.res === FINEST_RES) {
      rows = (await this.#pool.query<SeriesRowRecord>(sql, seriesParams(query, query.res, query.from))).rows;
    } else {
      // One snapshot: the coarse rows, and the 10 s rows compaction has not summed into them yet.
      const c = await this.#pool.connect();
      try {
        await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        rows = (await c.query<SeriesRowRecord>(sql, seriesParams(query, query.res, query.from))).rows;
        const mark = await c.query<{ value: string }>("SELECT value FROM settings WHERE name = $1", [
          COMPACTED_SETTING,
        ]);
        const watermark = Number(mark.rows[0]?.value ?? 0);
        const fine = await c.query<SeriesRowRecord>(
          sql,
          seriesParams(query, FINEST_RES, Math.max(query.from, watermark)),
        );
        rows = rows.concat(fine.rows);
        await c.query("COMMIT");
      } catch (err) {
        await c.query("ROLLBACK").catch(() => {});
        throw err;
      } finally {
        c.release();
      }
    }
    return rows.map((r) => ({
      bucket: Number(r.bucket),
      key: r.key,
      bin: Number(r.bin),
      n: Number(r.n),
      v1: Number(r.v1),
      v2: Number(r.v2),
    }));
  }

  async queues(): Promise<QueueRecord[]> {
    const { rows } = await this.#pool.query<{
      endpoint: string;
      pending: string;
      dead_lettered: string;
      oldest_pending: number | null;
    }>(
      `SELECT endpoint, COUNT(*) FILTER (WHERE status = 'pending') AS pending,
         COUNT(*) FILTER (WHERE status = 'dead_lettered') AS dead_lettered,
         MIN(created_at) FILTER (WHERE status = 'pending') AS oldest_pending
       FROM deliveries WHERE status IN ('pending', 'dead_lettered') GROUP BY endpoint ORDER BY endpoint COLLATE "C"`,
    );
    return rows.map((r) => ({
      endpoint: r.endpoint,
      pending: Number(r.pending),
      deadLettered: Number(r.dead_lettered),
      oldestPendingAt: r.oldest_pending ?? undefined,
    }));
  }

  async purgeRollups(cutoffs: readonly { res: number; before: number }[]): Promise<number> {
    return this.#tx(async (c) => {
      const mark = await c.query<{ value: string }>("SELECT value FROM settings WHERE name = $1", [COMPACTED_SETTING]);
      const watermark = Number(mark.rows[0]?.value ?? 0);
      let n = 0;
      for (const { res, before } of cutoffs) {
        const until = res === FINEST_RES ? Math.min(before, watermark) : before;
        n += (await c.query("DELETE FROM rollups WHERE res = $1 AND bucket < $2", [res, until])).rowCount ?? 0;
      }
      return n;
    }, true);
  }

  async compactRollups(until: number): Promise<number> {
    return this.#tx(async (c) => {
      // The watermark's row, locked: replicas compacting at once take turns.
      await c.query(
        "INSERT INTO settings (name, value, updated_at) VALUES ($1, '', $2) ON CONFLICT (name) DO NOTHING",
        [COMPACTED_SETTING, Date.now()],
      );
      const mark = await c.query<{ value: string }>("SELECT value FROM settings WHERE name = $1 FOR UPDATE", [
        COMPACTED_SETTING,
      ]);
      let from = Number(mark.rows[0]?.value || Number.NaN);
      if (!Number.isFinite(from)) {
        const first = await c.query<{ b: number | null }>("SELECT MIN(bucket) AS b FROM rollups WHERE res = $1", [
          FINEST_RES,
        ]);
        from = first.rows[0]?.b ?? until;
      }
      const to = Math.max(from, until);
      if (to > from) {
        for (const res of COMPACTED_RESOLUTIONS) {
          await c.query(
            compactSql((i) => `$${i}`, "::bigint"),
            [res, from, to],
          );
        }
      }
      await c.query("UPDATE settings SET value = $2, updated_at = $3 WHERE name = $1", [
        COMPACTED_SETTING,
        String(to),
        Date.now(),
      ]);
      return to;
    }, true);
  }

  async rollupWatermark(): Promise<number> {
    const mark = await this.#pool.query<{ value: string }>("SELECT value FROM settings WHERE name = $1", [
      COMPACTED_SETTING,
    ]);
    return Number(mark.rows[0]?.value || 0);
  }

  async #endpointOrgs(c: pg.PoolClient, names: string[]): Promise<Map<string, string>> {
    const { rows } = await c.query<{ name: string; org_id: string }>(
      "SELECT name, org_id FROM endpoints WHERE name = ANY($1::text[])",
      [[...new Set(names)]],
    );
    return new Map(rows.map((r) => [r.name, r.org_id]));
  }

  async #countEndpointPending(q: pg.Pool | pg.PoolClient, endpoint: string): Promise<number> {
    const { rows } = await q.query<{ n: number }>(
      "SELECT COUNT(*)::int AS n FROM deliveries WHERE status = 'pending' AND endpoint = $1",
      [endpoint],
    );
    return rows[0]?.n ?? 0;
  }

  /**
   * Stores operator events (operator-events.ts) with their deliveries and feed positions,
   * inside the caller's transaction; the feed lock is taken last, as ingest does.
   */
  async #storeOperator(
    c: pg.PoolClient,
    fx: TxEffects,
    events: Event[],
    now: number,
  ): Promise<{ stored: StoredEvent; endpoints: string[] }[]> {
    // Made only once the control plane routes them (a bare store, as in tools and tests, makes none).
    if (events.length === 0 || this.#operatorRoute === undefined) return [];
    const stored = await this.#insertEvents(c, events, now);
    const out: { stored: StoredEvent; endpoints: string[] }[] = [];
    const deliveries: NewDeliveryRow[] = [];
    for (const s of stored) {
      const columns = eventColumns(s.event);
      const source: DeliverySource = {
        eventSeq: s.seq,
        eventId: s.event.id,
        eventType: columns.type,
        orderKey: columns.orderKey,
        orderIndex: columns.orderIndex,
      };
      const endpoints = operatorTargets(this.#operatorRoute, s.event);
      for (const endpoint of endpoints) {
        deliveries.push({ id: newDeliveryId(), source, endpoint, originDeliveryId: "", blocked: false });
      }
      out.push({ stored: s, endpoints });
    }
    await this.#insertDeliveries(c, fx, deliveries, now);
    await this.#placeInFeed(c, [{ stored, duplicates: 0, deliveries: deliveries.length, endpoints: [] }]);
    fx.events = true;
    return out;
  }

  routeOperatorEvents(route: OperatorRoute): void {
    this.#operatorRoute = route;
  }

  async #operatorEffects(c: pg.PoolClient, fx: TxEffects, event: Event, now: number): Promise<OperatorEffects> {
    const [made] = await this.#storeOperator(c, fx, [event], now);
    return made ? { generated: [made.stored], endpoints: made.endpoints } : NO_EFFECTS;
  }

  async #failoverVisited(c: pg.PoolClient, row: DeliveryRow, target: string): Promise<boolean> {
    if (row.endpoint === target) return true;
    let origin = row.origin_delivery_id;
    for (let hop = 0; origin !== "" && hop < MAX_FAILOVER_HOPS; hop++) {
      const previous = (
        await c.query<{ endpoint: string; origin_delivery_id: string }>(
          "SELECT endpoint, origin_delivery_id FROM deliveries WHERE id = $1",
          [origin],
        )
      ).rows[0];
      if (previous === undefined) return false;
      if (previous.endpoint === target) return true;
      origin = previous.origin_delivery_id;
    }
    return origin !== "";
  }

  releaseLeases(leaseOwner: string): Promise<number> {
    // Results submitted before are recorded first: once their leases are given back they
    // would be refused, and their deliveries made again.
    return this.#completions.commitWithAsync(
      () => this.#releaseLeases(leaseOwner),
      () => undefined,
    );
  }

  async #releaseLeases(leaseOwner: string): Promise<number> {
    for (const [id, lease] of this.#held) if (lease.leaseOwner === leaseOwner) this.#held.delete(id);
    const { rowCount } = await this.#pool.query(
      `UPDATE deliveries SET lease_owner = '', lease_until = 0, lease_token = 0, due_at = next_attempt_at
       WHERE lease_owner = $1 AND lease_owner <> '' AND status = 'pending'`,
      [leaseOwner],
    );
    return rowCount ?? 0;
  }

  async createDeliveries(
    eventSeq: number,
    endpoints: readonly string[],
    originDeliveryId?: string,
  ): Promise<DeliveryRecord[]> {
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      const event = (
        await c.query<{ id: string; type: number; order_key: string; token_index: number }>(
          "SELECT id, type, order_key, token_index FROM events WHERE seq = $1",
          [eventSeq],
        )
      ).rows[0];
      if (event === undefined) throw new StoreNotFoundError(`event seq ${eventSeq} not found`);
      const source: DeliverySource = {
        eventSeq,
        eventId: event.id,
        eventType: event.type,
        orderKey: event.order_key,
        orderIndex: event.token_index,
      };
      const names = [...new Set(endpoints)];
      const known = new Set(
        (await c.query<{ name: string }>("SELECT name FROM endpoints WHERE name = ANY($1::text[])", [names])).rows.map(
          (r) => r.name,
        ),
      );
      const missing = names.find((n) => !known.has(n));
      if (missing !== undefined) throw new StoreNotFoundError(`endpoint "${missing}" not found`);
      const rows = names.map((endpoint) => ({
        id: newDeliveryId(),
        source,
        endpoint,
        originDeliveryId: originDeliveryId ?? "",
        blocked: false,
      }));
      await this.#insertDeliveries(c, fx, rows, now);
      return rows.map((r) => newDeliveryRecord(r, now));
    });
  }

  async getDelivery(id: string): Promise<DeliveryDetail | undefined> {
    const row = (
      await this.#pool.query<DeliveryRow & { body: Buffer }>(
        "SELECT d.*, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = $1",
        [id],
      )
    ).rows[0];
    if (row === undefined) return undefined;
    return {
      delivery: toDeliveryRecord(row),
      attempts: await this.listAttempts(id),
      event: decodeEvent(row.body, row.event_seq),
    };
  }

  async listDeliveries(filter: DeliveryFilter): Promise<{ deliveries: DeliveryRecord[]; nextPageToken: string }> {
    checkDeliveryFilter(filter);
    const pageSize = filter.pageSize;
    const beforeSeq = filter.pageToken ? decodePageToken(filter.pageToken) : Number.MAX_SAFE_INTEGER;
    const params: unknown[] = [beforeSeq, pageSize + 1];
    const conditions = ["seq < $1"];
    if (filter.endpoint !== undefined) conditions.push(`endpoint = $${params.push(filter.endpoint)}`);
    if (filter.status !== undefined) conditions.push(`status = $${params.push(filter.status)}`);
    if (filter.eventId !== undefined) {
      conditions.push(`event_seq = (SELECT seq FROM events WHERE id = $${params.push(filter.eventId)})`);
    }
    if (filter.orgId !== undefined) {
      conditions.push(`endpoint IN (SELECT name FROM endpoints WHERE org_id = $${params.push(filter.orgId)})`);
    }
    const { rows } = await this.#pool.query<DeliveryRow>(
      `SELECT * FROM deliveries WHERE ${conditions.join(" AND ")} ORDER BY seq DESC LIMIT $2`,
      params,
    );
    const page = rows.slice(0, pageSize);
    const last = page[page.length - 1];
    return {
      deliveries: page.map(toDeliveryRecord),
      nextPageToken: rows.length > pageSize && last ? encodePageToken(last.seq) : "",
    };
  }

  async listAttempts(deliveryId: string): Promise<AttemptRecord[]> {
    const { rows } = await this.#pool.query<{
      delivery_id: string;
      number: number;
      started_at: number;
      status_code: number;
      latency_ms: number;
      error: string;
      response_body: string;
    }>("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY number", [deliveryId]);
    return rows.map((r) => ({
      deliveryId: r.delivery_id,
      number: r.number,
      startedAt: r.started_at,
      statusCode: r.status_code,
      latencyMs: r.latency_ms,
      error: r.error,
      responseBody: r.response_body,
    }));
  }

  async replayDelivery(id: string): Promise<DeliveryRecord> {
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      const row = (await c.query<DeliveryRow>("SELECT * FROM deliveries WHERE id = $1", [id])).rows[0];
      if (row === undefined) throw new StoreNotFoundError(`delivery "${id}" not found`);
      const endpoint = await c.query("SELECT 1 FROM endpoints WHERE name = $1", [row.endpoint]);
      if (endpoint.rowCount === 0) {
        throw new StoreNotFoundError(`endpoint "${row.endpoint}" of delivery "${id}" no longer exists`);
      }
      const copy: NewDeliveryRow = {
        id: newDeliveryId(),
        source: sourceOf(row),
        endpoint: row.endpoint,
        originDeliveryId: row.id,
        blocked: false,
      };
      await this.#insertDeliveries(c, fx, [copy], now);
      return newDeliveryRecord(copy, now);
    });
  }

  replayDeadLettered(endpoint?: string, orgId?: string): Promise<number> {
    return replayAllDeadLettered(this, endpoint, orgId);
  }

  async replayWindow(options: ReplayWindow): Promise<ReplayStep> {
    checkReplayWindow(options);
    const cursor = decodeReplayCursor(options.after);
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      // One replay step at a time over all replicas, so two never both queue the same delivery.
      await c.query("SELECT pg_advisory_xact_lock(hashtext('aigw replay dead letters'))");
      const { rows } = await c.query<DeliveryRow & { ep_enabled: boolean | null }>(
        `SELECT d.*, ep.enabled AS ep_enabled
         FROM deliveries d LEFT JOIN endpoints ep ON ep.name = d.endpoint
         WHERE d.status IN ('failed', 'dead_lettered') AND d.status = ANY($1::text[])
           AND d.finished_at >= $2 AND d.finished_at < $3 AND (d.finished_at, d.seq) > ($4, $5)
           AND ($6 = '' OR d.endpoint = $6) AND ($8 = '' OR ep.org_id = $8)
         ORDER BY d.finished_at, d.seq LIMIT $7`,
        [
          ...replayParams(options),
          cursor.finishedAt,
          cursor.seq,
          options.endpoint ?? "",
          options.limit,
          options.orgId ?? "",
        ],
      );
      // What rules a delivery out, looked up for the whole step by the origin and event
      // indexes (one probe per delivery, whatever else the endpoint has pending).
      const live = rows.filter((row) => row.ep_enabled === true);
      const replayed = new Set(
        live.length === 0
          ? []
          : (
              await c.query<{ origin_delivery_id: string; endpoint: string }>(
                `SELECT origin_delivery_id, endpoint FROM deliveries
                 WHERE origin_delivery_id <> '' AND origin_delivery_id = ANY($1::text[])`,
                [live.map((r) => r.id)],
              )
            ).rows.map((r) => `${r.origin_delivery_id}\u0000${r.endpoint}`),
      );
      const pendingAgain = new Set(
        live.length === 0
          ? []
          : (
              await c.query<{ event_seq: number; endpoint: string }>(
                "SELECT event_seq, endpoint FROM deliveries WHERE event_seq = ANY($1::bigint[]) AND status = 'pending'",
                [[...new Set(live.map((r) => r.event_seq))]],
              )
            ).rows.map((r) => `${Number(r.event_seq)}\u0000${r.endpoint}`),
      );
      const copies: NewDeliveryRow[] = live
        .filter(
          (row) =>
            !replayed.has(`${row.id}\u0000${row.endpoint}`) &&
            !pendingAgain.has(`${Number(row.event_seq)}\u0000${row.endpoint}`),
        )
        .map((row) => ({
          id: newDeliveryId(),
          source: sourceOf(row),
          endpoint: row.endpoint,
          originDeliveryId: row.id,
          blocked: false,
        }));
      await this.#insertDeliveries(c, fx, copies, now);
      const last = rows[rows.length - 1];
      return {
        replayed: copies.length,
        skipped: rows.length - copies.length,
        next:
          rows.length < options.limit || last === undefined
            ? undefined
            : encodeReplayCursor(Number(last.finished_at ?? 0), Number(last.seq)),
        endpoints: [...new Set(copies.map((d) => d.endpoint))],
      };
    });
  }

  async countReplayWindow(options: Omit<ReplayWindow, "after" | "limit">): Promise<number> {
    checkReplayWindow(options);
    const { rows } = await this.#pool.query<{ n: number }>(
      `SELECT COUNT(*)::int AS n FROM deliveries d
       WHERE d.status IN ('failed', 'dead_lettered') AND d.status = ANY($1::text[])
         AND d.finished_at >= $2 AND d.finished_at < $3 AND ($4 = '' OR d.endpoint = $4)
         AND ($5 = '' OR EXISTS (SELECT 1 FROM endpoints ep WHERE ep.name = d.endpoint AND ep.org_id = $5))`,
      [...replayParams(options), options.endpoint ?? "", options.orgId ?? ""],
    );
    return rows[0]?.n ?? 0;
  }

  async countHeld(): Promise<number> {
    const { rows } = await this.#pool.query<{ n: number }>(
      `SELECT COUNT(*)::int AS n FROM deliveries
       WHERE status = 'pending' AND endpoint IN (SELECT name FROM endpoints WHERE paused OR NOT enabled)`,
    );
    return rows[0]?.n ?? 0;
  }

  async countEndpointPending(endpoint: string): Promise<number> {
    return this.#countEndpointPending(this.#pool, endpoint);
  }

  async pauseEndpoint(name: string, paused: boolean): Promise<{ endpoint: EndpointRecord; pending: number }> {
    const now = Date.now();
    return this.#tx(async (c, fx) => {
      // Taken by every claim: once this commits, no replica claims for a paused endpoint.
      await c.query("SELECT pg_advisory_xact_lock($1)", [CLAIM_LOCK]);
      const row = await endpointRow(c, name, now, true);
      if (row === undefined) throw new StoreNotFoundError(`endpoint "${name}" not found`);
      if (row.paused !== paused) {
        await c.query("UPDATE endpoints SET paused = $2, paused_at = $3, updated_at = $4 WHERE name = $1", [
          name,
          paused,
          paused ? now : null,
          now,
        ]);
        fx.changes.add("endpoints");
        // Other replicas wake the lane at once when it resumes.
        if (!paused) fx.lanes.add(name);
      }
      return { endpoint: await this.#endpointRecord(c, name, now), pending: await this.#countEndpointPending(c, name) };
    });
  }

  async autoDisableEndpoint(name: string, why: AutoDisable): Promise<AutoDisableEffects> {
    const now = Date.now();
    return this.#tx(async (c, fx): Promise<AutoDisableEffects> => {
      const row = (
        await c.query<{ enabled: boolean; org_id: string }>(
          "SELECT enabled, org_id FROM endpoints WHERE name = $1 FOR UPDATE",
          [name],
        )
      ).rows[0];
      if (row === undefined || !row.enabled) return NO_EFFECTS;
      if (why.runStartedAt !== undefined) {
        // Locked: a replica ending the run (a success there) commits before this reads, or after it disabled.
        const run = await c.query<{ failing_since: number | string }>(
          "SELECT failing_since FROM endpoint_circuits WHERE endpoint = $1 FOR UPDATE",
          [name],
        );
        const runInStore = Number(run.rows[0]?.failing_since ?? 0);
        if (!runStillGoing(runInStore, why.runStartedAt)) return { ...NO_EFFECTS, runInStore };
      }
      await c.query("UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE name = $1", [
        name,
        why.detail,
        now,
      ]);
      fx.changes.add("endpoints");
      const pending = await this.#countEndpointPending(c, name);
      const event = endpointDisabledEvent(
        { name, orgId: row.org_id },
        "failing",
        why.detail,
        { statusCode: why.statusCode, lastError: why.lastError },
        pending,
        now,
        { since: why.failingSince, attempts: why.failedAttempts },
      );
      return this.#operatorEffects(c, fx, event, now);
    });
  }

  async countPending(): Promise<number> {
    const { rows } = await this.#pool.query<{ n: number | null }>(
      "SELECT SUM(pending)::bigint AS n FROM pending_counts",
    );
    return rows[0]?.n ?? 0;
  }

  async purgeStep(options: PurgeStepOptions): Promise<PurgeStep> {
    finiteNumber(options.beforeMs, "purgeStep beforeMs");
    finiteNumber(options.now, "purgeStep now");
    positiveInteger(options.limit, "purgeStep limit");
    const { beforeMs, now, limit } = options;
    return this.#tx(async (c, fx) => {
      // Two seeks from the cursor: many events share one ingested_at (one transaction's clock).
      const old = await c.query<{ seq: number; ingested_at: number }>(
        `SELECT seq, ingested_at FROM (
           (SELECT seq, ingested_at FROM events WHERE ingested_at = $1 AND seq > $2 AND ingested_at < $3
            ORDER BY seq LIMIT $4)
           UNION ALL
           (SELECT seq, ingested_at FROM events WHERE ingested_at > $1 AND ingested_at < $3
            ORDER BY ingested_at, seq LIMIT $4)
         ) o ORDER BY ingested_at, seq LIMIT $4`,
        [options.after.ingestedAt, options.after.seq, beforeMs, limit],
      );
      const result = emptyPurgeStep(options, old.rows.length);
      if (old.rows.length === 0) return result;
      const last = old.rows[old.rows.length - 1]!;
      result.after = { ingestedAt: last.ingested_at, seq: last.seq };
      const seqs = old.rows.map((r) => r.seq);
      // Locked, so a claim, an attempt's result or another replica's purge of these waits
      // for this step (and then finds what it deleted gone).
      await c.query("SELECT seq FROM events WHERE seq = ANY($1::bigint[]) FOR UPDATE", [seqs]);
      const deliveries = await c.query<{
        event_seq: number;
        id: string;
        status: string;
        finished_at: number | null;
        lease_owner: string;
        lease_until: number;
        endpoint: string;
        order_key: string;
        live: boolean;
      }>(
        `SELECT d.event_seq, d.id, d.status, d.finished_at, d.lease_owner, d.lease_until, d.endpoint, d.order_key,
           COALESCE(ep.enabled, false) AS live
         FROM deliveries d LEFT JOIN endpoints ep ON ep.name = d.endpoint
         WHERE d.event_seq = ANY($1::bigint[]) FOR UPDATE OF d`,
        [seqs],
      );
      const byEvent = new Map<number, (typeof deliveries.rows)[number][]>();
      for (const d of deliveries.rows) {
        const list = byEvent.get(d.event_seq);
        if (list) list.push(d);
        else byEvent.set(d.event_seq, [d]);
      }
      const purge: number[] = [];
      const abandoned: { endpoint: string; orderKey: string }[] = [];
      for (const row of old.rows) {
        const own = byEvent.get(row.seq) ?? [];
        const verdict = retentionVerdict(
          own.map((d) => ({
            status: d.status,
            finishedAt: d.finished_at,
            leaseOwner: d.lease_owner,
            leaseUntil: d.lease_until,
            live: d.live,
          })),
          beforeMs,
          now,
        );
        if (verdict === "pending") {
          result.keptPending++;
          result.oldestKeptPendingAt ??= row.ingested_at;
        } else if (verdict === "recent") result.keptRecent++;
        else {
          purge.push(row.seq);
          for (const d of own)
            if (d.status === "pending") abandoned.push({ endpoint: d.endpoint, orderKey: d.order_key });
        }
      }
      if (purge.length === 0) return result;
      result.attempts =
        (
          await c.query(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq = ANY($1::bigint[]))",
            [purge],
          )
        ).rowCount ?? 0;
      result.deliveries =
        (await c.query("DELETE FROM deliveries WHERE event_seq = ANY($1::bigint[])", [purge])).rowCount ?? 0;
      result.events = (await c.query("DELETE FROM events WHERE seq = ANY($1::bigint[])", [purge])).rowCount ?? 0;
      result.abandoned = abandoned.length;
      fx.pending -= abandoned.length;
      // A stream's later tokens waited for a token deleted here: let the next one of each go.
      const ordered = abandoned.filter((a) => a.orderKey !== "");
      if (ordered.length > 0) {
        await c.query(
          `UPDATE deliveries d SET due_at = d.next_attempt_at
           FROM (SELECT DISTINCT ON (u.endpoint, u.order_key) p.seq FROM unnest($1::text[], $2::text[]) AS u(endpoint, order_key)
                 JOIN deliveries p ON p.status = 'pending' AND p.order_key <> '' AND p.endpoint = u.endpoint AND p.order_key = u.order_key
                 ORDER BY u.endpoint, u.order_key, p.order_index) n
           WHERE d.seq = n.seq AND d.due_at = ${BLOCKED_DUE_AT}`,
          [ordered.map((a) => a.endpoint), ordered.map((a) => a.orderKey)],
        );
        for (const a of ordered) fx.lanes.add(a.endpoint);
      }
      return result;
    });
  }

  async stats(sinceMs: number): Promise<EndpointStatsRecord[]> {
    const stats = new StatsBuilder();
    const c = await this.#pool.connect();
    try {
      // One snapshot for the three reads.
      await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      for (const r of (await c.query<{ name: string }>("SELECT name FROM endpoints")).rows) stats.entry(r.name);
      const counts = await c.query<{ endpoint: string; status: string; n: number }>(
        "SELECT endpoint, status, COUNT(*)::int AS n FROM deliveries WHERE created_at >= $1 GROUP BY endpoint, status",
        [sinceMs],
      );
      for (const r of counts.rows) stats.count(r.endpoint, r.status, r.n);
      const latency = await c.query<{ endpoint: string; p50: number; p99: number }>(
        `SELECT endpoint, percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99
         FROM attempts WHERE started_at >= $1 GROUP BY endpoint`,
        [sinceMs],
      );
      // percentile_disc is the nearest rank, as StatsBuilder computes it from a sorted list.
      for (const r of latency.rows) stats.latencies(r.endpoint, r.p50 === r.p99 ? [r.p50] : [r.p50, r.p99]);
      const reasons = await c.query<{ endpoint: string; reason: string; n: number }>(
        `SELECT endpoint, CASE WHEN error <> '' THEN error ELSE 'HTTP ' || status_code END AS reason, COUNT(*)::int AS n
         FROM attempts WHERE started_at >= $1 AND (error <> '' OR status_code < 200 OR status_code >= 300)
         GROUP BY endpoint, reason ORDER BY endpoint, n DESC, reason`,
        [sinceMs],
      );
      for (const r of reasons.rows) stats.reason(r.endpoint, r.reason, r.n);
      await c.query("COMMIT");
    } finally {
      c.release();
    }
    return stats.build();
  }

  // ---- budgets and pricing ------------------------------------------------------------------

  async listBudgets(periodOf: (limitType: BudgetLimitType) => string): Promise<BudgetRecord[]> {
    const { rows } = await this.#pool.query<BudgetRow>('SELECT * FROM budgets ORDER BY org_id COLLATE "C", limit_type');
    const out: BudgetRecord[] = [];
    for (const row of rows) {
      const spec = toBudgetSpec(row);
      const period = periodOf(spec.limitType);
      const spend = await this.#pool.query<{ spend: number }>(
        "SELECT spend FROM budget_spend WHERE org_id = $1 AND limit_type = $2 AND period = $3",
        [spec.orgId, spec.limitType, period],
      );
      const fired = await this.#pool.query<{ threshold: number }>(
        `SELECT threshold FROM budget_thresholds_fired WHERE org_id = $1 AND limit_type = $2 AND period = $3
         ORDER BY threshold`,
        [spec.orgId, spec.limitType, period],
      );
      out.push({
        ...spec,
        period,
        currentSpend: spend.rows[0]?.spend ?? 0,
        firedThresholds: fired.rows.map((r) => r.threshold),
      });
    }
    return out;
  }

  async putBudget(budget: BudgetSpec): Promise<void> {
    checkBudgetSpec(budget);
    const now = Date.now();
    await this.#tx(async (c, fx) => {
      await c.query(
        `INSERT INTO budgets (org_id, limit_type, budget_limit, thresholds, enforce, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (org_id, limit_type) DO UPDATE SET budget_limit = excluded.budget_limit,
           thresholds = excluded.thresholds, enforce = excluded.enforce, updated_at = excluded.updated_at`,
        [budget.orgId, budget.limitType, budget.budgetLimit, JSON.stringify(budget.thresholds), budget.enforce, now],
      );
      fx.changes.add("budgets");
    });
  }

  async deleteBudget(orgId: string, limitType: BudgetLimitType): Promise<boolean> {
    return this.#tx(async (c, fx) => {
      const { rowCount } = await c.query("DELETE FROM budgets WHERE org_id = $1 AND limit_type = $2", [
        orgId,
        limitType,
      ]);
      if ((rowCount ?? 0) > 0) fx.changes.add("budgets");
      return (rowCount ?? 0) > 0;
    });
  }

  async listModelPrices(): Promise<StoredModelPrice[]> {
    const { rows } = await this.#pool.query<ModelPriceRow>('SELECT * FROM model_prices ORDER BY model COLLATE "C"');
    return rows.map(modelPriceOfRow);
  }

  async putModelPrice(price: StoredModelPrice): Promise<void> {
    checkModelPrice(price);
    const columns = modelPriceColumns(price);
    const now = Date.now();
    await this.#tx(async (c, fx) => {
      await c.query(
        `INSERT INTO model_prices (model, input_per_million, output_per_million, cached_input_per_million,
           cache_write_per_million, cache_write_1h_per_million, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (model) DO UPDATE SET input_per_million = excluded.input_per_million,
           output_per_million = excluded.output_per_million,
           cached_input_per_million = excluded.cached_input_per_million,
           cache_write_per_million = excluded.cache_write_per_million,
           cache_write_1h_per_million = excluded.cache_write_1h_per_million, updated_at = excluded.updated_at`,
        [
          columns.model,
          columns.inputPerMillion,
          columns.outputPerMillion,
          columns.cachedInputPerMillion,
          columns.cacheWritePerMillion,
          columns.cacheWrite1hPerMillion,
          now,
        ],
      );
      fx.changes.add("prices");
    });
  }

  // ---- what replicas share -----------------------------------------------------------------

  watch(watcher: StoreWatcher): () => void {
    return this.#listener.watch(watcher);
  }

  async nextConfigVersion(now: number): Promise<bigint> {
    const { rows } = await this.#pool.query<{ value: string }>(
      `INSERT INTO meta (name, value) VALUES ('config_version', $1::text)
       ON CONFLICT (name) DO UPDATE SET value = GREATEST(meta.value::bigint + 1, $1::bigint)::text
       RETURNING value`,
      [now],
    );
    return BigInt(rows[0]?.value ?? now);
  }

  async putCircuit(circuit: CircuitRecord): Promise<OperatorEffects> {
    return this.#tx(async (c, fx) => {
      const now = Date.now();
      // Closing: the row recorded open is locked, so of replicas closing it together one
      // sees it open and makes endpoint.recovered.
      const before = circuit.open
        ? undefined
        : (
            await c.query<{ open: boolean; opened_at: number }>(
              "SELECT open, opened_at FROM endpoint_circuits WHERE endpoint = $1 FOR UPDATE",
              [circuit.endpoint],
            )
          ).rows[0];
      await c.query(
        `INSERT INTO endpoint_circuits (endpoint, open, opened_at, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (endpoint) DO UPDATE SET open = excluded.open, opened_at = excluded.opened_at,
           updated_at = excluded.updated_at`,
        [circuit.endpoint, circuit.open, circuit.openedAt, now],
      );
      fx.changes.add("circuits");
      if (!before?.open) return NO_EFFECTS;
      const org = (await this.#endpointOrgs(c, [circuit.endpoint])).get(circuit.endpoint);
      if (org === undefined) return NO_EFFECTS;
      const event = endpointRecoveredEvent({ name: circuit.endpoint, orgId: org }, Number(before.opened_at), now);
      return this.#operatorEffects(c, fx, event, now);
    }, true);
  }

  async listCircuits(): Promise<CircuitRecord[]> {
    const { rows } = await this.#pool.query<{
      endpoint: string;
      open: boolean;
      opened_at: number;
      failing_since: number | string;
    }>("SELECT endpoint, open, opened_at, failing_since FROM endpoint_circuits");
    return rows.map((r) => ({
      endpoint: r.endpoint,
      open: r.open,
      openedAt: r.opened_at,
      failingSince: Number(r.failing_since),
    }));
  }

  async startFailingRun(endpoint: string, since: number): Promise<number> {
    const { rows } = await this.#pool.query<{ failing_since: number | string }>(
      `INSERT INTO endpoint_circuits (endpoint, open, opened_at, updated_at, failing_since) VALUES ($1, false, 0, $2, $3)
       ON CONFLICT (endpoint) DO UPDATE SET updated_at = excluded.updated_at,
         failing_since = CASE WHEN endpoint_circuits.failing_since = 0 OR endpoint_circuits.failing_since > excluded.failing_since
           THEN excluded.failing_since ELSE endpoint_circuits.failing_since END
       RETURNING failing_since`,
      [endpoint, Date.now(), since],
    );
    return Number(rows[0]?.failing_since ?? since);
  }

  async endFailingRun(endpoint: string): Promise<void> {
    await this.#pool.query(
      "UPDATE endpoint_circuits SET failing_since = 0, updated_at = $2 WHERE endpoint = $1 AND failing_since != 0",
      [endpoint, Date.now()],
    );
  }

  async putSidecars(owner: string, sidecars: readonly SidecarRecord[], now: number): Promise<void> {
    if (sidecars.length === 0) return;
    await this.#tx(async (c, fx) => {
      const { rows } = await c.query<{ inserted: boolean }>(
        `INSERT INTO sidecars (id, org_id, app, owner, seen_at, version, spool_batches, spool_bytes)
         SELECT id, o, a, $4, $5, v, sb, sy
         FROM unnest($1::text[], $2::text[], $3::text[], $6::text[], $7::bigint[], $8::bigint[]) AS u(id, o, a, v, sb, sy)
         ON CONFLICT (id) DO UPDATE SET org_id = excluded.org_id, app = excluded.app, owner = excluded.owner,
           seen_at = excluded.seen_at, version = excluded.version, spool_batches = excluded.spool_batches,
           spool_bytes = excluded.spool_bytes
         RETURNING (xmax = 0) AS inserted`,
        [
          sidecars.map((s) => s.id),
          sidecars.map((s) => s.orgId),
          sidecars.map((s) => s.app),
          owner,
          now,
          sidecars.map((s) => s.version ?? ""),
          sidecars.map((s) => s.spoolBatches ?? 0),
          sidecars.map((s) => s.spoolBytes ?? 0),
        ],
      );
      // A heartbeat changes nothing others need to hear of; a sidecar that arrived does.
      if (rows.some((r) => r.inserted)) fx.changes.add("presence");
    }, true);
  }

  async removeSidecar(id: string): Promise<void> {
    await this.#tx(async (c, fx) => {
      const { rowCount } = await c.query("DELETE FROM sidecars WHERE id = $1", [id]);
      if ((rowCount ?? 0) > 0) fx.changes.add("presence");
    }, true);
  }

  async listSidecars(since: number): Promise<SidecarRecord[]> {
    const { rows } = await this.#pool.query<SidecarRow>(
      `SELECT id, org_id, app, version, spool_batches, spool_bytes, seen_at FROM sidecars WHERE seen_at >= $1
       ORDER BY id`,
      [since],
    );
    return rows.map(sidecarRecord);
  }

  async getSetting(name: string): Promise<string | undefined> {
    const { rows } = await this.#pool.query<{ value: string }>("SELECT value FROM settings WHERE name = $1", [name]);
    return rows[0]?.value;
  }

  async putSetting(name: string, value: string): Promise<void> {
    await this.#tx(async (c, fx) => {
      await c.query(
        `INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
        [name, value, Date.now()],
      );
      fx.changes.add("settings");
    });
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Verifies the key against the check value sealed at first open (by whichever replica came first), or seals one. */
  async verifyKey(): Promise<void> {
    await this.#pool.query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", [
      KEY_CHECK_NAME,
      this.#box.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_CONTEXT),
    ]);
    const check = (
      await this.#pool.query<{ value: string }>("SELECT value FROM meta WHERE name = $1", [KEY_CHECK_NAME])
    ).rows[0];
    try {
      this.#box.open(check?.value ?? "", KEY_CHECK_CONTEXT);
    } catch {
      throw new Error(
        `PostgreSQL store ${this.where}: storage.encryption_key does not match the key its signing secrets were sealed with`,
      );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // What was submitted gets its commit before the pool goes.
    await Promise.allSettled([this.#ingests.settled(), this.#completions.settled()]);
    this.#closed = true;
    await this.#listener.close();
    await this.#pool.end();
    this.#logger?.debug({ store: this.where }, "PostgreSQL store closed");
  }
}

/** Opens a PostgreSQL store: connects, migrates (under an advisory lock), checks the key. */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
  const where = redactUrl(url);
  if (!options.encryptionKey) {
    throw new Error(
      `PostgreSQL store ${where}: storage.encryption_key is required (base64 of 32 bytes): every replica must seal ` +
        "and open signing secrets with the same key, so it cannot be a file beside one of them",
    );
  }
  const box = SecretBox.fromBase64(options.encryptionKey, "storage.encryption_key");
  const pool = new StorePool(
    {
      Client: PreparingClient,
      connectionString: url,
      max: options.maxConnections ?? 10,
      types,
      application_name: "aigw",
      connectionTimeoutMillis: 10_000,
    },
    where,
  );
  // A connection that breaks while idle (a restart, pg_terminate_backend) must not crash the process.
  pool.on("error", (err) => options.logger?.warn({ err, store: where }, "PostgreSQL connection lost; reconnecting"));
  try {
    await migratePostgres(pool, where, options.logger);
    const owner = options.owner ?? `${process.pid}-${ulid().slice(-10)}`;
    const store = new PostgresStore(pool, url, box, owner, options.logger);
    await store.verifyKey();
    return store;
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "postgres://(unparsable URL)";
  }
}

/** The feed's cursor is its position. */
function parsePosition(cursor: string): number {
  if (!/^\d{1,15}$/.test(cursor)) throw new TypeError(`"${cursor.slice(0, 40)}" is not a cursor of this store`);
  return Number(cursor);
}

async function endpointRow(
  q: pg.Pool | pg.PoolClient,
  name: string,
  now: number,
  forUpdate = false,
): Promise<EndpointRow | undefined> {
  const { rows } = await q.query<EndpointRow>(
    `SELECT ${ENDPOINT_COLUMNS} FROM endpoints e WHERE e.name = $2${forUpdate ? " FOR UPDATE OF e" : ""}`,
    [now, name],
  );
  return rows[0];
}

function replayParams(w: Omit<ReplayWindow, "after" | "limit">): [string[], number, number] {
  return [
    [...w.statuses],
    Math.max(Number.MIN_SAFE_INTEGER, Math.floor(w.since)),
    Math.min(Number.MAX_SAFE_INTEGER, Math.ceil(w.until)),
  ];
}

function endpointParams(endpoint: NewEndpoint, now: number): unknown[] {
  return [
    endpoint.name,
    endpoint.url,
    endpoint.enabled,
    JSON.stringify(endpoint.eventTypes),
    endpoint.failoverTo,
    now,
    filtersJson(endpoint.filters),
    endpoint.orgId ?? "",
    JSON.stringify(endpoint.apps ?? []),
  ];
}

function toEndpointRecord(row: EndpointRow): EndpointRecord {
  return {
    name: row.name,
    url: row.url,
    enabled: row.enabled,
    eventTypes: JSON.parse(row.event_types) as EventType[],
    failoverTo: row.failover_to,
    disabledReason: row.disabled_reason,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    signingKeyCount: row.key_count,
    filters: parseFilters(row.filters),
    orgId: row.org_id,
    apps: JSON.parse(row.apps) as string[],
    oneOff: row.one_off,
    fromConfig: row.config_secret !== "",
    paused: row.paused,
    pausedAt: row.paused_at === null ? null : Number(row.paused_at),
  };
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

function newDeliveryRecord(row: NewDeliveryRow, now: number): DeliveryRecord {
  return {
    id: row.id,
    eventSeq: row.source.eventSeq,
    eventId: row.source.eventId,
    eventType: row.source.eventType as EventType,
    endpoint: row.endpoint,
    status: "pending",
    attemptCount: 0,
    createdAt: now,
    nextAttemptAt: now,
    finishedAt: null,
    lastError: "",
    originDeliveryId: row.originDeliveryId,
    orderKey: row.source.orderKey,
    orderIndex: row.source.orderIndex,
  };
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

function toBudgetSpec(row: BudgetRow): BudgetSpec {
  return {
    orgId: row.org_id,
    limitType: row.limit_type,
    budgetLimit: row.budget_limit,
    thresholds: JSON.parse(row.thresholds) as number[],
    enforce: row.enforce,
  };
}

function decodeEvent(body: Uint8Array, seq: number): Event {
  try {
    return fromBinary(EventSchema, body);
  } catch (err) {
    throw new Error(`stored event seq ${seq} cannot be decoded: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The upsert of a transaction's rollup rows, its parameters numbered from `offset` + 1
 * (so it can be one part of a larger statement). Rows sorted by key, so concurrent
 * transactions lock shared rows in one order (no deadlock).
 */
function rollupUpsert(rollups: RollupBatch, offset: number): { sql: string; params: unknown[] } {
  const rows = sortedRollupRows(rollups);
  const $ = (i: number) => `$${offset + i}`;
  return {
    sql: `INSERT INTO rollups (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin, n, v1, v2)
       SELECT * FROM unnest(${$(1)}::text[], ${$(2)}::bigint[], ${$(3)}::bigint[], ${$(4)}::text[], ${$(5)}::int[],
         ${$(6)}::text[], ${$(7)}::text[], ${$(8)}::text[], ${$(9)}::int[], ${$(10)}::bigint[], ${$(11)}::float8[],
         ${$(12)}::float8[])
       ON CONFLICT (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin)
       DO UPDATE SET n = rollups.n + excluded.n, v1 = rollups.v1 + excluded.v1, v2 = rollups.v2 + excluded.v2`,
    params: [
      rows.map((r) => r.kind),
      rows.map((r) => r.res),
      rows.map((r) => r.bucket),
      rows.map((r) => r.endpoint),
      rows.map((r) => r.eventType),
      rows.map((r) => r.orgId),
      rows.map((r) => r.model),
      rows.map((r) => r.outcome),
      rows.map((r) => r.bin),
      rows.map((r) => r.n),
      rows.map((r) => r.v1),
      rows.map((r) => r.v2),
    ],
  };
}

/** The rows of a common group of results, as aigw_claim reads them (json_to_recordset). */
function fastResultRows(fast: FastResults): object[] {
  return fast.batch.map(({ delivery, attempt }, i) => {
    const lease = fast.held[i]!;
    const next = fast.nexts[i]!;
    return {
      seq: lease.seq,
      status: next.status,
      attempt_count: next.attemptCount,
      next_attempt_at: next.nextAttemptAt,
      last_error: next.lastError,
      finished_at: next.finishedAt,
      event_latency_ms: fast.latency[i],
      lease_owner: lease.leaseOwner,
      lease_token: lease.leaseToken,
      held_attempt_count: lease.attemptCount,
      delivery_id: delivery.id,
      endpoint: lease.endpoint,
      started_at: attempt.startedAt,
      status_code: attempt.statusCode,
      latency_ms: Math.round(attempt.latencyMs),
      error: attempt.error,
      response_body: attempt.responseBody.slice(0, MAX_RESPONSE_BODY_CHARS).replaceAll("\u0000", ""),
    };
  });
}

/** Rollup rows sorted by key, so concurrent transactions lock shared rows in one order (no deadlock). */
function sortedRollupRows(rollups: RollupBatch): RollupRow[] {
  return rollups
    .rows()
    .sort((a, b) =>
      a.kind !== b.kind
        ? a.kind < b.kind
          ? -1
          : 1
        : a.res - b.res ||
          a.bucket - b.bucket ||
          cmp(a.endpoint, b.endpoint) ||
          a.eventType - b.eventType ||
          cmp(a.orgId, b.orgId) ||
          cmp(a.model, b.model) ||
          cmp(a.outcome, b.outcome) ||
          a.bin - b.bin,
    );
}
