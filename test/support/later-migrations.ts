// What the migrations after the orgs one (SQLite v6, PostgreSQL v3) added, taken out again:
// tests that build an older database from today's schema run this, then delete the later
// schema_version rows. A new migration adds its undo here.

/** SQLite v7 (paused endpoints, replay by window), v8 (rollups, sidecar reports), v9 (failing runs). */
export const LATER_SQLITE = [
  "DROP INDEX deliveries_finished",
  "ALTER TABLE endpoints DROP COLUMN paused",
  "ALTER TABLE endpoints DROP COLUMN paused_at",
  "DROP TABLE rollups",
  "ALTER TABLE deliveries DROP COLUMN event_latency_ms",
  "ALTER TABLE sidecars DROP COLUMN version",
  "ALTER TABLE sidecars DROP COLUMN spool_batches",
  "ALTER TABLE sidecars DROP COLUMN spool_bytes",
  "ALTER TABLE endpoint_circuits DROP COLUMN failing_since",
]
  .map((sql) => `${sql};`)
  .join(" ");

/**
 * PostgreSQL v4 (paused endpoints, replay by window), v5 (rollups, sidecar reports), v6 (the
 * live-lease index), v7 (failing runs), v8 (the one-round-trip claim).
 */
export const LATER_POSTGRES = [
  "DROP INDEX deliveries_finished",
  "ALTER TABLE endpoints DROP COLUMN paused, DROP COLUMN paused_at",
  "DROP TABLE rollups",
  "ALTER TABLE deliveries DROP COLUMN event_latency_ms",
  "ALTER TABLE sidecars DROP COLUMN version, DROP COLUMN spool_batches, DROP COLUMN spool_bytes",
  "DROP INDEX deliveries_live_leases",
  "CREATE INDEX deliveries_leased ON deliveries (endpoint, lease_until) WHERE lease_owner <> ''",
  "CREATE INDEX deliveries_lease_owner ON deliveries (lease_owner) WHERE lease_owner <> ''",
  "DROP FUNCTION aigw_all_recorded(bigint, integer)",
  "ALTER TABLE endpoint_circuits DROP COLUMN failing_since",
  "DROP FUNCTION aigw_claim(json, json, text, integer, text[], integer[], bigint, text, bigint, integer, integer)",
].join("; ");
