import { histogram, type MetricFamily } from "../../common/prometheus.js";

/** Bounds (ms) of the added-latency histogram: the proxy's share is tens of microseconds when well. */
const ADDED_LATENCY_BUCKETS_MS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250] as const;
/** Distinct (upstream, status) pairs counted at most; statuses are 100..599 and upstreams few. */
const MAX_STATUS_SERIES = 2_000;

/**
 * The proxy's counters for the sidecar's /metrics. Recording is a few additions per request
 * on the request path; rendering happens only when scraped.
 */
export class ProxyMetrics {
  private readonly requests = new Map<string, number>();
  private readonly statuses = new Map<string, number>();
  private readonly failures = new Map<string, number>();
  private readonly addedCounts = new Array<number>(ADDED_LATENCY_BUCKETS_MS.length + 1).fill(0);
  private addedSumMs = 0;
  private addedCount = 0;

  /** A request arrived for `upstream` ("aigw" for the sidecar's own paths). */
  request(upstream: string): void {
    this.requests.set(upstream, (this.requests.get(upstream) ?? 0) + 1);
  }

  /** The upstream answered with this status. */
  status(upstream: string, code: number): void {
    const key = `${upstream}\u0000${code}`;
    const count = this.statuses.get(key);
    if (count !== undefined) this.statuses.set(key, count + 1);
    else if (this.statuses.size < MAX_STATUS_SERIES) this.statuses.set(key, 1);
  }

  /** The upstream gave no response: "timeout" or "network". */
  failure(upstream: string, kind: string): void {
    const key = `${upstream}\u0000${kind}`;
    this.failures.set(key, (this.failures.get(key) ?? 0) + 1);
  }

  /** Time from the request's arrival to its dispatch upstream (what the proxy adds; responses stream through). */
  added(ms: number): void {
    this.addedSumMs += ms;
    this.addedCount++;
    let i = 0;
    while (i < ADDED_LATENCY_BUCKETS_MS.length && ms > ADDED_LATENCY_BUCKETS_MS[i]!) i++;
    this.addedCounts[i]!++;
  }

  /** Requests dispatched upstream so far. */
  get dispatched(): number {
    return this.addedCount;
  }

  families(): MetricFamily[] {
    const cumulative: number[] = [];
    let running = 0;
    for (const count of this.addedCounts) {
      running += count;
      cumulative.push(running);
    }
    const added = histogram(
      "aigw_sidecar_added_latency_seconds",
      "Time from a request's arrival at the sidecar to its dispatch upstream (the proxy's own share; response bytes are forwarded as they arrive).",
      {
        bucketsMs: ADDED_LATENCY_BUCKETS_MS.map((ms) => ms / 1000),
        counts: cumulative,
        sumMs: this.addedSumMs / 1000,
        count: this.addedCount,
      },
    );
    return [
      {
        name: "aigw_sidecar_requests_total",
        help: "Requests received, by upstream they were routed to.",
        type: "counter",
        samples: [...this.requests].map(([upstream, value]) => ({ labels: { upstream }, value })),
      },
      {
        name: "aigw_sidecar_upstream_responses_total",
        help: "Upstream responses, by upstream and status code.",
        type: "counter",
        samples: [...this.statuses].map(([key, value]) => {
          const [upstream = "", code = ""] = key.split("\u0000");
          return { labels: { upstream, code }, value };
        }),
      },
      {
        name: "aigw_sidecar_upstream_failures_total",
        help: "Upstream calls that got no response, by upstream and kind (timeout, network).",
        type: "counter",
        samples: [...this.failures].map(([key, value]) => {
          const [upstream = "", kind = ""] = key.split("\u0000");
          return { labels: { upstream, kind }, value };
        }),
      },
      added,
    ];
  }
}
