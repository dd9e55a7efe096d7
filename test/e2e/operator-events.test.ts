import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { FeedService } from "../../gen/aigw/v1/feed_pb.js";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET } from "../support/stack.js";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { waitFor } from "../support/wait.js";
import { type ReceivedWebhook, startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

const OPS_SECRET = "whsec_b3BzLWVuZHBvaW50LXNlY3JldC1rZXktMzItYnl0ZXM=";

// Operator events through a real control-plane process (SQLite, or PostgreSQL with
// AIGW_TEST_STORE=postgres): receivers that answer 410, fail for a while, always fail,
// and an operator endpoint subscribed to the three operator events, verifying every
// webhook's signature with standardwebhooks.
describe("operator events, delivered like any event to the endpoints subscribed to them", () => {
  let dir: string;
  let location: TestStoreLocation;
  let cp: AigwProcess;
  let admin: Client<typeof AdminService>;
  let feed: Client<typeof FeedService>;
  const receivers: Record<string, TestReceiver> = {};
  const feedEvents: Event[] = [];
  const stopFeed = new AbortController();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-operator-"));
    location = await testStoreLocation();
    receivers.ops = await startTestReceiver({ secret: OPS_SECRET });
    receivers.gone = await startTestReceiver({ secret: TEST_SECRET, script: () => 410 });
    // Fails twice (opening the circuit), then the half-open trial succeeds.
    receivers.flaky = await startTestReceiver({ secret: TEST_SECRET, script: (attempt) => (attempt <= 2 ? 503 : 200) });
    receivers.dead = await startTestReceiver({ secret: TEST_SECRET, script: () => 500 });
    receivers.failing = await startTestReceiver({ secret: TEST_SECRET, script: () => 503 });
    const hook = (name: string, extra = "") =>
      `  ${name}:\n    url: "${receivers[name]!.url}"\n    secret: "${name === "ops" ? OPS_SECRET : TEST_SECRET}"\n${extra}`;
    const config = join(dir, "config.yaml");
    writeFileSync(
      config,
      withStorageKey(
        `
webhooks:
${hook("ops", '    events: ["endpoint.disabled", "endpoint.recovered", "delivery.exhausted"]\n')}
${hook("gone", '    events: ["completion"]\n')}
${hook("flaky", '    events: ["completion"]\n')}
${hook("dead", '    events: ["completion"]\n')}
${hook("failing", '    events: ["completion"]\n')}
events:
  subscribe: ["completion", "endpoint.disabled", "endpoint.recovered", "delivery.exhausted"]
retry:
  max_attempts: 3
  initial_delay_ms: 50
  max_delay_ms: 100
delivery:
  circuit_breaker_threshold: 2
  circuit_breaker_cooldown_ms: 300
  auto_disable_after_ms: 1000
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
`,
        location,
      ),
    );
    cp = runAigw([
      "control-plane",
      "--config",
      config,
      "--store",
      location.url,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    const ready = await cp.waitForLog("control plane ready");
    const transport = createConnectTransport({ baseUrl: String(ready.http), httpVersion: "1.1" });
    admin = createClient(AdminService, transport);
    feed = createClient(FeedService, transport);
    void (async () => {
      try {
        for await (const res of feed.watch({ since: durationFromMs(3_600_000) }, { signal: stopFeed.signal })) {
          if (res.event) feedEvents.push(res.event);
        }
      } catch {
        // Aborted at the end.
      }
    })();
  });

  afterAll(async () => {
    stopFeed.abort();
    cp?.child.kill("SIGTERM");
    await cp?.exited;
    for (const r of Object.values(receivers)) await r.close();
    await location?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const toOps = (event: string, endpoint: string) =>
    receivers.ops!.accepted().filter((w) => w.body.event === event && w.body.endpoint === endpoint);
  const found = (event: string, endpoint: string): Promise<[ReceivedWebhook, ...ReceivedWebhook[]]> =>
    waitFor(`${event} for ${endpoint}`, () => {
      const hooks = toOps(event, endpoint);
      return hooks.length > 0 ? (hooks as [ReceivedWebhook, ...ReceivedWebhook[]]) : undefined;
    });
  const onFeed = (type: Event["payload"]["case"], endpoint: string) =>
    feedEvents.filter(
      (e) => e.payload.case === type && (e.payload.value as { endpoint: string }).endpoint === endpoint,
    );

  it("endpoint.disabled when a receiver answers 410, signed for the operator endpoint and on the feed", async () => {
    await admin.sendTestEvent({ endpoint: "gone", eventType: EventType.COMPLETION });
    const [w] = await found("endpoint.disabled", "gone");
    expect(w.body).toMatchObject({
      event: "endpoint.disabled",
      endpoint: "gone",
      reason: "gone",
      detail: "receiver answered 410 Gone; endpoint gone disabled",
      status_code: 410,
      org_id: "",
    });
    expect(w.id).toMatch(/^evt_/);
    expect(w.headers["webhook-signature"]).toMatch(/^v1,/);
    expect(receivers.ops!.rejected).toEqual([]);
    expect((await admin.getEndpoint({ name: "gone" })).endpoint).toMatchObject({ enabled: false });
    await waitFor("endpoint.disabled on the feed", () => onFeed("endpointDisabled", "gone").length === 1);
    // The endpoint it is about never gets it.
    expect(receivers.gone!.received.every((r) => r.body.event === "completion")).toBe(true);
  });

  it("endpoint.recovered when a circuit closes again after its trial succeeds", async () => {
    await admin.sendTestEvent({ endpoint: "flaky", eventType: EventType.COMPLETION });
    await waitFor("flaky delivered", () => receivers.flaky!.accepted().length === 1);
    const [hook] = await found("endpoint.recovered", "flaky");
    expect(hook.body).toMatchObject({ event: "endpoint.recovered", endpoint: "flaky" });
    expect(Number(hook.body.down_ms)).toBeGreaterThan(0);
    expect(typeof hook.body.opened_at).toBe("string");
    await waitFor("endpoint.recovered on the feed", () => onFeed("endpointRecovered", "flaky").length === 1);
  });

  it("delivery.exhausted when a delivery is dead-lettered after all its attempts", async () => {
    const sent = await admin.sendTestEvent({ endpoint: "dead", eventType: EventType.COMPLETION });
    const [hook] = await found("delivery.exhausted", "dead");
    expect(hook.body).toMatchObject({
      event: "delivery.exhausted",
      endpoint: "dead",
      delivery_id: sent.deliveryIds[0],
      event_id: sent.event?.id,
      event_type: "completion",
      attempts: 3,
      last_error: "receiver answered 500",
    });
    expect(receivers.dead!.received).toHaveLength(3);
    expect((await admin.getEndpoint({ name: "dead" })).endpoint?.enabled).toBe(true);
  });

  it("auto-disables an endpoint every attempt of which failed for delivery.auto_disable_after_ms, never at once", async () => {
    const started = Date.now();
    // Events keep coming; every attempt fails. Bounded: at most 120 events over ~30 s (a busy machine).
    for (let i = 0; i < 120 && toOps("endpoint.disabled", "failing").length === 0; i++) {
      if ((await admin.getEndpoint({ name: "failing" })).endpoint?.enabled) {
        // It may be disabled between the read and the send: that answer is FAILED_PRECONDITION.
        await admin.sendTestEvent({ endpoint: "failing", eventType: EventType.COMPLETION }).catch((err: unknown) => {
          if (ConnectError.from(err).code !== Code.FailedPrecondition) throw err;
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const [hook] = await found("endpoint.disabled", "failing");
    expect(hook.body).toMatchObject({ event: "endpoint.disabled", endpoint: "failing", reason: "failing" });
    expect(Number(hook.body.failed_attempts)).toBeGreaterThanOrEqual(2);
    expect(String(hook.body.detail)).toMatch(/^every attempt failed for 1s \(\d+ attempts\)$/);
    const since = Date.parse(String(hook.body.failing_since));
    expect(hook.receivedAt - since).toBeGreaterThanOrEqual(1000);
    expect(since).toBeGreaterThanOrEqual(started - 1000);
    const endpoint = (await admin.getEndpoint({ name: "failing" })).endpoint;
    expect(endpoint).toMatchObject({ enabled: false });
    expect(endpoint?.disabledReason).toMatch(/^every attempt failed for 1s/);
    const warned = cp.lines.some((l) => l.includes('"code":"AIGW_ENDPOINT_AUTO_DISABLED"'));
    expect(warned).toBe(true);
  });

  it("fires each operator event once, all signed", async () => {
    expect(toOps("endpoint.disabled", "gone")).toHaveLength(1);
    expect(toOps("endpoint.recovered", "flaky")).toHaveLength(1);
    expect(toOps("endpoint.disabled", "failing")).toHaveLength(1);
    expect(toOps("delivery.exhausted", "dead")).toHaveLength(1);
    expect(receivers.ops!.rejected).toEqual([]);
    // The operator endpoint got operator events only, each id once.
    const ids = receivers.ops!.accepted().map((w) => w.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(receivers.ops!.accepted().every((w) => String(w.body.event).includes("."))).toBe(true);
  });
});
