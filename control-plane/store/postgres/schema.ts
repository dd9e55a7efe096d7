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
