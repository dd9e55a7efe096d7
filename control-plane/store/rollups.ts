import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { isTestEvent } from "../../common/event-types.js";
import { eventColumns } from "./events.js";
import { MAX_INT_COLUMN } from "./store.js";

/**
 * Analytics rollups: what the series of the Admin API (GetSeries) and the dashboard's charts
 * read, kept in one table beside the events, written in the transactions that store events
 * and record attempts, so they survive restarts and agree across replicas. A row counts
 * what happened in one bucket of one resolution for one combination of dimensions; latency
 * rows keep a histogram (one row per latency bin), from which percentiles are read.
 *
 * A transaction collects its changes in a RollupBatch and writes each distinct row once at
 * its end (one upsert per key: a group of a hundred attempts to one endpoint is a handful
 * of rows), so the delivery path pays for rollups per group, not per attempt. Those
 * transactions write only the finest rows (10 s); the 5 min and 1 h rows are summed from
 * them in the background (compaction, up to a watermark kept in the store), and a series
 * adds the 10 s rows past the watermark, so it is exact and current either way.
 */

/** Bucket sizes kept (ms): 10 s rows answer 15 min and 1 h windows, 5 min rows 24 h, 1 h rows 7 d. */
export const ROLLUP_RESOLUTIONS = [10_000, 300_000, 3_600_000] as const;
/** The resolution transactions write; the others are compacted from it. */
export const FINEST_RES = ROLLUP_RESOLUTIONS[0];
/** The coarser resolutions compaction fills. */
export const COMPACTED_RESOLUTIONS = ROLLUP_RESOLUTIONS.slice(1);
/** The settings row holding how far compaction has summed the 10 s rows (exclusive, ms). */
export const COMPACTED_SETTING = "rollups_compacted_until";
/**
 * Compaction stays this far behind the clock, so a 10 s bucket is complete before it is
 * summed (a transaction that read the clock just before a bucket ended may commit after).
 */
export const COMPACTION_LAG_MS = 30_000;

/** Where compaction may sum up to at `now`: a 10 s boundary at least the lag behind. */
export function compactionTarget(now: number): number {
  const t = now - COMPACTION_LAG_MS;
  return t - (t % FINEST_RES);
}

/**
 * Sums the 10 s rows in [from, until) into the rows of resolution `p(1)`, adding to what is
 * there (the same on both backends; `p(i)` names the i-th parameter: res, from, until).
 */
export function compactSql(p: (i: number) => string, bigint = ""): string {
  const res = `${p(1)}${bigint}`;
  return `INSERT INTO rollups (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin, n, v1, v2)
    SELECT kind, ${res}, bucket - (bucket % ${res}), endpoint, event_type, org_id, model, outcome, bin,
      SUM(n), SUM(v1), SUM(v2)
    FROM rollups WHERE res = ${FINEST_RES} AND bucket >= ${p(2)} AND bucket < ${p(3)}
    GROUP BY kind, bucket - (bucket % ${res}), endpoint, event_type, org_id, model, outcome, bin
    ON CONFLICT (kind, res, bucket, endpoint, event_type, org_id, model, outcome, bin)
    DO UPDATE SET n = rollups.n + excluded.n, v1 = rollups.v1 + excluded.v1, v2 = rollups.v2 + excluded.v2`;
}
/** How long rows of each resolution are kept at most (retention may cut the last one shorter). */
export const ROLLUP_KEEP_MS: Record<number, number> = {
  10000: 2 * 3_600_000,
  300000: 26 * 3_600_000,
  3600000: 8 * 24 * 3_600_000,
};

/** Upper bounds (ms) of the latency bins; a value above the last falls in the bin after it. */
export const LATENCY_BINS: readonly number[] = [
  1,
  2,
  5,
  10,
  20,
  50,
  100,
  200,
  300,
  500,
  750,
  1000,
  1500,
  2000,
  3000,
  5000,
  7500,
  10_000,
  15_000,
  20_000,
  30_000,
  60_000,
  120_000,
  300_000,
  600_000,
  1_800_000,
  3_600_000,
  4 * 3_600_000,
  24 * 3_600_000,
];

/** The row kinds: events stored, attempts (with their latency bin), event→delivered latency. */
export type RollupKind = "event" | "attempt" | "delivered";

/** What an attempt ended in, as series name it. */
export type AttemptOutcomeName = "delivered" | "retrying" | "failed" | "dead_lettered";

export interface RollupRow {
  kind: RollupKind;
  res: number;
  bucket: number;
  endpoint: string;
  eventType: number;
  orgId: string;
  model: string;
  outcome: string;
  bin: number;
  n: number;
  /** Tokens (events) or the latency sum in ms (attempts, delivered). */
  v1: number;
  /** Cost in USD (events). */
  v2: number;
}

export function latencyBin(ms: number): number {
  const v = Math.max(0, ms);
  let lo = 0;
  let hi = LATENCY_BINS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (v <= LATENCY_BINS[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The value a bin stands for in percentiles: its upper bound (the last, open bin: twice the last bound). */
export function binValue(bin: number): number {
  return LATENCY_BINS[bin] ?? LATENCY_BINS[LATENCY_BINS.length - 1]! * 2;
}

/** Changes to the rollups made by one transaction, merged by key. */
export class RollupBatch {
  readonly #rows = new Map<string, RollupRow>();

  get size(): number {
    return this.#rows.size;
  }

  rows(): RollupRow[] {
    return [...this.#rows.values()];
  }

  /** A new event stored at `now`, with the cost it was priced at. */
  event(event: Event, now: number): void {
    const columns = eventColumns(event);
    const completion = event.payload.case === "completion" ? event.payload.value : undefined;
    // A test event counts as an event, but its example usage is nobody's tokens or cost.
    const usage = completion && !isTestEvent(event) ? completion : undefined;
    this.#add(
      "event",
      now,
      {
        endpoint: "",
        eventType: columns.type,
        orgId: event.orgId,
        model: completion?.model ?? "",
        outcome: "",
        bin: 0,
      },
      usage?.tokensUsed ?? 0,
      usage && Number.isFinite(usage.costUsd) ? usage.costUsd : 0,
    );
  }

  /** An attempt recorded at `now`; with a delivery that succeeded, its event→delivered latency too. */
  attempt(a: {
    now: number;
    endpoint: string;
    eventType: number;
    orgId: string;
    outcome: AttemptOutcomeName;
    latencyMs: number;
    /** Event time (ms) of a delivered delivery's event; undefined otherwise. */
    eventTimeMs?: number | undefined;
  }): void {
    this.#add(
      "attempt",
      a.now,
      {
        endpoint: a.endpoint,
        eventType: a.eventType,
        orgId: a.orgId,
        model: "",
        outcome: a.outcome,
        bin: latencyBin(a.latencyMs),
      },
      Math.max(0, a.latencyMs),
      0,
    );
    if (a.outcome === "delivered" && a.eventTimeMs !== undefined) {
      const e2e = eventLatencyMs(a.eventTimeMs, a.now);
      this.#add(
        "delivered",
        a.now,
        { endpoint: a.endpoint, eventType: a.eventType, orgId: a.orgId, model: "", outcome: "", bin: latencyBin(e2e) },
        e2e,
        0,
      );
    }
  }

  #add(
    kind: RollupKind,
    now: number,
    dims: Pick<RollupRow, "endpoint" | "eventType" | "orgId" | "model" | "outcome" | "bin">,
    v1: number,
    v2: number,
  ): void {
    const res = FINEST_RES;
    const bucket = now - (now % res);
    const key = `${kind}\u0000${bucket}\u0000${dims.endpoint}\u0000${dims.eventType}\u0000${dims.orgId}\u0000${dims.model}\u0000${dims.outcome}\u0000${dims.bin}`;
    const row = this.#rows.get(key);
    if (row) {
      row.n++;
      row.v1 += v1;
      row.v2 += v2;
    } else {
      this.#rows.set(key, { kind, res, bucket, ...dims, n: 1, v1, v2 });
    }
  }
}

/**
 * The longest event→delivered latency kept, in ms (2^31 − 1, 24.8 days): what a 32-bit column
 * holds (PostgreSQL's is one). Longer ones (a replay of an old event, a sidecar's clock years
 * off) are recorded as this.
 */
export const MAX_EVENT_LATENCY_MS = MAX_INT_COLUMN;

/** From the event's time at the sidecar to now; never negative (clocks differ), at most MAX_EVENT_LATENCY_MS. */
export function eventLatencyMs(eventTimeMs: number, now: number): number {
  return Math.min(MAX_EVENT_LATENCY_MS, Math.max(0, Math.round(now - eventTimeMs)));
}

export function outcomeName(status: string): AttemptOutcomeName {
  return status === "pending" ? "retrying" : (status as AttemptOutcomeName);
}

/**
 * The rows older than what each resolution keeps (and than retention) go; the store keeps
 * 10 s rows compaction has not summed yet whatever their age.
 */
export function rollupCutoffs(now: number, retentionMs: number): { res: number; before: number }[] {
  return ROLLUP_RESOLUTIONS.map((res) => ({ res, before: now - Math.min(ROLLUP_KEEP_MS[res]!, retentionMs) - res }));
}
