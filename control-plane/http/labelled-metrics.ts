import { histogram, type MetricFamily } from "../../common/prometheus.js";

/**
 * Counters with labels, for /metrics. Label values come from what users name (models,
 * orgs, endpoints), so a family keeps at most `maxSeries` label sets: past that, new sets
 * are counted under the value "other" in every label, and scrapers never see an unbounded
 * number of series. No label ever carries an id (request, event, delivery).
 */
export class LabelledCounter {
  readonly #values = new Map<string, { labels: Record<string, string>; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly maxSeries = 500,
  ) {}

  add(labels: readonly string[], by = 1): void {
    if (!(by > 0) || !Number.isFinite(by)) return;
    let key = labels.join("\u0000");
    let entry = this.#values.get(key);
    if (entry === undefined) {
      if (this.#values.size >= this.maxSeries) {
        key = this.labelNames.map(() => "other").join("\u0000");
        entry = this.#values.get(key);
        labels = this.labelNames.map(() => "other");
      }
      if (entry === undefined) {
        entry = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, labels[i] ?? ""])), value: 0 };
        this.#values.set(key, entry);
      }
    }
    entry.value += by;
  }

  family(): MetricFamily {
    return {
      name: this.name,
      help: this.help,
      type: "counter",
      samples: [...this.#values.values()].map((e) => ({ labels: e.labels, value: e.value })),
    };
  }
}

/** A histogram of milliseconds with fixed bounds (the last bucket is +Inf). */
export class MsHistogram {
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly boundsMs: readonly number[],
  ) {
    this.#counts = new Array<number>(boundsMs.length + 1).fill(0);
  }

  observe(ms: number): void {
    let i = this.boundsMs.findIndex((bound) => ms <= bound);
    if (i < 0) i = this.boundsMs.length;
    this.#counts[i]!++;
    this.#sum += ms;
    this.#count++;
  }

  family(): MetricFamily {
    let cumulative = 0;
    const counts = this.#counts.map((n) => {
      cumulative += n;
      return cumulative;
    });
    return histogram(this.name, this.help, {
      bucketsMs: this.boundsMs,
      counts,
      sumMs: this.#sum,
      count: this.#count,
    });
  }
}

/** Event→delivered latency bounds (ms): from sub-second to the hours retries can take. */
export const EVENT_LATENCY_BUCKETS_MS = [
  50,
  100,
  250,
  500,
  1000,
  2500,
  5000,
  10_000,
  30_000,
  60_000,
  300_000,
  900_000,
  3_600_000,
  4 * 3_600_000,
] as const;

/** Endpoint names as metric labels: one-off endpoints (one per URL) count as one. */
export function endpointLabel(name: string, oneOffPrefix: string): string {
  return name.startsWith(oneOffPrefix) ? "(one-off)" : name;
}

/**
 * What /metrics says of traffic: events per type, tokens and cost per model and org (from
 * ingest), deliveries per endpoint and outcome and the event→delivered latency (from the
 * scheduler). Counted in this process since it started, as Prometheus counters are.
 */
export class TrafficMetrics {
  readonly events = new LabelledCounter("aigw_events_total", "Events stored, by type.", ["type"]);
  readonly tokens = new LabelledCounter("aigw_tokens_total", "Tokens used by completions, by model and org.", [
    "model",
    "org",
  ]);
  readonly cost = new LabelledCounter("aigw_cost_usd_total", "Cost of completions in USD, by model and org.", [
    "model",
    "org",
  ]);
  readonly deliveries = new LabelledCounter(
    "aigw_deliveries_total",
    "Delivery attempts recorded, by endpoint and what the delivery became (delivered, retry, failed, dead_lettered, endpoint_gone).",
    ["endpoint", "outcome"],
  );
  readonly eventLatency = new MsHistogram(
    "aigw_event_to_delivered_ms",
    "From an event's time at the sidecar to its delivery's successful attempt, in ms.",
    EVENT_LATENCY_BUCKETS_MS,
  );

  families(): MetricFamily[] {
    return [
      this.events.family(),
      this.tokens.family(),
      this.cost.family(),
      this.deliveries.family(),
      this.eventLatency.family(),
    ];
  }
}
