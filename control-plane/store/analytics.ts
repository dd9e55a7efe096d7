/** Delivery analytics, computed from the store so they survive restarts and agree across replicas. */
export interface AnalyticsStore {
  /** Per endpoint (every configured endpoint, even idle ones): counts, latency, top failure reasons since `sinceMs`. */
  stats(sinceMs: number): Promise<EndpointStatsRecord[]>;
  /**
   * Rollup rows (rollups.ts) of one kind and resolution with buckets in [from, to), summed
   * per bucket, value of `by` (a column; undefined: one series) and latency bin.
   */
  seriesRows(query: SeriesQuery): Promise<SeriesRowRecord[]>;
  /** Per endpoint with any: deliveries pending and dead-lettered now. */
  queues(): Promise<QueueRecord[]>;
  /**
   * Deletes rollup rows older than each resolution's cutoff (never 10 s rows compaction has
   * not summed yet); returns how many went.
   */
  purgeRollups(cutoffs: readonly { res: number; before: number }[]): Promise<number>;
  /**
   * Sums the 10 s rollup rows from the watermark up to `until` (exclusive, a 10 s boundary)
   * into the coarser rows and moves the watermark there, in one transaction (replicas take
   * turns). Returns the watermark after.
   */
  compactRollups(until: number): Promise<number>;
  /** How far compaction has summed the 10 s rows (0: never). */
  rollupWatermark(): Promise<number>;
}

/** A rollup dimension a series can be split by. */
export type SeriesColumn = "endpoint" | "event_type" | "org_id" | "model" | "outcome";
export const SERIES_COLUMNS: readonly SeriesColumn[] = ["endpoint", "event_type", "org_id", "model", "outcome"];

export interface SeriesQuery {
  kind: "event" | "attempt" | "delivered";
  res: number;
  from: number;
  to: number;
  by: SeriesColumn | undefined;
  /** Keep latency bins apart (latency metrics); otherwise they are summed. */
  bins: boolean;
  /**
   * One org's view (an org token): its events, and attempts only to its own endpoints;
   * "" or absent: everything.
   */
  orgId?: string;
}

/** The parameters of seriesSql's query, in order (the org three times: backends number them alike). */
export function seriesParams(query: SeriesQuery, res: number, from: number): unknown[] {
  const org = query.orgId ?? "";
  return [query.kind, res, from, query.to, org, org, org];
}

export interface SeriesRowRecord {
  bucket: number;
  key: string;
  bin: number;
  n: number;
  v1: number;
  v2: number;
}

export interface QueueRecord {
  endpoint: string;
  pending: number;
  deadLettered: number;
  /** created_at of the oldest pending delivery; undefined with none. */
  oldestPendingAt: number | undefined;
}

/** The SQL of seriesRows, the same on every backend (placeholders differ: `p(i)` names the i-th). */
export function seriesSql(query: SeriesQuery, p: (i: number) => string): string {
  if (query.by !== undefined && !SERIES_COLUMNS.includes(query.by)) throw new RangeError(`unknown column ${query.by}`);
  const key = query.by === undefined ? "''" : query.by === "event_type" ? "CAST(event_type AS TEXT)" : query.by;
  const bin = query.bins ? "bin" : "0";
  return `SELECT bucket, ${key} AS key, ${bin} AS bin, SUM(n) AS n, SUM(v1) AS v1, SUM(v2) AS v2 FROM rollups
    WHERE kind = ${p(1)} AND res = ${p(2)} AND bucket >= ${p(3)} AND bucket < ${p(4)}
      AND (CAST(${p(5)} AS TEXT) = '' OR (org_id = ${p(6)}
        AND (kind = 'event' OR endpoint IN (SELECT name FROM endpoints WHERE org_id = ${p(7)}))))
    GROUP BY 1, 2, 3`;
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

export const MAX_FAILURE_REASONS = 5;

/** Nearest-rank percentile of ascending values. */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] ?? 0;
}

/**
 * Assembles stats from what a backend reads: endpoint names, counts by status, latencies
 * per endpoint in ascending order, and failure reasons by count (most first).
 */
export class StatsBuilder {
  readonly #byEndpoint = new Map<string, EndpointStatsRecord>();

  entry(endpoint: string): EndpointStatsRecord {
    let record = this.#byEndpoint.get(endpoint);
    if (record === undefined) {
      record = {
        endpoint,
        delivered: 0,
        failed: 0,
        deadLettered: 0,
        pending: 0,
        latencyP50Ms: 0,
        latencyP99Ms: 0,
        failureReasons: [],
      };
      this.#byEndpoint.set(endpoint, record);
    }
    return record;
  }

  count(endpoint: string, status: string, n: number): void {
    const record = this.entry(endpoint);
    if (status === "delivered") record.delivered = n;
    else if (status === "failed") record.failed = n;
    else if (status === "dead_lettered") record.deadLettered = n;
    else if (status === "pending") record.pending = n;
  }

  latencies(endpoint: string, ascending: readonly number[]): void {
    if (ascending.length === 0) return;
    const record = this.entry(endpoint);
    record.latencyP50Ms = percentile(ascending, 0.5);
    record.latencyP99Ms = percentile(ascending, 0.99);
  }

  reason(endpoint: string, reason: string, count: number): void {
    const reasons = this.entry(endpoint).failureReasons;
    if (reasons.length < MAX_FAILURE_REASONS) reasons.push({ reason, count });
  }

  build(): EndpointStatsRecord[] {
    return [...this.#byEndpoint.values()].sort((a, b) =>
      a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0,
    );
  }
}
