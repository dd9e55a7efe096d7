/** Delivery analytics, computed from the store so they survive restarts and agree across replicas. */
export interface AnalyticsStore {
  /** Per endpoint (every configured endpoint, even idle ones): counts, latency, top failure reasons since `sinceMs`. */
  stats(sinceMs: number): Promise<EndpointStatsRecord[]>;
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
