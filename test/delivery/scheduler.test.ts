import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { defaultConfig } from "../../control-plane/config/defaults.js";
import type { GatewayConfig } from "../../control-plane/config/types.js";
import { createDeliveryPool, type DeliveryPool } from "../../control-plane/delivery/pool.js";
import { DeliveryScheduler } from "../../control-plane/delivery/scheduler.js";
import type { Store } from "../../control-plane/store/store.js";
import { openLocation, type TestStoreLocation, testStoreLocation } from "../support/store.js";
import type { DeliveryRecord } from "../../control-plane/store/store.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { startTestServer, type TestServer } from "./helpers.js";

const SECRET = "whsec_" + Buffer.from("scheduler-test-secret-0123456789").toString("base64");
const BACKUP_SECRET = "whsec_" + Buffer.from("backup-test-secret-0123456789abc").toString("base64");

let pool: DeliveryPool;
let location: TestStoreLocation;
let store: Store;
let logLines: string[];
const schedulers: DeliveryScheduler[] = [];
const servers: TestServer[] = [];

beforeAll(() => {
  pool = createDeliveryPool({ maxThreads: 2, concurrentTasksPerWorker: 16 });
});
afterAll(async () => {
  await pool.close();
});

beforeEach(async () => {
  location = await testStoreLocation();
  store = await openLocation(location);
  logLines = [];
});

afterEach(async () => {
  await Promise.all(schedulers.splice(0).map((s) => s.stop()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await store.close();
  // Secrets never reach a log line.
  const logs = logLines.join("");
  for (const secret of [SECRET, BACKUP_SECRET]) expect(logs).not.toContain(secret.slice(6));
  await location.cleanup();
});

function testConfig(
  over: { retry?: Partial<GatewayConfig["retry"]>; delivery?: Partial<GatewayConfig["delivery"]> } = {},
) {
  const config = defaultConfig();
  config.retry = { ...config.retry, initialDelayMs: 20, maxDelayMs: 100, maxAttempts: 3, jitter: 0.2, ...over.retry };
  config.security = { ...config.security, requireHttps: false, allowedNetworks: ["127.0.0.0/8"] };
  config.delivery = {
    ...config.delivery,
    timeoutMs: 3_000,
    concurrentDeliveries: 8,
    perEndpointConcurrency: 4,
    circuitBreakerThreshold: 100,
    circuitBreakerCooldownMs: 60_000,
    ...over.delivery,
  };
  return config;
}

function logger() {
  const destination = new Writable({
    write(chunk, _enc, cb) {
      logLines.push(String(chunk));
      cb();
    },
  });
  return createLogger({ level: "debug", destination, name: "delivery-test" });
}

function scheduler(config: GatewayConfig, options: { ownPool?: boolean; targetStore?: Store } = {}) {
  const s = new DeliveryScheduler({
    store: options.targetStore ?? store,
    config,
    logger: logger(),
    // Hanging receivers must not hold a test's teardown for long.
    stopTimeoutMs: 1_000,
    ...(options.ownPool ? {} : { pool }),
  });
  schedulers.push(s);
  s.start();
  return s;
}

async function receiver(handler: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  const s = await startTestServer(handler);
  servers.push(s);
  return s;
}

async function endpoint(name: string, url: string, failoverTo = "", secret = SECRET) {
  await store.upsertEndpoint({ name, url, enabled: true, eventTypes: [], failoverTo }, secret);
}

function completion(): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_test",
    app: "chat",
    provider: "openai",
    time: timestampNow(),
    payload: {
      case: "completion",
      value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 150, promptTokens: 100, completionTokens: 50 },
    },
  });
}

async function ingest(endpointName: string, count = 1): Promise<Event[]> {
  const events = Array.from({ length: count }, completion);
  await store.ingest(events, () => [endpointName]);
  return events;
}

async function deliveriesOf(eventId: string): Promise<DeliveryRecord[]> {
  return (await store.listDeliveries({ eventId, pageSize: 100 })).deliveries;
}

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 15));
  }
}

async function statusOf(eventId: string, endpointName: string, status: string) {
  return until(`${endpointName} delivery of ${eventId} to be ${status}`, async () => {
    const d = (await deliveriesOf(eventId)).find((x) => x.endpoint === endpointName);
    return d?.status === status ? d : undefined;
  });
}

describe("DeliveryScheduler", () => {
  it("retries 503, 503 then delivers on attempt 3 with the same webhook-id, each attempt freshly signed", async () => {
    const r = await receiver((_req, res, i) => res.writeHead(i < 2 ? 503 : 200).end(i < 2 ? "busy" : "ok"));
    await endpoint("primary", r.url);
    const [event] = await ingest("primary");
    scheduler(testConfig({ retry: { maxAttempts: 5 } }));
    const delivery = await statusOf(event!.id, "primary", "delivered");

    expect(delivery.attemptCount).toBe(3);
    expect(r.requests).toHaveLength(3);
    expect(new Set(r.requests.map((q) => q.headers["webhook-id"]))).toEqual(new Set([event!.id]));
    for (const q of r.requests) {
      const body = new Webhook(SECRET).verify(q.body, q.headers as Record<string, string>) as Record<string, unknown>;
      expect(body).toMatchObject({
        event: "completion",
        id: event!.id,
        org_id: "org_test",
        model: "gpt-4",
        tokens_used: 150,
      });
    }
    // The body is the same bytes on every attempt.
    expect(new Set(r.requests.map((q) => q.body)).size).toBe(1);
    const attempts = await store.listAttempts(delivery.id);
    expect(attempts.map((a) => a.statusCode)).toEqual([503, 503, 200]);
    expect(attempts[0]!.responseBody).toBe("busy");
    // Backoff: the retries did not come back instantly.
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(10);
  });

  it("dead-letters after max_attempts of 500 and fails over to backup", async () => {
    const primary = await receiver((_req, res) => res.writeHead(500).end());
    const backup = await receiver((_req, res) => res.writeHead(200).end());
    await endpoint("primary", primary.url, "backup");
    await endpoint("backup", backup.url, "", BACKUP_SECRET);
    const [event] = await ingest("primary");
    const s = scheduler(testConfig({ retry: { maxAttempts: 3 } }));

    const dead = await statusOf(event!.id, "primary", "dead_lettered");
    expect(dead.attemptCount).toBe(3);
    expect(dead.lastError).toMatch(/500/);
    expect(primary.requests).toHaveLength(3);
    const failover = await statusOf(event!.id, "backup", "delivered");
    expect(failover.originDeliveryId).toBe(dead.id);
    expect(backup.requests).toHaveLength(1);
    const req = backup.requests[0]!;
    expect(req.headers["webhook-id"]).toBe(event!.id);
    expect(new Webhook(BACKUP_SECRET).verify(req.body, req.headers as Record<string, string>)).toMatchObject({
      id: event!.id,
    });
    expect(s.metrics().attempts).toMatchObject({ retry: 2, dead_lettered: 1, delivered: 1 });
  });

  it("records a result the store refuses as it was plainly, so the delivery is not sent again at every lease expiry", async () => {
    // The receiver's answer carries what the store will not take (as a value a column cannot
    // hold once did): only that attempt's record is refused, and not for being unavailable.
    const r = await receiver((_req, res) => res.writeHead(200).end("refuse-me"));
    await endpoint("primary", r.url);
    const [event] = await ingest("primary");
    const refusing = new Proxy(store, {
      get(target, prop, receiverObj) {
        if (prop === "completeAttempt") {
          return (delivery: unknown, attempt: { responseBody: string }, outcome: unknown) => {
            if (attempt.responseBody.includes("refuse-me")) {
              return Promise.reject(new Error('value "refuse-me" is out of range for its column'));
            }
            return target.completeAttempt(delivery as never, attempt as never, outcome as never);
          };
        }
        const value = Reflect.get(target, prop, receiverObj);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    scheduler(testConfig(), { targetStore: refusing });
    const delivered = await statusOf(event!.id, "primary", "delivered");
    expect(delivered.attemptCount).toBe(1);
    expect(r.requests).toHaveLength(1);
    const [attempt] = await store.listAttempts(delivered.id);
    expect(attempt).toMatchObject({ statusCode: 200, responseBody: "" });
    expect(attempt?.error).toContain('the store refused this attempt\'s record (value "refuse-me" is out of range');
    const logged = logLines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged.find((l) => l.code === "AIGW_RESULT_UNRECORDABLE")).toMatchObject({
      deliveryId: delivered.id,
      endpoint: "primary",
    });
  });

  it("fails a 400 at once with one attempt", async () => {
    const r = await receiver((_req, res) => res.writeHead(400).end('{"error":"bad"}'));
    await endpoint("primary", r.url);
    const [event] = await ingest("primary");
    scheduler(testConfig());
    const failed = await statusOf(event!.id, "primary", "failed");
    expect(failed.attemptCount).toBe(1);
    expect(failed.lastError).toMatch(/400/);
    expect(r.requests).toHaveLength(1);
  });

  it("disables the endpoint on 410 and fails its later deliveries with a clear reason", async () => {
    const r = await receiver((_req, res) => res.writeHead(410).end());
    await endpoint("primary", r.url);
    const [first] = await ingest("primary");
    const s = scheduler(testConfig());
    await statusOf(first!.id, "primary", "failed");
    const ep = await store.getEndpoint("primary");
    expect(ep?.enabled).toBe(false);
    expect(ep?.disabledReason).toMatch(/410/);

    const [second] = await ingest("primary");
    s.notify();
    const later = await statusOf(second!.id, "primary", "failed");
    expect(later.lastError).toMatch(/endpoint "primary" is disabled/);
    expect(r.requests).toHaveLength(1);
  });

  it("does not let a hanging endpoint delay a healthy one", async () => {
    const hanging = await receiver(() => {
      /* never answers */
    });
    const healthy = await receiver((_req, res) => res.writeHead(200).end());
    await endpoint("slow", hanging.url);
    await endpoint("fast", healthy.url);
    // The slow endpoint's deliveries are older, so they are claimed first.
    await ingest("slow", 10);
    const fast = await ingest("fast", 6);
    const started = Date.now();
    scheduler(testConfig({ delivery: { timeoutMs: 20_000, concurrentDeliveries: 8, perEndpointConcurrency: 3 } }));
    await until("fast deliveries", async () => {
      for (const e of fast) if ((await deliveriesOf(e.id))[0]?.status !== "delivered") return false;
      return true;
    });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(healthy.requests).toHaveLength(6);
    expect(hanging.maxInFlight).toBeLessThanOrEqual(3);
  });

  it("records a fast endpoint's success while a hanging one still waits; each lane travels in its own batch", async () => {
    let answerSlow: (() => void) | undefined;
    const hanging = await receiver((_req, res) => {
      answerSlow = () => res.writeHead(200).end();
    });
    const healthy = await receiver((_req, res) => res.writeHead(200).end());
    await endpoint("slow", hanging.url);
    await endpoint("fast", healthy.url);
    // One event for both endpoints: both are claimed in one round, one batch per lane.
    const [event] = Array.from({ length: 1 }, completion);
    await store.ingest([event!], () => ["slow", "fast"]);
    const batches: string[][] = [];
    const observedPool: DeliveryPool = {
      run: (task) => pool.run(task),
      runBatch(batch, onResult) {
        batches.push(batch.items.map((item) => batch.destinations[item.destination]?.url ?? "?"));
        return pool.runBatch(batch, onResult);
      },
      get threads() {
        return pool.threads;
      },
      get queued() {
        return pool.queued;
      },
      close: async () => {},
    };
    const s = new DeliveryScheduler({
      store,
      config: testConfig({ delivery: { timeoutMs: 20_000 } }),
      logger: logger(),
      pool: observedPool,
      stopTimeoutMs: 1_000,
    });
    schedulers.push(s);
    s.start();

    await statusOf(event!.id, "fast", "delivered");
    expect(batches.map((urls) => [...new Set(urls)]).sort()).toEqual([[hanging.url], [healthy.url]].sort());
    // The slow receiver holds its request (which may reach it after the fast one was
    // recorded, on a busy machine), and its delivery is still leased and pending.
    await until("the slow request to reach its receiver", () => hanging.inFlight === 1);
    expect((await deliveriesOf(event!.id)).find((d) => d.endpoint === "slow")?.status).toBe("pending");
    expect(s.metrics().inFlight).toBe(1);

    answerSlow?.();
    await statusOf(event!.id, "slow", "delivered");
    await until("slots given back", () => s.metrics().inFlight === 0);
  });

  it("goes on with a run of failed attempts recorded before it started (auto_disable_after_ms survives restarts)", async () => {
    const down = await receiver((_req, res) => res.writeHead(500).end());
    await endpoint("down", down.url);
    await endpoint("fresh", down.url);
    // A previous process saw "down" failing for two minutes; "fresh" has no run.
    const since = Date.now() - 120_000;
    await store.startFailingRun("down", since);
    const config = testConfig({ retry: { maxAttempts: 1 }, delivery: { autoDisableAfterMs: 60_000 } });
    const s = new DeliveryScheduler({ store, config, logger: logger(), pool, stopTimeoutMs: 1_000 });
    schedulers.push(s);
    await s.syncCircuits();
    s.start();
    const [toDown] = await ingest("down");
    const [toFresh] = await ingest("fresh");
    await statusOf(toDown!.id, "down", "dead_lettered");
    await statusOf(toFresh!.id, "fresh", "dead_lettered");
    // One more failed attempt after the restart: the run is two minutes old, so "down" is disabled.
    const disabled = await until("down to be disabled", async () => {
      const e = await store.getEndpoint("down");
      return e && !e.enabled ? e : undefined;
    });
    expect(disabled.disabledReason).toMatch(/^every attempt failed for 1m/);
    // One failure of an endpoint with no run before is no run of a minute.
    expect((await store.getEndpoint("fresh"))?.enabled).toBe(true);
    const runs = await store.listCircuits();
    expect(runs.find((c) => c.endpoint === "fresh")?.failingSince).toBeGreaterThan(since);
    // Disabled: that run is over.
    await until(
      "down's run to end",
      async () => (await store.listCircuits()).find((c) => c.endpoint === "down")?.failingSince === 0,
    );
  });

  it("disables nothing for a run of failures that ended elsewhere (a success on another replica)", async () => {
    const down = await receiver((_req, res) => res.writeHead(500).end());
    await endpoint("down", down.url);
    const windowMs = 300;
    const config = testConfig({ retry: { maxAttempts: 1 }, delivery: { autoDisableAfterMs: windowMs } });
    const s = new DeliveryScheduler({ store, config, logger: logger(), pool, stopTimeoutMs: 1_000 });
    schedulers.push(s);
    s.start();
    const runInStore = async () => (await store.listCircuits()).find((c) => c.endpoint === "down")?.failingSince ?? 0;
    const [first] = await ingest("down");
    s.notify(["down"]);
    await statusOf(first!.id, "down", "dead_lettered");
    const since = await until("the run to be recorded", async () => (await runInStore()) || undefined);
    // Another process delivered to "down" meanwhile: it ended the run in the store.
    await store.endFailingRun("down");
    await until("the window to pass", () => Date.now() > since + windowMs + 50);
    const [second] = await ingest("down");
    s.notify(["down"]);
    await statusOf(second!.id, "down", "dead_lettered");
    await until("the refusal to be logged", () => logLines.some((l) => l.includes("ended elsewhere")));
    expect((await store.getEndpoint("down"))?.enabled).toBe(true);
    // What follows is a new run, which disables once it has lasted the window.
    const [third] = await ingest("down");
    s.notify(["down"]);
    await statusOf(third!.id, "down", "dead_lettered");
    const restarted = await until("a new run", async () => {
      const at = await runInStore();
      return at > since ? at : undefined;
    });
    await until("the window to pass again", () => Date.now() > restarted + windowMs + 50);
    const [fourth] = await ingest("down");
    s.notify(["down"]);
    await statusOf(fourth!.id, "down", "dead_lettered");
    const disabled = await until("down to be disabled", async () => {
      const e = await store.getEndpoint("down");
      return e && !e.enabled ? e : undefined;
    });
    expect(disabled.disabledReason).toMatch(/^every attempt failed for/);
  });

  it("never exceeds concurrent_deliveries in total, nor the per-endpoint cap", async () => {
    const slowOk = (_req: unknown, res: import("node:http").ServerResponse) => {
      setTimeout(() => res.writeHead(200).end(), 40);
    };
    const a = await receiver(slowOk);
    const b = await receiver(slowOk);
    const c = await receiver(slowOk);
    await endpoint("a", a.url);
    await endpoint("b", b.url);
    await endpoint("c", c.url);
    const events = [...(await ingest("a", 12)), ...(await ingest("b", 12)), ...(await ingest("c", 12))];
    scheduler(testConfig({ delivery: { concurrentDeliveries: 5, perEndpointConcurrency: 2 } }));
    await until("all delivered", async () => (await store.countPending()) === 0);
    for (const e of events.slice(0, 3)) expect((await deliveriesOf(e.id))[0]?.status).toBe("delivered");
    for (const r of [a, b, c]) {
      expect(r.requests).toHaveLength(12);
      expect(r.maxInFlight).toBeLessThanOrEqual(2);
    }
    // Measured across receivers by overlapping request windows would be racy; the sum of
    // per-endpoint maxima bounds it only loosely, so check the total directly on one endpoint.
    const single = await receiver(slowOk);
    await endpoint("single", single.url);
    await ingest("single", 20);
    schedulers[0]!.updateConfig(testConfig({ delivery: { concurrentDeliveries: 3, perEndpointConcurrency: 8 } }));
    await until("single delivered", () => single.requests.length === 20 && single.inFlight === 0);
    expect(single.maxInFlight).toBeLessThanOrEqual(3);
    expect(single.maxInFlight).toBeGreaterThanOrEqual(2);
  });

  it("opens an endpoint's circuit after consecutive failures and stops sending to it", async () => {
    const failing = await receiver((_req, res) => res.writeHead(503).end());
    const healthy = await receiver((_req, res) => res.writeHead(200).end());
    await endpoint("flaky", failing.url);
    await endpoint("fine", healthy.url);
    const flaky = await ingest("flaky", 4);
    const s = scheduler(
      testConfig({
        retry: { maxAttempts: 10 },
        delivery: { perEndpointConcurrency: 1, circuitBreakerThreshold: 3, circuitBreakerCooldownMs: 60_000 },
      }),
    );
    await until("circuit open", () => s.isCircuitOpen("flaky"));
    expect(s.metrics().openCircuits).toContain("flaky");
    expect(failing.requests).toHaveLength(3);
    // Once every flaky delivery is due again, claims that pick up a healthy endpoint's newer
    // deliveries prove the open circuit's older due deliveries were skipped, not sent.
    await until("flaky deliveries due", async () => {
      const records = await Promise.all(flaky.map(async (e) => (await deliveriesOf(e.id))[0]!));
      return records.every((d) => d.nextAttemptAt <= Date.now());
    });
    for (let round = 0; round < 3; round++) {
      const [e] = await ingest("fine");
      s.notify();
      await statusOf(e!.id, "fine", "delivered");
    }
    expect(failing.requests).toHaveLength(3);
    for (const e of flaky) expect((await deliveriesOf(e.id))[0]?.status).toBe("pending");
    expect(s.isCircuitOpen("fine")).toBe(false);
  });

  it("sends one trial after the cooldown and closes the circuit when it succeeds", async () => {
    const r = await receiver((_req, res, i) => res.writeHead(i < 2 ? 503 : 200).end());
    await endpoint("flaky", r.url);
    const events = await ingest("flaky", 3);
    const s = scheduler(
      testConfig({
        retry: { maxAttempts: 10, initialDelayMs: 10, maxDelayMs: 20 },
        delivery: { perEndpointConcurrency: 1, circuitBreakerThreshold: 2, circuitBreakerCooldownMs: 400 },
      }),
    );
    await until("circuit open", () => s.isCircuitOpen("flaky"));
    const openedAt = Date.now();
    for (const e of events) await statusOf(e.id, "flaky", "delivered");
    expect(s.isCircuitOpen("flaky")).toBe(false);
    // The third request was the half-open trial, sent only after the cooldown.
    expect(r.requests).toHaveLength(5);
    expect(r.requests[2]!.at - openedAt).toBeGreaterThanOrEqual(300);
  });

  it("logs an open circuit once, not again each time a failed trial re-opens it", async () => {
    const r = await receiver((_req, res) => res.writeHead(503).end());
    await endpoint("down", r.url);
    await ingest("down", 3);
    const s = scheduler(
      testConfig({
        retry: { maxAttempts: 20, initialDelayMs: 10, maxDelayMs: 20 },
        delivery: { perEndpointConcurrency: 1, circuitBreakerThreshold: 2, circuitBreakerCooldownMs: 150 },
      }),
    );
    // 2 failures open it; each later request is a half-open trial that fails and re-opens it.
    await until("three failed trials", () => r.requests.length >= 5);
    expect(s.isCircuitOpen("down")).toBe(true);
    const opened = logLines.join("").match(/endpoint circuit opened after consecutive failures/g) ?? [];
    expect(opened).toHaveLength(1);
  });

  it("fails deliveries over to backup while the primary's circuit is open", async () => {
    const primary = await receiver((_req, res) => res.writeHead(503).end());
    const backup = await receiver((_req, res) => res.writeHead(200).end());
    await endpoint("primary", primary.url, "backup");
    await endpoint("backup", backup.url, "", BACKUP_SECRET);
    const events = await ingest("primary", 5);
    const s = scheduler(
      testConfig({
        retry: { maxAttempts: 10 },
        delivery: { perEndpointConcurrency: 1, circuitBreakerThreshold: 2, circuitBreakerCooldownMs: 60_000 },
      }),
    );
    for (const e of events) await statusOf(e.id, "backup", "delivered");
    expect(s.isCircuitOpen("primary")).toBe(true);
    expect(primary.requests.length).toBe(2);
    const deadLettered = await Promise.all(
      events.map(async (e) => (await deliveriesOf(e.id)).find((d) => d.endpoint === "primary")!),
    );
    expect(deadLettered.every((d) => d.status === "dead_lettered")).toBe(true);
    expect(deadLettered.filter((d) => d.lastError === "circuit open").length).toBeGreaterThanOrEqual(4);
    expect(new Set(backup.requests.map((q) => q.headers["webhook-id"]))).toEqual(new Set(events.map((e) => e.id)));
  });

  it("resumes pending work in a new scheduler on the same database after stop()", async () => {
    const r = await receiver((_req, res) => {
      setTimeout(() => res.writeHead(200).end(), 30);
    });
    await endpoint("primary", r.url);
    const events = await ingest("primary", 30);
    const first = new DeliveryScheduler({
      store,
      config: testConfig({ delivery: { concurrentDeliveries: 1, perEndpointConcurrency: 1 } }),
      logger: logger(),
    });
    first.start(); // with a pool of its own, closed by stop()
    await until("a few deliveries", () => r.requests.length >= 3);
    await first.stop();
    const deliveredBefore = r.requests.length;
    expect(deliveredBefore).toBeLessThan(30);
    expect(await store.countPending()).toBe(30 - deliveredBefore);

    // A restart: the database closed and reopened, a new scheduler with its own lease owner.
    await store.close();
    store = await openLocation(location);
    scheduler(testConfig());
    await until("all delivered after restart", async () => (await store.countPending()) === 0);
    expect(new Set(r.requests.map((q) => q.headers["webhook-id"]))).toEqual(new Set(events.map((e) => e.id)));
    expect(r.requests).toHaveLength(30);
  });

  it("refuses a private destination without retrying, saying how to allow it", async () => {
    const r = await receiver((_req, res) => res.writeHead(200).end());
    await endpoint("primary", r.url.replace("127.0.0.1", "localhost"));
    const [event] = await ingest("primary");
    const config = testConfig();
    config.security.allowedNetworks = [];
    scheduler(config);
    const failed = await statusOf(event!.id, "primary", "failed");
    expect(failed.attemptCount).toBe(1);
    expect(failed.lastError).toBe(
      "AIGW_DESTINATION_REFUSED: destination localhost is a loopback name; allow it with security.allowed_networks (127.0.0.0/8)",
    );
    expect(r.requests).toHaveLength(0);
  });
});
