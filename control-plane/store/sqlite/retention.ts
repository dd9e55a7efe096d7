import type Database from "better-sqlite3";
import { emptyPurgeStep, type PurgeStep, type PurgeStepOptions, retentionVerdict } from "../retention.js";

/**
 * Retention's SQL for SQLite (the rule is ../retention.ts). A step looks at the next events
 * past the window in (ingested_at, seq) order from a cursor, so it reads what it decides on
 * and a run reads each old event once, however many are kept. Runs inside the store's
 * write transaction.
 */

interface OldEventRow {
  seq: number;
  ingested_at: number;
}

interface EventDeliveryRow {
  id: string;
  status: string;
  finished_at: number | null;
  lease_owner: string;
  lease_until: number;
  endpoint: string;
  order_key: string;
  /** 1 when the endpoint exists and is enabled. */
  live: number;
}

type Stmt<P, R = unknown> = Database.Statement<[P], R>;

export class SqliteRetention {
  readonly #oldEvents: Stmt<{ before: number; afterAt: number; afterSeq: number; limit: number }, OldEventRow>;
  readonly #deliveriesOf: Database.Statement<[number], EventDeliveryRow>;
  readonly #deleteAttempts: Database.Statement<[string]>;
  readonly #deleteDeliveries: Database.Statement<[number]>;
  readonly #deleteEvent: Database.Statement<[number]>;

  constructor(db: Database.Database) {
    // Two seeks, not a row-value range: many events share one ingested_at (a group commit's
    // clock reading), and `(ingested_at, seq) > (?, ?)` re-reads that millisecond's earlier rows.
    this.#oldEvents = db.prepare(
      `SELECT * FROM (SELECT seq, ingested_at FROM events INDEXED BY events_ingested_at
         WHERE ingested_at = @afterAt AND seq > @afterSeq AND ingested_at < @before ORDER BY seq LIMIT @limit)
       UNION ALL
       SELECT * FROM (SELECT seq, ingested_at FROM events INDEXED BY events_ingested_at
         WHERE ingested_at > @afterAt AND ingested_at < @before ORDER BY ingested_at, seq LIMIT @limit)
       ORDER BY ingested_at, seq LIMIT @limit`,
    ) as Stmt<{ before: number; afterAt: number; afterSeq: number; limit: number }, OldEventRow>;
    this.#deliveriesOf = db.prepare(
      `SELECT d.id, d.status, d.finished_at, d.lease_owner, d.lease_until, d.endpoint, d.order_key,
         COALESCE(ep.enabled, 0) AS live
       FROM deliveries d LEFT JOIN endpoints ep ON ep.name = d.endpoint
       WHERE d.event_seq = ?`,
    ) as Database.Statement<[number], EventDeliveryRow>;
    this.#deleteAttempts = db.prepare("DELETE FROM attempts WHERE delivery_id = ?") as Database.Statement<[string]>;
    this.#deleteDeliveries = db.prepare("DELETE FROM deliveries WHERE event_seq = ?") as Database.Statement<[number]>;
    this.#deleteEvent = db.prepare("DELETE FROM events WHERE seq = ?") as Database.Statement<[number]>;
  }

  /**
   * One step; `removedPending` is told of each pending delivery deleted (to a disabled or
   * deleted endpoint) so the store's pending count and a stream's order follow.
   */
  step(options: PurgeStepOptions, removedPending: (endpoint: string, orderKey: string) => void): PurgeStep {
    const { beforeMs, now } = options;
    const rows = this.#oldEvents.all({
      before: beforeMs,
      afterAt: options.after.ingestedAt,
      afterSeq: options.after.seq,
      limit: options.limit,
    });
    const result = emptyPurgeStep(options, rows.length);
    for (const row of rows) {
      result.after = { ingestedAt: row.ingested_at, seq: row.seq };
      const deliveries = this.#deliveriesOf.all(row.seq);
      const verdict = retentionVerdict(
        deliveries.map((d) => ({
          status: d.status,
          finishedAt: d.finished_at,
          leaseOwner: d.lease_owner,
          leaseUntil: d.lease_until,
          live: d.live === 1,
        })),
        beforeMs,
        now,
      );
      if (verdict === "pending") {
        result.keptPending++;
        result.oldestKeptPendingAt ??= row.ingested_at;
        continue;
      }
      if (verdict === "recent") {
        result.keptRecent++;
        continue;
      }
      for (const d of deliveries) result.attempts += this.#deleteAttempts.run(d.id).changes;
      result.deliveries += this.#deleteDeliveries.run(row.seq).changes;
      result.events += this.#deleteEvent.run(row.seq).changes;
      for (const d of deliveries) {
        if (d.status !== "pending") continue;
        result.abandoned++;
        removedPending(d.endpoint, d.order_key);
      }
    }
    return result;
  }
}
