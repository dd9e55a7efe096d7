import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { type RunningControlPlane, runControlPlane } from "../../control-plane/run.js";
import { AsyncQueue } from "../../control-plane/ingest/async-queue.js";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import {
  type ConfigSnapshot,
  type ConnectRequest,
  ConnectRequestSchema,
  HelloSchema,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/** $1 per million prompt tokens, $2 per million completion tokens. */
const PRICING = `
pricing:
  test-model:
    input: 1
    output: 2
`;

function configYaml(receiverUrl: string, extra: string): string {
  return `
webhooks:
  primary:
    url: "${receiverUrl}"
    secret: "${SECRET}"
events:
  subscribe: ["completion", "budget"]
retry:
  max_attempts: 3
  initial_delay_ms: 50
  max_delay_ms: 200
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
${PRICING}
${extra}`;
}

/** A completion as a sidecar sends it: usage, cost 0 (the control plane prices it). */
function completion(orgId: string, model: string, promptTokens: number, completionTokens = 0): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId,
    app: "chat",
    provider: "openai",
    time: timestampFromMs(Date.now()),
    payload: {
      case: "completion",
      value: {
        requestId: newRequestId(),
        model,
        promptTokens,
        completionTokens,
        tokensUsed: promptTokens + completionTokens,
        latencyMs: 100,
      },
    },
  });
}

/** `usd` worth of test-model prompt tokens. */
const spend = (orgId: string, usd: number): Event => completion(orgId, "test-model", Math.round(usd * 1_000_000));

interface Harness {
  dir: string;
  receiver: TestReceiver;
  clock: { now: number };
  cp: RunningControlPlane;
  logs: string[];
  start(): Promise<RunningControlPlane>;
}

describe("budgets and pricing on a real control plane", () => {
  const open: { close(): Promise<void> }[] = [];
  let dir: string;
  let location: TestStoreLocation;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-budgets-"));
    location = await testStoreLocation();
  });
  afterEach(async () => {
    for (const c of open.splice(0).reverse()) await c.close();
    await location.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  async function harness(extra: string, startAt: string): Promise<Harness> {
    const receiver = await startTestReceiver({ secret: SECRET });
    open.push(receiver);
    const clock = { now: Date.parse(startAt) };
    const logs: string[] = [];
    const h: Harness = {
      dir,
      receiver,
      clock,
      logs,
      cp: undefined as unknown as RunningControlPlane,
      async start() {
        const cp = await runControlPlane({
          config: parseConfig(withStorageKey(configYaml(receiver.url, extra), location), {
            file: "budgets.yaml",
            env: {},
          }),
          store: location.url,
          grpc: "127.0.0.1:0",
          http: "127.0.0.1:0",
          now: () => clock.now,
          logger: createLogger({
            level: "info",
            destination: new Writable({
              write(chunk: Buffer, _enc, done) {
                logs.push(chunk.toString());
                done();
              },
            }),
          }),
        });
        open.push(cp);
        h.cp = cp;
        return cp;
      },
    };
    await h.start();
    return h;
  }

  const budgetHooks = (r: TestReceiver) => r.accepted().filter((w) => w.body.event === "budget");
  const completionHook = (r: TestReceiver, id: string) => r.accepted().find((w) => w.id === id);

  it("prices completions: cost_usd for known models, 0 with pricing_unknown, a metric and one log line for unknown ones", async () => {
    const h = await harness("", "2026-03-10T12:00:00Z");
    const known = completion("org_p", "test-model", 300_000, 100_000); // 0.3 + 0.2
    const family = completion("org_p", "gpt-4o-2024-08-06", 1_000, 500); // built-in gpt-4o: 2.5 / 10
    const unknownA = completion("org_p", "mystery-model", 1_000, 1_000);
    const unknownB = completion("org_p", "mystery-model", 5, 5);
    const result = await h.cp.deliverEvents([known, family, unknownA, unknownB]);
    expect(result.stored).toHaveLength(4);

    const bodies = await waitFor("four completion webhooks", () => {
      const got = [known, family, unknownA, unknownB].map((e) => completionHook(h.receiver, e.id)?.body);
      return got.every((b) => b !== undefined) ? got : undefined;
    });
    expect(bodies[0]).toMatchObject({ model: "test-model", cost_usd: 0.5 });
    expect(bodies[0]).not.toHaveProperty("pricing_unknown");
    expect(bodies[1]).toMatchObject({ cost_usd: 0.0075 });
    expect(bodies[2]).toMatchObject({ model: "mystery-model", cost_usd: 0, pricing_unknown: true });
    expect(bodies[3]).toMatchObject({ cost_usd: 0, pricing_unknown: true });
    // Stored as priced: what the feed and replays see.
    const stored = await h.cp.store.readFeed(undefined, 10);
    const storedKnown = stored.find((s) => s.event.id === known.id)?.event.payload;
    expect(storedKnown?.case === "completion" && storedKnown.value.costUsd).toBe(0.5);

    const metrics = await fetch(`${h.cp.httpUrl}/metrics`).then((r) => r.text());
    expect(metrics).toContain('aigw_pricing_unknown_total{model="mystery-model"} 2');
    // Rate-limited per model: two events, one line.
    expect(h.logs.filter((l) => l.includes("no price for this model"))).toHaveLength(1);
    expect(h.logs.join("")).toContain('"model":"mystery-model"');
  });

  it("fires 50/80/90/100 once each, ignores re-sent events, fires nothing again after a restart, and again in a new month", async () => {
    const budgets = `
budgets:
  - org_id: org_b
    limit_type: monthly
    budget_limit: 1
`;
    const h = await harness(budgets, "2026-03-31T22:00:00Z");
    const batch = [spend("org_b", 0.3), spend("org_b", 0.3), spend("org_b", 0.3), spend("org_b", 0.3)];
    const first = await h.cp.deliverEvents(batch);
    expect(first.generated).toHaveLength(4);

    const fired = await waitFor("four budget webhooks", () => {
      const got = budgetHooks(h.receiver);
      return got.length >= 4 ? got : undefined;
    });
    expect(fired.map((w) => w.body.threshold).sort((a, b) => Number(a) - Number(b))).toEqual([50, 80, 90, 100]);
    for (const w of fired) {
      expect(w.body).toMatchObject({
        event: "budget",
        org_id: "org_b",
        limit_type: "monthly",
        budget_limit: 1,
        period: "2026-03",
        app: "",
        provider: "",
      });
      expect(w.id).toBe(w.body.id);
    }
    const byThreshold = Object.fromEntries(fired.map((w) => [w.body.threshold, w.body]));
    expect(byThreshold[50]).toMatchObject({ usage_percent: 60, current_spend: 0.6 });
    expect(byThreshold[80]).toMatchObject({ usage_percent: 90, current_spend: 0.9 });
    expect(byThreshold[100]).toMatchObject({ usage_percent: 120, current_spend: 1.2 });
    expect(new Set(fired.map((w) => w.id)).size).toBe(4);

    // A sidecar re-sending the batch (ack lost) counts nothing twice.
    const resent = await h.cp.deliverEvents(batch.map((e) => create(EventSchema, e)));
    expect(resent).toMatchObject({ duplicates: 4, stored: [] });
    const listed = await adminClient(h.cp).listBudgets({});
    expect(listed.budgets).toHaveLength(1);
    expect(listed.budgets[0]).toMatchObject({ orgId: "org_b", period: "2026-03", firedThresholds: [50, 80, 90, 100] });
    expect(listed.budgets[0]?.currentSpend).toBeCloseTo(1.2, 9);

    // Restart on the same database, same month: more spend fires nothing again.
    await h.cp.close();
    const cp2 = await h.start();
    const later = spend("org_b", 0.5);
    const after = await cp2.deliverEvents([later]);
    expect(after.generated).toEqual([]);
    await waitFor("the later completion's webhook", () => completionHook(h.receiver, later.id));
    expect(budgetHooks(h.receiver)).toHaveLength(4);
    const afterRestart = (await adminClient(cp2).listBudgets({})).budgets[0];
    expect(afterRestart?.currentSpend).toBeCloseTo(1.7, 9);

    // Midnight UTC into April: a new period, counted from 0, fires again.
    h.clock.now = Date.parse("2026-04-01T00:00:01Z");
    await cp2.deliverEvents([spend("org_b", 0.55)]);
    const april = await waitFor("April's 50% webhook", () =>
      budgetHooks(h.receiver).find((w) => w.body.period === "2026-04"),
    );
    expect(april.body).toMatchObject({ threshold: 50, current_spend: 0.55, usage_percent: 55 });
    expect(budgetHooks(h.receiver)).toHaveLength(5);
    expect((await adminClient(cp2).listBudgets({})).budgets[0]).toMatchObject({
      period: "2026-04",
      firedThresholds: [50],
    });
  });

  it("keeps daily and monthly periods apart, on UTC calendar days", async () => {
    const budgets = `
budgets:
  - { org_id: org_d, limit_type: daily, budget_limit: 1, thresholds: [100] }
  - { org_id: org_d, limit_type: monthly, budget_limit: 10, thresholds: [10, 30] }
`;
    const h = await harness(budgets, "2026-05-10T23:59:59Z");
    await h.cp.deliverEvents([spend("org_d", 1)]);
    await waitFor("day one's webhooks", () => (budgetHooks(h.receiver).length >= 2 ? true : undefined));
    // One second later it is the 11th in UTC, whatever the machine's time zone says.
    h.clock.now = Date.parse("2026-05-11T00:00:00Z");
    await h.cp.deliverEvents([spend("org_d", 1)]);
    await waitFor("day two's webhook", () => (budgetHooks(h.receiver).length >= 3 ? true : undefined));
    await h.cp.deliverEvents([spend("org_d", 1.5)]); // month at 3.5 of 10: 30% fires
    await waitFor("the monthly 30% webhook", () => (budgetHooks(h.receiver).length >= 4 ? true : undefined));
    const seen = budgetHooks(h.receiver)
      .map((w) => `${w.body.limit_type} ${w.body.period} ${w.body.threshold}`)
      .sort();
    expect(seen).toEqual(["daily 2026-05-10 100", "daily 2026-05-11 100", "monthly 2026-05 10", "monthly 2026-05 30"]);
    const listed = (await adminClient(h.cp).listBudgets({})).budgets;
    expect(listed.map((b) => [b.limitType, b.period, b.firedThresholds])).toEqual([
      ["daily", "2026-05-11", [100]],
      ["monthly", "2026-05", [10, 30]],
    ]);
    expect(listed[0]?.currentSpend).toBeCloseTo(2.5, 9);
    expect(listed[1]?.currentSpend).toBeCloseTo(3.5, 9);
  });

  it("tells sidecars an enforced budget is exceeded, in a new snapshot only when that flips", async () => {
    const budgets = `
budgets:
  - { org_id: org_e, limit_type: monthly, budget_limit: 1, enforce: true }
`;
    const h = await harness(budgets, "2026-06-15T12:00:00Z");
    const sidecar = openSidecarStream(h.cp);
    open.push(sidecar);
    const initial = await sidecar.nextConfig();
    expect(initial.budgets).toMatchObject([
      { orgId: "org_e", limitType: "monthly", budgetLimit: 1, currentSpend: 0, exceeded: false, enforce: true },
    ]);
    await h.cp.deliverEvents([spend("org_e", 0.4)]); // below the limit: no new version
    await h.cp.deliverEvents([spend("org_e", 0.7)]);
    const flipped = await sidecar.nextConfig();
    expect(flipped.version).toBeGreaterThan(initial.version);
    expect(flipped.budgets[0]).toMatchObject({ orgId: "org_e", exceeded: true, enforce: true });
    expect(flipped.budgets[0]?.currentSpend).toBeCloseTo(1.1, 9);

    // More spend while exceeded changes nothing the sidecars act on: same version.
    await h.cp.deliverEvents([spend("org_e", 0.3)]);
    const other = openSidecarStream(h.cp);
    open.push(other);
    expect((await other.nextConfig()).version).toBe(flipped.version);

    // A new month whose first call alone exceeds the limit: still exceeded, with July's spend.
    h.clock.now = Date.parse("2026-07-01T00:00:00Z");
    await h.cp.deliverEvents([spend("org_e", 1.5)]);
    const july = await sidecar.nextConfig();
    expect(july.budgets[0]).toMatchObject({ exceeded: true, currentSpend: 1.5 });

    // Raising the limit at runtime lifts the refusal.
    await adminClient(h.cp).setBudget({
      budget: { orgId: "org_e", limitType: "monthly", budgetLimit: 5, enforce: true },
    });
    const raised = await sidecar.nextConfig();
    expect(raised.budgets[0]).toMatchObject({ budgetLimit: 5, exceeded: false });
  });
});

function adminClient(cp: RunningControlPlane) {
  return createClient(AdminService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
}

/** A hand-driven sidecar stream that only reads config snapshots. */
function openSidecarStream(cp: RunningControlPlane) {
  const client = createClient(IngestService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
  const requests = new AsyncQueue<ConnectRequest>();
  const abort = new AbortController();
  const responses = client.connect(requests, { signal: abort.signal })[Symbol.asyncIterator]();
  requests.push(
    create(ConnectRequestSchema, {
      message: {
        case: "hello",
        value: create(HelloSchema, { sidecarId: `sc_${newRequestId()}`, orgId: "org_e", app: "chat", version: "test" }),
      },
    }),
  );
  return {
    async nextConfig(): Promise<ConfigSnapshot> {
      for (;;) {
        const r = await responses.next();
        if (r.done) throw new Error("stream ended");
        if (r.value.message.case === "config") return r.value.message.value;
      }
    },
    async close() {
      requests.end();
      abort.abort();
    },
  };
}
