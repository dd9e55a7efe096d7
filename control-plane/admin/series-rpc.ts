import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type GetSeriesRequest,
  type GetSeriesResponse,
  GetSeriesResponseSchema,
  type ListQueuesResponse,
  ListQueuesResponseSchema,
  type ListSidecarsResponse,
  ListSidecarsResponseSchema,
  SeriesBreakdown,
  SeriesMetric,
  SeriesSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import type { EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeName } from "../../common/event-types.js";
import { invalidArgument } from "../../common/rpc-errors.js";
import type { SeriesColumn, SeriesQuery, SeriesRowRecord, Store } from "../store/store.js";
import { binValue } from "../store/rollups.js";

/** The windows GetSeries answers, with the bucket size each is read at (a rollup resolution). */
export const SERIES_WINDOWS: Record<string, { ms: number; res: number }> = {
  "15m": { ms: 15 * 60_000, res: 10_000 },
  "1h": { ms: 3_600_000, res: 10_000 },
  "24h": { ms: 24 * 3_600_000, res: 300_000 },
  "7d": { ms: 7 * 24 * 3_600_000, res: 3_600_000 },
};

/** Each metric: the rollup rows it reads, and the breakdowns those rows have. */
const METRICS: Record<
  number,
  { name: string; kind: SeriesQuery["kind"]; latency: boolean; value: "n" | "v1" | "v2"; by: SeriesBreakdown[] }
> = {
  [SeriesMetric.EVENTS]: {
    name: "events",
    kind: "event",
    latency: false,
    value: "n",
    by: [SeriesBreakdown.EVENT_TYPE, SeriesBreakdown.ORG, SeriesBreakdown.MODEL],
  },
  [SeriesMetric.DELIVERIES]: {
    name: "deliveries",
    kind: "attempt",
    latency: false,
    value: "n",
    by: [SeriesBreakdown.OUTCOME, SeriesBreakdown.ENDPOINT, SeriesBreakdown.EVENT_TYPE, SeriesBreakdown.ORG],
  },
  [SeriesMetric.ATTEMPT_LATENCY]: {
    name: "attempt latency",
    kind: "attempt",
    latency: true,
    value: "n",
    by: [SeriesBreakdown.ENDPOINT, SeriesBreakdown.OUTCOME],
  },
  [SeriesMetric.EVENT_LATENCY]: {
    name: "event latency",
    kind: "delivered",
    latency: true,
    value: "n",
    by: [SeriesBreakdown.ENDPOINT, SeriesBreakdown.EVENT_TYPE, SeriesBreakdown.ORG],
  },
  [SeriesMetric.TOKENS]: {
    name: "tokens",
    kind: "event",
    latency: false,
    value: "v1",
    by: [SeriesBreakdown.MODEL, SeriesBreakdown.ORG],
  },
  [SeriesMetric.COST]: {
    name: "cost",
    kind: "event",
    latency: false,
    value: "v2",
    by: [SeriesBreakdown.MODEL, SeriesBreakdown.ORG],
  },
};

const COLUMNS: Record<number, SeriesColumn> = {
  [SeriesBreakdown.ENDPOINT]: "endpoint",
  [SeriesBreakdown.EVENT_TYPE]: "event_type",
  [SeriesBreakdown.ORG]: "org_id",
  [SeriesBreakdown.MODEL]: "model",
  [SeriesBreakdown.OUTCOME]: "outcome",
};

const BREAKDOWN_NAMES: Record<number, string> = {
  [SeriesBreakdown.UNSPECIFIED]: "none",
  [SeriesBreakdown.ENDPOINT]: "endpoint",
  [SeriesBreakdown.EVENT_TYPE]: "event type",
  [SeriesBreakdown.ORG]: "org",
  [SeriesBreakdown.MODEL]: "model",
  [SeriesBreakdown.OUTCOME]: "outcome",
};

/** At most this many series (the largest); the rest are summed into "other". */
export const MAX_SERIES = 20;

export async function getSeries(
  store: Store,
  req: GetSeriesRequest,
  now: number,
  retentionHours: number,
  orgId?: string,
): Promise<GetSeriesResponse> {
  const metric = METRICS[req.metric];
  if (metric === undefined) {
    throw invalidArgument(
      "metric",
      req.metric === SeriesMetric.UNSPECIFIED ? "required" : `unknown metric ${req.metric}`,
    );
  }
  const window = SERIES_WINDOWS[req.window];
  if (window === undefined) {
    throw invalidArgument(
      "window",
      `${req.window === "" ? "required" : `"${req.window}" is not a window`}; one of ${Object.keys(SERIES_WINDOWS).join(", ")}`,
    );
  }
  if (req.breakdown !== SeriesBreakdown.UNSPECIFIED && !metric.by.includes(req.breakdown)) {
    const known = BREAKDOWN_NAMES[req.breakdown];
    throw invalidArgument(
      "breakdown",
      `${known === undefined ? `unknown breakdown ${req.breakdown}` : `${metric.name} cannot be broken down by ${known}`}; ` +
        `it can by ${metric.by.map((b) => BREAKDOWN_NAMES[b]).join(", ")}`,
    );
  }
  const end = req.endTime ? timestampMs(req.endTime) : now;
  if (!Number.isFinite(end) || end <= 0) throw invalidArgument("end_time", "must be a time after 1970");
  const res = window.res;
  // Buckets aligned to the resolution; the last one holds `end` (it is still filling).
  const lastBucket = end - (end % res);
  const count = Math.round(window.ms / res);
  const first = lastBucket - (count - 1) * res;
  const rows = await store.seriesRows({
    kind: metric.kind,
    res,
    from: first,
    to: lastBucket + res,
    by: req.breakdown === SeriesBreakdown.UNSPECIFIED ? undefined : COLUMNS[req.breakdown],
    bins: metric.latency,
    ...(orgId !== undefined ? { orgId } : {}),
  });
  const keyName =
    req.breakdown === SeriesBreakdown.EVENT_TYPE
      ? (key: string) => eventTypeName(Number(key) as EventType) || key
      : req.breakdown === SeriesBreakdown.UNSPECIFIED
        ? () => "all"
        : (key: string) => key;
  const byKey = new Map<string, SeriesRowRecord[]>();
  for (const row of rows) {
    const key = keyName(String(row.key ?? ""));
    const list = byKey.get(key);
    if (list === undefined) byKey.set(key, [row]);
    else list.push(row);
  }
  let series = [...byKey.entries()].map(([key, list]) => seriesOf(key, list, first, res, count, metric));
  series.sort((a, b) => b.total - a.total || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  if (series.length > MAX_SERIES) {
    const keep = series.slice(0, MAX_SERIES - 1);
    const rest = new Set(series.slice(MAX_SERIES - 1).map((s) => s.key));
    const restRows = [...byKey.entries()].filter(([k]) => rest.has(k)).flatMap(([, list]) => list);
    series = [...keep, seriesOf("other", restRows, first, res, count, metric)];
  }
  const retainedSince = now - retentionHours * 3_600_000;
  const limited = first < retainedSince;
  return create(GetSeriesResponseSchema, {
    metric: req.metric,
    breakdown: req.breakdown,
    bucketSeconds: res / 1000,
    startTime: timestampFromMs(first),
    endTime: timestampFromMs(lastBucket + res),
    bucketCount: count,
    series: series.map((s) => create(SeriesSchema, s)),
    retentionLimited: limited,
    ...(limited ? { retainedSince: timestampFromMs(retainedSince) } : {}),
  });
}

interface SeriesValues {
  key: string;
  values: number[];
  p50: number[];
  p95: number[];
  p99: number[];
  counts: bigint[];
  total: number;
}

function seriesOf(
  key: string,
  rows: readonly SeriesRowRecord[],
  first: number,
  res: number,
  count: number,
  metric: (typeof METRICS)[number],
): SeriesValues {
  const values = new Array<number>(count).fill(0);
  const counts = new Array<number>(count).fill(0);
  const bins: Map<number, number>[] = [];
  for (const row of rows) {
    // Coarse rows sit on their bucket; 10 s rows not compacted yet fall inside one.
    const i = Math.floor((Number(row.bucket) - first) / res);
    if (i < 0 || i >= count) continue;
    const n = Number(row.n);
    counts[i]! += n;
    values[i]! += metric.value === "n" ? n : Number(row[metric.value]);
    if (metric.latency) {
      const hist = bins[i] ?? new Map<number, number>();
      bins[i] = hist;
      hist.set(Number(row.bin), (hist.get(Number(row.bin)) ?? 0) + n);
    }
  }
  const out: SeriesValues = {
    key,
    values: metric.latency ? [] : values,
    p50: [],
    p95: [],
    p99: [],
    counts: counts.map((n) => BigInt(n)),
    total: metric.latency ? counts.reduce((a, b) => a + b, 0) : values.reduce((a, b) => a + b, 0),
  };
  if (metric.latency) {
    for (let i = 0; i < count; i++) {
      const hist = bins[i];
      out.p50.push(hist ? histogramPercentile(hist, counts[i]!, 0.5) : 0);
      out.p95.push(hist ? histogramPercentile(hist, counts[i]!, 0.95) : 0);
      out.p99.push(hist ? histogramPercentile(hist, counts[i]!, 0.99) : 0);
    }
  }
  return out;
}

/** Nearest-rank percentile of a histogram (bin → count): the upper bound of the bin holding that rank. */
export function histogramPercentile(hist: ReadonlyMap<number, number>, total: number, p: number): number {
  const rank = Math.max(1, Math.ceil(p * total));
  let seen = 0;
  for (const bin of [...hist.keys()].sort((a, b) => a - b)) {
    seen += hist.get(bin)!;
    if (seen >= rank) return binValue(bin);
  }
  return 0;
}

export async function listQueues(store: Store): Promise<ListQueuesResponse> {
  const [queues, endpoints] = await Promise.all([store.queues(), store.listEndpoints()]);
  const byName = new Map(queues.map((q) => [q.endpoint, q]));
  for (const e of endpoints) {
    if (!byName.has(e.name))
      byName.set(e.name, { endpoint: e.name, pending: 0, deadLettered: 0, oldestPendingAt: undefined });
  }
  return create(ListQueuesResponseSchema, {
    queues: [...byName.values()]
      .sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0))
      .map((q) => ({
        endpoint: q.endpoint,
        pending: BigInt(q.pending),
        deadLettered: BigInt(q.deadLettered),
        ...(q.oldestPendingAt !== undefined ? { oldestPendingTime: timestampFromMs(q.oldestPendingAt) } : {}),
      })),
  });
}

/** Sidecars seen by any process within this long count as connected (presence heartbeats are 10 s). */
export const SIDECAR_FRESH_MS = 30_000;

export async function listSidecars(store: Store, now: number): Promise<ListSidecarsResponse> {
  const sidecars = await store.listSidecars(now - SIDECAR_FRESH_MS);
  return create(ListSidecarsResponseSchema, {
    sidecars: sidecars.map((s) => ({
      sidecarId: s.id,
      orgId: s.orgId,
      app: s.app,
      version: s.version ?? "",
      spoolBatches: BigInt(s.spoolBatches ?? 0),
      spoolBytes: BigInt(s.spoolBytes ?? 0),
      ...(s.seenAt !== undefined ? { lastSeenTime: timestampFromMs(s.seenAt) } : {}),
    })),
  });
}
