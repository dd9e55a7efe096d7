import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdminService,
  DeliveryStatus,
  type GetSeriesResponse,
  SeriesBreakdown,
  SeriesMetric,
  TokenKind,
} from "../../gen/aigw/v1/admin_pb.js";
import { ROLLUP_RESOLUTIONS } from "../../control-plane/store/rollups.js";
import { histogramPercentile } from "../../control-plane/admin/series-rpc.js";
import { LabelledCounter } from "../../control-plane/http/labelled-metrics.js";
import {
  type ControlPlaneFixture,
  completion,
  errorEvent,
  openSidecarStream,
  startControlPlane,
} from "../support/control-plane.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { TEST_BACKEND } from "../support/store.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

const totals = (r: GetSeriesResponse): Record<string, number> =>
  Object.fromEntries(r.series.map((s) => [s.key, Math.round(s.total * 1e6) / 1e6]));

// GetSeries, ListQueues and ListSidecars over the Admin API of a real control plane, on the
// test store (AIGW_TEST_STORE=postgres runs it on PostgreSQL): rollups written by ingest and
// attempt results, read back after a restart, cut by retention.
describe(`analytics series (${TEST_BACKEND})`, () => {
  let f: ControlPlaneFixture;
  let receiver: TestReceiver;
  const yaml = (url: string) =>
    testConfigYaml({
      primaryUrl: url,
      maxAttempts: 2,
      initialDelayMs: 20,
      extra: `pricing:
  model-a:
    input: 10000
    output: 10000
  model-b:
    input: 20000
    output: 20000
`,
    }).replace("delivery:\n", "delivery:\n  retention_hours: 24\n");

  beforeAll(async () => {
    // model-b's first attempt fails (retried); an error event with severity critical always fails (dead-lettered).
    receiver = await startTestReceiver({
      secret: TEST_SECRET,
      script: (attempt, body) =>
        body.severity === "critical" ? 500 : body.model === "model-b" && attempt === 1 ? 503 : 200,
    });
    f = await startControlPlane(yaml(receiver.url));
    const events = [
      completion("model-a", 100, { orgId: "org_x" }),
      completion("model-a", 200, { orgId: "org_y" }),
      completion("model-b", 50, { orgId: "org_x" }),
      errorEvent("warning", { orgId: "org_x" }),
      errorEvent("critical", { orgId: "org_y" }),
    ];
    await f.cp.deliverEvents(events);
    // 4 delivered (model-b on its second attempt), 1 dead-lettered after 2 attempts.
    await waitFor("every delivery finished", async () => (await f.cp.store.countPending()) === 0, 60_000);
  });
  afterAll(async () => {
    await f?.close();
    await receiver?.close();
  });

  const expectSeries = async () => {
    const events = await f.admin.getSeries({
      metric: SeriesMetric.EVENTS,
      window: "15m",
      breakdown: SeriesBreakdown.EVENT_TYPE,
    });
    expect(events.bucketSeconds).toBe(10);
    expect(events.bucketCount).toBe(90);
    expect(events.series.every((s) => s.values.length === 90)).toBe(true);
    expect(totals(events)).toEqual({ completion: 3, error: 2 });
    expect(timestampMs(events.endTime!) - timestampMs(events.startTime!)).toBe(900_000);

    const tokens = await f.admin.getSeries({
      metric: SeriesMetric.TOKENS,
      window: "1h",
      breakdown: SeriesBreakdown.MODEL,
    });
    expect(totals(tokens)).toMatchObject({ "model-a": 300, "model-b": 50 });
    const cost = await f.admin.getSeries({ metric: SeriesMetric.COST, window: "24h", breakdown: SeriesBreakdown.ORG });
    expect(cost.bucketSeconds).toBe(300);
    expect(cost.bucketCount).toBe(288);
    // $0.01 per token for model-a, $0.02 for model-b: org_x 1 + 1, org_y 2.
    expect(totals(cost)).toMatchObject({ org_x: 2, org_y: 2 });

    const outcomes = await f.admin.getSeries({
      metric: SeriesMetric.DELIVERIES,
      window: "7d",
      breakdown: SeriesBreakdown.OUTCOME,
    });
    expect(outcomes.bucketSeconds).toBe(3600);
    expect(outcomes.bucketCount).toBe(168);
    expect(totals(outcomes)).toEqual({ delivered: 4, retrying: 2, dead_lettered: 1 });

    const latency = await f.admin.getSeries({
      metric: SeriesMetric.ATTEMPT_LATENCY,
      window: "15m",
      breakdown: SeriesBreakdown.ENDPOINT,
    });
    const primary = latency.series.find((s) => s.key === "primary")!;
    expect(primary.total).toBe(7);
    expect(primary.values).toEqual([]);
    const filled = primary.counts.map((n, i) => [Number(n), i] as const).filter(([n]) => n > 0);
    expect(filled.length).toBeGreaterThan(0);
    for (const [, i] of filled) {
      expect(primary.p50[i]!).toBeGreaterThan(0);
      expect(primary.p95[i]!).toBeGreaterThanOrEqual(primary.p50[i]!);
      expect(primary.p99[i]!).toBeGreaterThanOrEqual(primary.p95[i]!);
    }

    const e2e = await f.admin.getSeries({
      metric: SeriesMetric.EVENT_LATENCY,
      window: "1h",
      breakdown: SeriesBreakdown.ORG,
    });
    // One sample per delivered delivery.
    expect(totals(e2e)).toEqual({ org_x: 3, org_y: 1 });
  };

  it("counts events, tokens, cost, attempt outcomes and latencies in buckets chosen from the window", async () => {
    await expectSeries();
    // Each delivered delivery keeps its event→delivered latency; others have none.
    const { deliveries } = await f.admin.listDeliveries({ pageSize: 10 });
    expect(deliveries).toHaveLength(5);
    for (const d of deliveries) {
      if (d.status === DeliveryStatus.DELIVERED) expect(d.eventLatencyMs).toBeGreaterThanOrEqual(0);
      else expect(d.eventLatencyMs).toBeUndefined();
    }
  });

  it("reads the same series after a restart (they come from the store)", async () => {
    await f.restart();
    await expectSeries();
  });

  it("gives an org token its org's series: its events, tokens and cost, and no attempts to the operator's endpoint", async () => {
    const made = await f.admin.createToken({ orgId: "org_x", kind: TokenKind.ADMIN, name: "series" });
    const org = createClient(
      AdminService,
      createConnectTransport({
        baseUrl: f.cp.httpUrl,
        httpVersion: "1.1",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${made.secret}`);
            return next(req);
          },
        ],
      }),
    );
    const events = await org.getSeries({ metric: SeriesMetric.EVENTS, window: "1h", breakdown: SeriesBreakdown.ORG });
    expect(totals(events)).toEqual({ org_x: 3 });
    const tokens = await org.getSeries({ metric: SeriesMetric.TOKENS, window: "1h", breakdown: SeriesBreakdown.MODEL });
    expect(totals(tokens)).toMatchObject({ "model-a": 100, "model-b": 50 });
    const cost = await org.getSeries({ metric: SeriesMetric.COST, window: "24h", breakdown: SeriesBreakdown.ORG });
    expect(totals(cost)).toEqual({ org_x: 2 });
    // Every delivery went to "primary", an operator endpoint: none of them is org_x's to see.
    const outcomes = await org.getSeries({
      metric: SeriesMetric.DELIVERIES,
      window: "1h",
      breakdown: SeriesBreakdown.OUTCOME,
    });
    expect(outcomes.series).toEqual([]);
    // The operator still sees everything.
    const all = await f.admin.getSeries({ metric: SeriesMetric.EVENTS, window: "1h", breakdown: SeriesBreakdown.ORG });
    expect(totals(all)).toEqual({ org_x: 3, org_y: 2 });
  });

  it("says when a window reaches past retention_hours", async () => {
    const week = await f.admin.getSeries({ metric: SeriesMetric.EVENTS, window: "7d" });
    expect(week.retentionLimited).toBe(true);
    const since = timestampMs(week.retainedSince!);
    expect(Math.abs(since - (Date.now() - 24 * 3_600_000))).toBeLessThan(60_000);
    const day = await f.admin.getSeries({ metric: SeriesMetric.EVENTS, window: "24h" });
    expect(day.retentionLimited).toBe(false);
    expect(day.retainedSince).toBeUndefined();
    // A window that ended long ago is past retention too, and empty.
    const old = await f.admin.getSeries({
      metric: SeriesMetric.EVENTS,
      window: "1h",
      endTime: timestampFromMs(Date.now() - 48 * 3_600_000),
    });
    expect(old.retentionLimited).toBe(true);
    expect(old.series).toEqual([]);
  });

  it("answers INVALID_ARGUMENT naming the field for a bad metric, window, breakdown or end time", async () => {
    const cases: [Promise<unknown>, string][] = [
      [f.admin.getSeries({ window: "1h" }), "metric: required"],
      [f.admin.getSeries({ metric: 99 as SeriesMetric, window: "1h" }), "metric: unknown metric 99"],
      [f.admin.getSeries({ metric: SeriesMetric.EVENTS }), "window: required; one of 15m, 1h, 24h, 7d"],
      [f.admin.getSeries({ metric: SeriesMetric.EVENTS, window: "2h" }), 'window: "2h" is not a window'],
      [
        f.admin.getSeries({ metric: SeriesMetric.DELIVERIES, window: "1h", breakdown: SeriesBreakdown.MODEL }),
        "breakdown: deliveries cannot be broken down by model; it can by outcome, endpoint, event type, org",
      ],
      [
        f.admin.getSeries({ metric: SeriesMetric.EVENTS, window: "1h", breakdown: 42 as SeriesBreakdown }),
        "breakdown: unknown breakdown 42",
      ],
      [
        f.admin.getSeries({ metric: SeriesMetric.EVENTS, window: "1h", endTime: { seconds: -5n, nanos: 0 } }),
        "end_time: must be a time after 1970",
      ],
    ];
    for (const [call, message] of cases) {
      const err = await rpcError(call);
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toContain(message);
    }
  });

  it("lists queues per endpoint with their dead letters", async () => {
    const { queues } = await f.admin.listQueues({});
    expect(queues.map((q) => [q.endpoint, Number(q.pending), Number(q.deadLettered)])).toEqual([["primary", 0, 1]]);
  });

  it("lists connected sidecars with their version and spool depth", async () => {
    const sidecar = openSidecarStream(f.cp, {
      sidecarId: "sc_series",
      orgId: "org_x",
      app: "shop",
      version: "9.9.9",
      spoolBatches: 3n,
      spoolBytes: 4096n,
    });
    try {
      await waitFor("the sidecar listed", async () => {
        const { sidecars } = await f.admin.listSidecars({});
        return sidecars.some((s) => s.sidecarId === "sc_series" && s.spoolBatches === 3n);
      });
      const { sidecars } = await f.admin.listSidecars({});
      expect(sidecars.find((s) => s.sidecarId === "sc_series")).toMatchObject({
        orgId: "org_x",
        app: "shop",
        version: "9.9.9",
        spoolBytes: 4096n,
      });
      sidecar.sendStatus(0, 0);
      await waitFor("its spool drained", async () => {
        const { sidecars } = await f.admin.listSidecars({});
        return sidecars.some((s) => s.sidecarId === "sc_series" && s.spoolBatches === 0n && s.spoolBytes === 0n);
      });
    } finally {
      sidecar.close();
    }
  });

  it("exports traffic counters on /metrics with bounded labels", async () => {
    // A fresh process has counted nothing yet: one more event, delivered.
    await f.restart();
    const tokensBefore = totals(
      await f.admin.getSeries({ metric: SeriesMetric.TOKENS, window: "1h", breakdown: SeriesBreakdown.MODEL }),
    );
    await f.cp.deliverEvents([completion("model-a", 7, { orgId: "org_z" })]);
    // A test event is an event, but its example usage (gpt-4, 1250 tokens) is nobody's spend.
    await f.admin.sendTestEvent({});
    await waitFor("the deliveries", async () => (await f.cp.store.countPending()) === 0, 30_000);
    const text = await (await fetch(`${f.cp.httpUrl}/metrics`)).text();
    expect(text).toContain('aigw_events_total{type="completion"} 2');
    expect(text).toContain('aigw_tokens_total{model="model-a",org="org_z"} 7');
    expect(text).toMatch(/aigw_cost_usd_total\{model="model-a",org="org_z"\} 0\.0(7|69999)/);
    expect(text).not.toMatch(/aigw_(tokens|cost_usd)_total\{model="gpt-4"/);
    expect(text).toContain('aigw_deliveries_total{endpoint="primary",outcome="delivered"} 2');
    expect(text).toMatch(/aigw_event_to_delivered_ms_count 2\n/);
    const tokensAfter = totals(
      await f.admin.getSeries({ metric: SeriesMetric.TOKENS, window: "1h", breakdown: SeriesBreakdown.MODEL }),
    );
    expect(tokensAfter["gpt-4"] ?? 0).toBe(tokensBefore["gpt-4"] ?? 0);
    expect(tokensAfter["model-a"]).toBe((tokensBefore["model-a"] ?? 0) + 7);
    expect(text).not.toMatch(/evt_|dlv_|req_/);
  });

  it("sums 10 s rows into the coarse ones in the background, and series read the same before and after", async () => {
    const read = async () =>
      Promise.all(
        (["15m", "24h", "7d"] as const).map(async (window) =>
          totals(await f.admin.getSeries({ metric: SeriesMetric.EVENTS, window, breakdown: SeriesBreakdown.ORG })),
        ),
      );
    const before = await read();
    expect(before[1]).toEqual(before[0]);
    expect(before[2]).toEqual(before[0]);
    // Up to the start of the current 10 s bucket (the control plane stays further behind).
    const now = Date.now();
    const until = now - (now % 10_000);
    expect(await f.cp.store.compactRollups(until)).toBe(until);
    expect(await f.cp.store.rollupWatermark()).toBe(until);
    expect(await read()).toEqual(before);
    // Again: nothing more to sum, nothing counted twice.
    expect(await f.cp.store.compactRollups(until)).toBe(until);
    expect(await read()).toEqual(before);
  });

  it("purges rollups older than each resolution keeps, never 10 s rows not yet compacted", async () => {
    const count = async (window: string) =>
      (await f.admin.getSeries({ metric: SeriesMetric.EVENTS, window })).series[0]?.total ?? 0;
    expect(await count("15m")).toBe(7);
    // Rows past the watermark stay, whatever the cutoff.
    const watermark = await f.cp.store.rollupWatermark();
    await f.cp.deliverEvents([completion("model-a", 1, { orgId: "org_z" })]);
    await f.cp.store.purgeRollups([{ res: ROLLUP_RESOLUTIONS[0], before: Date.now() + 60_000 }]);
    expect(await count("24h")).toBe(8);
    expect(await f.cp.store.rollupWatermark()).toBe(watermark);
    // Compacted, then purged: the 10 s rows (15 min, 1 h windows) are gone; the 5 min rows (24 h) stay.
    // Up to the end of the current 10 s bucket: the new event's too, however long the test took.
    const upTo = Math.floor(Date.now() / 10_000) * 10_000 + 10_000;
    await f.cp.store.compactRollups(upTo);
    const removed = await f.cp.store.purgeRollups([{ res: ROLLUP_RESOLUTIONS[0], before: upTo }]);
    expect(removed).toBeGreaterThan(0);
    expect(await count("15m")).toBe(0);
    expect(await count("24h")).toBe(8);
  });
});

describe("histogram percentiles", () => {
  it("answer the upper bound of the bin holding the nearest rank", () => {
    // Bins 2 (5 ms), 6 (100 ms), 11 (1000 ms).
    const hist = new Map([
      [2, 50],
      [6, 45],
      [11, 5],
    ]);
    expect(histogramPercentile(hist, 100, 0.5)).toBe(5);
    expect(histogramPercentile(hist, 100, 0.95)).toBe(100);
    expect(histogramPercentile(hist, 100, 0.99)).toBe(1000);
  });
});

describe("metric labels", () => {
  it("keep at most maxSeries label sets; later ones count as other", () => {
    const c = new LabelledCounter("x_total", "x", ["model", "org"], 3);
    for (let i = 0; i < 10; i++) c.add([`m${i}`, "o"], 2);
    c.add(["m0", "o"]);
    const samples = c.family().samples;
    expect(samples).toHaveLength(4);
    expect(samples.find((s) => s.labels?.model === "m0")?.value).toBe(3);
    expect(samples.find((s) => s.labels?.model === "other")).toEqual({
      labels: { model: "other", org: "other" },
      value: 14,
    });
  });
});
