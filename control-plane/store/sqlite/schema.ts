import type { Database } from "better-sqlite3";
import type { Logger } from "../../../common/logger.js";

/**
 * Schema migrations, applied in order at open; `schema_version` holds the highest one
 * applied. Never edit a released migration: add the next one.
 */
const MIGRATIONS: readonly string[] = [
  // v1
  `
  CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
  );

  CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    app TEXT NOT NULL,
    request_id TEXT NOT NULL,
    order_key TEXT NOT NULL,
    token_index INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    ingested_at INTEGER NOT NULL,
    body BLOB NOT NULL
  );
  CREATE INDEX events_ingested_at ON events (ingested_at);

  CREATE TABLE endpoints (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    event_types TEXT NOT NULL,
    failover_to TEXT NOT NULL,
    disabled_reason TEXT NOT NULL,
    -- The secret the config file last gave (sealed), so a restart with the same file
    -- keeps keys rotated at runtime, and only a changed file secret replaces them.
    config_secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );

  CREATE TABLE signing_keys (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
  );
  CREATE INDEX signing_keys_endpoint ON signing_keys (endpoint, seq);

  -- seq is insertion order (keyset pagination); id is the public "dlv_" id.
  -- Deliveries keep their endpoint name after the endpoint is deleted (history), so no
  -- foreign key there. due_at is when the row can next be claimed: next_attempt_at, or
  -- lease_until while leased, so one index range answers the claim query.
  CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    event_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt_count INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    last_error TEXT NOT NULL,
    origin_delivery_id TEXT NOT NULL,
    order_key TEXT NOT NULL,
    order_index INTEGER NOT NULL
  );
  CREATE INDEX deliveries_claim ON deliveries (due_at) WHERE status = 'pending';
  CREATE INDEX deliveries_order ON deliveries (endpoint, order_key, order_index)
    WHERE status = 'pending' AND order_key != '';
  CREATE INDEX deliveries_event ON deliveries (event_seq);
  CREATE INDEX deliveries_endpoint ON deliveries (endpoint, seq);
  CREATE INDEX deliveries_status ON deliveries (status, seq);
  CREATE INDEX deliveries_created_at ON deliveries (created_at);
  CREATE INDEX deliveries_origin ON deliveries (origin_delivery_id) WHERE origin_delivery_id != '';

  CREATE TABLE attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    number INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    error TEXT NOT NULL,
    response_body TEXT NOT NULL,
    PRIMARY KEY (delivery_id, number)
  ) WITHOUT ROWID;
  CREATE INDEX attempts_started_at ON attempts (started_at);
  `,
  // v2: budgets and pricing (control-plane/budgets). Spend is counted for every org, with
  // or without a budget, so a budget set mid-period starts from the period's real spend.
  // A fired threshold's primary key is what makes it fire once per period, across restarts.
  `
  CREATE TABLE budgets (
    org_id TEXT NOT NULL,
    limit_type TEXT NOT NULL,
    budget_limit REAL NOT NULL,
    thresholds TEXT NOT NULL,
    enforce INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, limit_type)
  ) WITHOUT ROWID;

  CREATE TABLE budget_spend (
    org_id TEXT NOT NULL,
    limit_type TEXT NOT NULL,
    period TEXT NOT NULL,
    spend REAL NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, limit_type, period)
  ) WITHOUT ROWID;

  CREATE TABLE budget_thresholds_fired (
    org_id TEXT NOT NULL,
    limit_type TEXT NOT NULL,
    period TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    fired_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, limit_type, period, threshold)
  ) WITHOUT ROWID;

  CREATE TABLE model_prices (
    model TEXT PRIMARY KEY,
    input_per_million REAL NOT NULL,
    output_per_million REAL NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // v3: per-endpoint filters, one-off endpoints (x-aigw-webhook-url) and org signing keys.
  // A one-off endpoint is an endpoints row with org_id set: it has no keys of its own and
  // is signed with its org's keys (org_signing_keys), sealed like endpoint keys.
  `
  ALTER TABLE endpoints ADD COLUMN filters TEXT NOT NULL DEFAULT '{}';
  ALTER TABLE endpoints ADD COLUMN org_id TEXT NOT NULL DEFAULT '';

  CREATE TABLE org_signing_keys (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
  );
  CREATE INDEX org_signing_keys_org ON org_signing_keys (org_id, seq);
  `,
  // v4: per-endpoint delivery lanes. Claims take one endpoint's due rows from
  // its own range of deliveries_due, so an endpoint at its cap, or with a large backlog,
  // is never walked by another endpoint's claim. A streaming delivery whose earlier token
  // is still pending for the same endpoint waits with due_at = BLOCKED_DUE_AT (delivery-queue.ts; no claim
  // ever reaches it) until that token finishes; the claim no longer checks order per row.
  `
  DROP INDEX deliveries_claim;
  CREATE INDEX deliveries_due ON deliveries (endpoint, due_at, seq) WHERE status = 'pending';
  -- Only rows leased right now: giving a process's leases back reads those, not the backlog.
  CREATE INDEX deliveries_leased ON deliveries (lease_owner) WHERE lease_owner != '';
  -- The claim's fencing token: a result is recorded only under the lease it was claimed with.
  ALTER TABLE deliveries ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;

  -- What processes sharing a store share (store/cluster.ts): circuits, connected sidecars,
  -- runtime settings. One process owns a SQLite file; the same rows serve PostgreSQL replicas.
  CREATE TABLE endpoint_circuits (
    endpoint TEXT PRIMARY KEY,
    open INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE sidecars (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    app TEXT NOT NULL,
    owner TEXT NOT NULL,
    seen_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX sidecars_seen_at ON sidecars (seen_at);
  CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  UPDATE deliveries SET due_at = 9007199254740991
  WHERE status = 'pending' AND order_key != '' AND lease_owner = '' AND EXISTS (
    SELECT 1 FROM deliveries p
    WHERE p.status = 'pending' AND p.order_key != '' AND p.endpoint = deliveries.endpoint
      AND p.order_key = deliveries.order_key AND p.order_index < deliveries.order_index);
  `,
  // v5: a model's prompt-cache prices (control-plane/budgets/price-book.ts). NULL: the
  // default rule (cachePrices in control-plane/config/pricing.ts).
  `
  ALTER TABLE model_prices ADD COLUMN cached_input_per_million REAL;
  ALTER TABLE model_prices ADD COLUMN cache_write_per_million REAL;
  ALTER TABLE model_prices ADD COLUMN cache_write_1h_per_million REAL;
  `,
  // v6: orgs (tenancy). An endpoint's org_id now means the org it belongs to (one-off
  // endpoints had it already; one_off tells them apart), apps limits it to those apps;
  // org-scoped API tokens, kept as digests only.
  `
  ALTER TABLE endpoints ADD COLUMN one_off INTEGER NOT NULL DEFAULT 0;
  UPDATE endpoints SET one_off = 1 WHERE org_id != '';
  ALTER TABLE endpoints ADD COLUMN apps TEXT NOT NULL DEFAULT '[]';
  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  ) WITHOUT ROWID;
  `,
  // v7: paused endpoints (deliveries held, not claimed: a paused endpoint is not a lane),
  // and replay by time window: failed and dead-lettered deliveries in order of finish time.
  `
  ALTER TABLE endpoints ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE endpoints ADD COLUMN paused_at INTEGER;
  CREATE INDEX deliveries_finished ON deliveries (finished_at, seq) WHERE status IN ('failed', 'dead_lettered');
  `,
  // v8: analytics rollups (control-plane/store/rollups.ts), each delivery's event→delivered
  // latency, and what sidecars report of themselves (version, spool depth).
  `
  CREATE TABLE rollups (
    kind TEXT NOT NULL,
    res INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bin INTEGER NOT NULL,
    n INTEGER NOT NULL,
    v1 REAL NOT NULL,
    v2 REAL NOT NULL,
    PRIMARY KEY (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin)
  ) WITHOUT ROWID;
  CREATE INDEX rollups_res_bucket ON rollups (res, bucket);
  ALTER TABLE deliveries ADD COLUMN event_latency_ms INTEGER;
  ALTER TABLE sidecars ADD COLUMN version TEXT NOT NULL DEFAULT '';
  ALTER TABLE sidecars ADD COLUMN spool_batches INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE sidecars ADD COLUMN spool_bytes INTEGER NOT NULL DEFAULT 0;
  `,
  // v9: an endpoint's run of failed attempts (delivery.auto_disable_after_ms) is kept in the
  // store, so a restart does not start its clock again. 0: no run.
  `
  ALTER TABLE endpoint_circuits ADD COLUMN failing_since INTEGER NOT NULL DEFAULT 0;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database, path: string, logger?: Logger): void {
  db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  const row = db.prepare<[], { version: number | null }>("SELECT MAX(version) AS version FROM schema_version").get();
  const current = row?.version ?? 0;
  if (current > SCHEMA_VERSION) {
    throw new Error(
      `SQLite store ${path} has schema version ${current}, newer than this aigw supports (${SCHEMA_VERSION}); ` +
        `upgrade aigw or use another database file`,
    );
  }
  for (let version = current + 1; version <= SCHEMA_VERSION; version++) {
    const sql = MIGRATIONS[version - 1]!;
    db.transaction(() => {
      db.exec(sql);
      db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(version);
    }).immediate();
    logger?.info({ path, version }, "applied store schema migration");
  }
}
