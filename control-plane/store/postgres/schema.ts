import type pg from "pg";
import type { Logger } from "../../../common/logger.js";

/**
 * PostgreSQL schema migrations, applied in order at start; `aigw_schema_version` holds the
 * highest one applied. Replicas starting together take an advisory lock first, so one
 * migrates and the others find it done. Never edit a released migration: add the next one.
 *
 * The tables mirror the SQLite store's (sqlite/schema.ts), plus what replicas share: the
 * live feed's order (`feed`: positions given in commit order, see PostgresStore.ingest);
 * leases carry a fencing token from a sequence; the pending count is kept per process
 * (`pending_counts`), summed on read.
 */
const MIGRATIONS: readonly string[] = [
  // v1
  `
  CREATE TABLE meta (
    name text PRIMARY KEY,
    value text NOT NULL
  );

  CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    type integer NOT NULL,
    org_id text NOT NULL,
    app text NOT NULL,
    request_id text NOT NULL,
    order_key text NOT NULL,
    token_index integer NOT NULL,
    time_ms bigint NOT NULL,
    ingested_at bigint NOT NULL,
    body bytea NOT NULL
  );
  CREATE INDEX events_ingested_at ON events (ingested_at);

  -- The feed's order: positions handed out under a lock held until commit, so a reader
  -- that sees position N has seen every position before it (a plain sequence on events
  -- is not commit-ordered with several writers).
  CREATE TABLE feed (
    position bigserial PRIMARY KEY,
    event_seq bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE
  );
  CREATE INDEX feed_event ON feed (event_seq);

  CREATE TABLE endpoints (
    name text PRIMARY KEY,
    url text NOT NULL,
    enabled boolean NOT NULL,
    event_types text NOT NULL,
    failover_to text NOT NULL,
    disabled_reason text NOT NULL,
    config_secret text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    filters text NOT NULL DEFAULT '{}',
    org_id text NOT NULL DEFAULT ''
  );

  CREATE TABLE signing_keys (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    endpoint text NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    secret text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint
  );
  CREATE INDEX signing_keys_endpoint ON signing_keys (endpoint, seq);

  CREATE TABLE org_signing_keys (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    org_id text NOT NULL,
    secret text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint
  );
  CREATE INDEX org_signing_keys_org ON org_signing_keys (org_id, seq);

  CREATE TABLE deliveries (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    event_seq bigint NOT NULL REFERENCES events (seq),
    event_id text NOT NULL,
    event_type integer NOT NULL,
    endpoint text NOT NULL,
    status text NOT NULL,
    attempt_count integer NOT NULL,
    next_attempt_at bigint NOT NULL,
    due_at bigint NOT NULL,
    lease_owner text NOT NULL,
    lease_until bigint NOT NULL,
    lease_token bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    finished_at bigint,
    last_error text NOT NULL,
    origin_delivery_id text NOT NULL,
    order_key text NOT NULL,
    order_index integer NOT NULL
  );
  CREATE INDEX deliveries_due ON deliveries (endpoint, due_at, seq) WHERE status = 'pending';
  CREATE INDEX deliveries_leased ON deliveries (endpoint, lease_until) WHERE lease_owner <> '';
  CREATE INDEX deliveries_lease_owner ON deliveries (lease_owner) WHERE lease_owner <> '';
  CREATE INDEX deliveries_order ON deliveries (endpoint, order_key, order_index)
    WHERE status = 'pending' AND order_key <> '';
  CREATE INDEX deliveries_event ON deliveries (event_seq);
  CREATE INDEX deliveries_endpoint ON deliveries (endpoint, seq);
  CREATE INDEX deliveries_status ON deliveries (status, seq);
  CREATE INDEX deliveries_created_at ON deliveries (created_at);
  CREATE INDEX deliveries_origin ON deliveries (origin_delivery_id) WHERE origin_delivery_id <> '';
  CREATE SEQUENCE lease_tokens;

  CREATE TABLE attempts (
    delivery_id text NOT NULL REFERENCES deliveries (id),
    number integer NOT NULL,
    endpoint text NOT NULL,
    started_at bigint NOT NULL,
    status_code integer NOT NULL,
    latency_ms integer NOT NULL,
    error text NOT NULL,
    response_body text NOT NULL,
    PRIMARY KEY (delivery_id, number)
  );
  CREATE INDEX attempts_started_at ON attempts (started_at);

  -- Pending deliveries, counted as rows change: one row per process, summed on read, so
  -- no two replicas wait on one counter.
  CREATE TABLE pending_counts (
    owner text PRIMARY KEY,
    pending bigint NOT NULL,
    updated_at bigint NOT NULL
  );

  CREATE TABLE budgets (
    org_id text NOT NULL,
    limit_type text NOT NULL,
    budget_limit double precision NOT NULL,
    thresholds text NOT NULL,
    enforce boolean NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (org_id, limit_type)
  );

  CREATE TABLE budget_spend (
    org_id text NOT NULL,
    limit_type text NOT NULL,
    period text NOT NULL,
    spend double precision NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (org_id, limit_type, period)
  );

  CREATE TABLE budget_thresholds_fired (
    org_id text NOT NULL,
    limit_type text NOT NULL,
    period text NOT NULL,
    threshold integer NOT NULL,
    event_id text NOT NULL,
    fired_at bigint NOT NULL,
    PRIMARY KEY (org_id, limit_type, period, threshold)
  );

  CREATE TABLE model_prices (
    model text PRIMARY KEY,
    input_per_million double precision NOT NULL,
    output_per_million double precision NOT NULL,
    updated_at bigint NOT NULL
  );

  CREATE TABLE endpoint_circuits (
    endpoint text PRIMARY KEY,
    open boolean NOT NULL,
    opened_at bigint NOT NULL,
    updated_at bigint NOT NULL
  );
  CREATE TABLE sidecars (
    id text PRIMARY KEY,
    org_id text NOT NULL,
    app text NOT NULL,
    owner text NOT NULL,
    seen_at bigint NOT NULL
  );
  CREATE INDEX sidecars_seen_at ON sidecars (seen_at);
  CREATE TABLE settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    updated_at bigint NOT NULL
  );
  `,
  // v2: a model's prompt-cache prices (control-plane/budgets/price-book.ts). NULL: the
  // default rule (cachePrices in control-plane/config/pricing.ts).
  `
  ALTER TABLE model_prices ADD COLUMN cached_input_per_million double precision;
  ALTER TABLE model_prices ADD COLUMN cache_write_per_million double precision;
  ALTER TABLE model_prices ADD COLUMN cache_write_1h_per_million double precision;
  `,
  // v3: orgs (tenancy). An endpoint's org_id now means the org it belongs to (one-off
  // endpoints had it already; one_off tells them apart), apps limits it to those apps;
  // org-scoped API tokens, kept as digests only.
  `
  ALTER TABLE endpoints ADD COLUMN one_off boolean NOT NULL DEFAULT false;
  UPDATE endpoints SET one_off = true WHERE org_id <> '';
  ALTER TABLE endpoints ADD COLUMN apps text NOT NULL DEFAULT '[]';
  CREATE TABLE api_tokens (
    id text PRIMARY KEY,
    digest text NOT NULL UNIQUE,
    org_id text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
  );
  `,
  // v4: paused endpoints (deliveries held, not claimed: a paused endpoint is not a lane),
  // and replay by time window: failed and dead-lettered deliveries in order of finish time.
  `
  ALTER TABLE endpoints ADD COLUMN paused boolean NOT NULL DEFAULT false;
  ALTER TABLE endpoints ADD COLUMN paused_at bigint;
  CREATE INDEX deliveries_finished ON deliveries (finished_at, seq) WHERE status IN ('failed', 'dead_lettered');
  `,
  // v5: analytics rollups (control-plane/store/rollups.ts), each delivery's event→delivered
  // latency, and what sidecars report of themselves (version, spool depth).
  `
  CREATE TABLE rollups (
    kind text NOT NULL,
    res bigint NOT NULL,
    bucket bigint NOT NULL,
    endpoint text NOT NULL,
    event_type integer NOT NULL,
    org_id text NOT NULL,
    model text NOT NULL,
    outcome text NOT NULL,
    bin integer NOT NULL,
    n bigint NOT NULL,
    v1 double precision NOT NULL,
    v2 double precision NOT NULL,
    PRIMARY KEY (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin)
  );
  CREATE INDEX rollups_res_bucket ON rollups (res, bucket);
  ALTER TABLE deliveries ADD COLUMN event_latency_ms integer;
  ALTER TABLE sidecars ADD COLUMN version text NOT NULL DEFAULT '';
  ALTER TABLE sidecars ADD COLUMN spool_batches bigint NOT NULL DEFAULT 0;
  ALTER TABLE sidecars ADD COLUMN spool_bytes bigint NOT NULL DEFAULT 0;
  `,
  // v6: live leases in one small index that holds exactly them: every claim counts them (the
  // caps), so the count is an index-only scan of a few dozen entries instead of a bitmap
  // over the whole pending backlog; releasing a process's leases reads the same index.
  // One index where there were two: a claim's update (never HOT) writes one entry fewer.
  `
  CREATE INDEX deliveries_live_leases ON deliveries (lease_owner, endpoint, lease_until)
    WHERE lease_owner <> '' AND status = 'pending';
  DROP INDEX deliveries_leased;
  DROP INDEX deliveries_lease_owner;
  -- A group of attempt results recorded in one statement (PostgresStore.#completeFast)
  -- holds only if every result still held its lease: otherwise this aborts the statement
  -- and the group is recorded again row by row, each stale one refused.
  CREATE FUNCTION aigw_all_recorded(got bigint, expected integer) RETURNS integer LANGUAGE plpgsql AS $$
  BEGIN
    IF got <> expected THEN
      RAISE EXCEPTION 'aigw: % of % attempt results still held their lease', got, expected USING ERRCODE = 'AGW01';
    END IF;
    RETURN got;
  END $$;
  `,
  // v7: an endpoint's run of failed attempts (delivery.auto_disable_after_ms) is kept in the
  // store, so a restart does not start its clock again, and replicas share it. 0: no run.
  `
  ALTER TABLE endpoint_circuits ADD COLUMN failing_since bigint NOT NULL DEFAULT 0;
  `,
  // v8: a claim in one round trip (PostgresStore.claim): this process's attempt results waiting
  // for their commit are recorded first, each only if it still holds the lease its claim
  // handed out (owner, fencing number, attempt count: otherwise nothing is written and the
  // results go the general way); then, under the claim lock, every replica's live leases are
  // counted against the caps and each lane's due rows leased (SKIP LOCKED). One row per
  // delivery leased, then one per lane (seq null): what it was allowed and when it is next due.
  `
  CREATE FUNCTION aigw_claim(results json, rollup json, pending_owner text, finished integer,
      lanes text[], limits integer[], now bigint, lease_owner text, lease_until bigint,
      per_endpoint integer, total integer)
  RETURNS TABLE (seq bigint, id text, event_seq bigint, event_id text, event_type integer, endpoint text,
      attempt_count integer, next_attempt_at bigint, created_at bigint, last_error text,
      origin_delivery_id text, order_key text, order_index integer, body bytea, event_org_id text,
      event_time_ms bigint, event_ingested_at bigint, lease_token bigint, lane_allowed integer,
      lane_next_due bigint)
  LANGUAGE plpgsql AS $$
  DECLARE
    v_token bigint;
    v_allowed integer[] := aigw_claim.limits;
    v_live_endpoints text[];
    v_live_counts integer[];
    v_room integer;
    v_n bigint;
    v_seqs bigint[];
  BEGIN
    -- As every claim and result: the commit does not wait for its WAL flush (redone, not lost).
    -- Plain index scans mark the dead entries they pass, so the next claim skips them.
    PERFORM set_config('synchronous_commit', 'off', true), set_config('enable_bitmapscan', 'off', true);
    IF aigw_claim.results IS NOT NULL THEN
      -- Each result's row by its key (d.seq = ANY: index probes), never a read of every
      -- pending delivery, which stale statistics (a backlog that arrived after the last
      -- analyze) can make look cheaper: "(status = 'pending') IS TRUE" is the same test with
      -- no index on status to prefer.
      v_seqs := ARRAY(SELECT (e->>'seq')::bigint FROM json_array_elements(aigw_claim.results) e);
      WITH u AS (
        SELECT * FROM json_to_recordset(aigw_claim.results) AS r(seq bigint, status text, attempt_count integer,
          next_attempt_at bigint, last_error text, finished_at bigint, event_latency_ms integer, lease_owner text,
          lease_token bigint, held_attempt_count integer, delivery_id text, endpoint text, started_at bigint,
          status_code integer, latency_ms integer, error text, response_body text)
      ), moved AS (
        UPDATE deliveries d SET status = u.status, attempt_count = u.attempt_count,
          next_attempt_at = u.next_attempt_at, due_at = u.next_attempt_at, last_error = u.last_error,
          finished_at = u.finished_at, lease_owner = '', lease_until = 0, lease_token = 0,
          event_latency_ms = u.event_latency_ms
        FROM u
        WHERE d.seq = ANY(v_seqs) AND d.seq = u.seq AND (d.status = 'pending') IS TRUE
          AND d.lease_owner = u.lease_owner
          AND d.lease_token = u.lease_token AND d.attempt_count = u.held_attempt_count
        RETURNING d.seq
      ), recorded AS (
        INSERT INTO attempts (delivery_id, number, endpoint, started_at, status_code, latency_ms, error, response_body)
        SELECT u.delivery_id, u.attempt_count, u.endpoint, u.started_at, u.status_code, u.latency_ms, u.error,
          u.response_body FROM u
      )
      SELECT COUNT(*) INTO v_n FROM moved;
      PERFORM aigw_all_recorded(v_n, json_array_length(aigw_claim.results));
      IF aigw_claim.finished <> 0 THEN
        INSERT INTO pending_counts (owner, pending, updated_at)
        VALUES (aigw_claim.pending_owner, -aigw_claim.finished, aigw_claim.now)
        ON CONFLICT (owner) DO UPDATE SET pending = pending_counts.pending + excluded.pending,
          updated_at = excluded.updated_at;
      END IF;
      INSERT INTO rollups (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin, n, v1, v2)
      SELECT * FROM json_to_recordset(aigw_claim.rollup) AS r(kind text, res bigint, bucket bigint, endpoint text,
        "eventType" integer, "orgId" text, model text, outcome text, bin integer, n bigint, v1 float8, v2 float8)
      -- By its constraint: its columns' names are this function's too.
      ON CONFLICT ON CONSTRAINT rollups_pkey
      DO UPDATE SET n = rollups.n + excluded.n, v1 = rollups.v1 + excluded.v1, v2 = rollups.v2 + excluded.v2;
    END IF;
    IF aigw_claim.per_endpoint IS NOT NULL THEN
      -- Every claimer counts live leases under this lock (PostgresStore's CLAIM_LOCK).
      PERFORM pg_advisory_xact_lock(7366274902);
      SELECT array_agg(l.endpoint), array_agg(l.n) INTO v_live_endpoints, v_live_counts
      FROM (SELECT d.endpoint, COUNT(*)::integer AS n FROM deliveries d
            WHERE d.lease_owner <> '' AND d.lease_until > aigw_claim.now AND d.status = 'pending'
            GROUP BY d.endpoint) l;
      v_room := aigw_claim.total - COALESCE((SELECT SUM(c) FROM unnest(v_live_counts) c), 0);
      FOR i IN 1 .. COALESCE(array_length(aigw_claim.lanes, 1), 0) LOOP
        v_allowed[i] := GREATEST(0, LEAST(aigw_claim.limits[i],
          aigw_claim.per_endpoint - COALESCE(v_live_counts[array_position(v_live_endpoints, aigw_claim.lanes[i])], 0),
          v_room));
        v_room := v_room - v_allowed[i];
      END LOOP;
    END IF;
    v_token := nextval('lease_tokens');
    RETURN QUERY
    WITH picked AS (
      SELECT p.seq FROM unnest(aigw_claim.lanes, v_allowed) AS l(endpoint, lim)
      CROSS JOIN LATERAL (
        SELECT d.seq FROM deliveries d
        WHERE d.status = 'pending' AND d.endpoint = l.endpoint AND d.due_at <= aigw_claim.now
        ORDER BY d.due_at, d.seq LIMIT l.lim FOR UPDATE SKIP LOCKED) p
      -- A paused endpoint is not a lane: one probe of its row per lane.
      WHERE l.lim > 0
        AND NOT EXISTS (SELECT 1 FROM endpoints ep WHERE ep.name = l.endpoint AND ep.paused AND ep.enabled)
    ), leased AS (
      UPDATE deliveries d SET lease_owner = aigw_claim.lease_owner, lease_until = aigw_claim.lease_until,
        due_at = aigw_claim.lease_until, lease_token = v_token
      FROM picked WHERE d.seq = picked.seq
      RETURNING d.seq, d.id, d.event_seq, d.event_id, d.event_type, d.endpoint, d.attempt_count,
        d.next_attempt_at, d.created_at, d.last_error, d.origin_delivery_id, d.order_key, d.order_index
    )
    SELECT leased.seq, leased.id, leased.event_seq, leased.event_id, leased.event_type, leased.endpoint,
      leased.attempt_count, leased.next_attempt_at, leased.created_at, leased.last_error,
      leased.origin_delivery_id, leased.order_key, leased.order_index, e.body, e.org_id, e.time_ms,
      e.ingested_at, v_token, NULL::integer, NULL::bigint
    FROM leased JOIN events e ON e.seq = leased.event_seq;
    -- Each lane: what the caps allowed it, and when its earliest pending delivery is due
    -- (read after the claim: a lane that got less than allowed ran dry).
    RETURN QUERY
    SELECT NULL::bigint, NULL::text, NULL::bigint, NULL::text, NULL::integer, l.endpoint, NULL::integer,
      NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::text,
      NULL::bigint, NULL::bigint, v_token, l.lim,
      CASE WHEN l.lim > 0
        AND NOT EXISTS (SELECT 1 FROM endpoints ep WHERE ep.name = l.endpoint AND ep.paused AND ep.enabled)
      THEN (SELECT d.due_at FROM deliveries d WHERE d.status = 'pending' AND d.endpoint = l.endpoint
            ORDER BY d.due_at LIMIT 1) END
    FROM unnest(aigw_claim.lanes, v_allowed) WITH ORDINALITY AS l(endpoint, lim, ord)
    ORDER BY l.ord;
  END $$;
  `,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** One key for every aigw process migrating this database (pg_advisory_lock's bigint). */
const MIGRATION_LOCK = 7_366_274_901;

/**
 * Applies what is missing, under an advisory lock (replicas starting at once wait for the
 * one migrating). A database newer than this code is refused with the versions named.
 */
export async function migratePostgres(pool: pg.Pool, where: string, logger?: Logger): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    try {
      await client.query("CREATE TABLE IF NOT EXISTS aigw_schema_version (version integer NOT NULL)");
      const { rows } = await client.query<{ version: number | null }>(
        "SELECT MAX(version) AS version FROM aigw_schema_version",
      );
      const current = rows[0]?.version ?? 0;
      if (current > PG_SCHEMA_VERSION) {
        throw new Error(
          `PostgreSQL store ${where} has schema version ${current}, newer than this aigw supports (${PG_SCHEMA_VERSION}); ` +
            "upgrade aigw (every replica) or use another database",
        );
      }
      for (let version = current + 1; version <= PG_SCHEMA_VERSION; version++) {
        await client.query("BEGIN");
        try {
          await client.query(MIGRATIONS[version - 1] as string);
          await client.query("INSERT INTO aigw_schema_version (version) VALUES ($1)", [version]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK").catch(() => {});
          throw new Error(`PostgreSQL store ${where}: migration ${version} failed: ${(err as Error).message}`, {
            cause: err,
          });
        }
        logger?.info({ store: where, version }, "applied store schema migration");
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => {});
    }
  } finally {
    client.release();
  }
}
