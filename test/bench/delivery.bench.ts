// Delivery throughput: pre-ingested events in a real SQLite store, delivered by the
// DeliveryScheduler through the piscina pool (signing, undici keep-alive) to a local
// receiver on 127.0.0.1:0 that answers 200, against raw undici POSTs to the same receiver
// at the same concurrency in the same run. Bounded in count and time; stops by itself.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import { Agent } from "undici";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { USER_AGENT } from "../../common/version.js";
import { webhookBody } from "../../common/webhook-body.js";
import { defaultConfig } from "../../control-plane/config/defaults.js";
import { createDeliveryPool } from "../../control-plane/delivery/pool.js";
import { DeliveryScheduler } from "../../control-plane/delivery/scheduler.js";
import { sign } from "../../control-plane/delivery/signing.js";
import { openSqliteStore } from "../../control-plane/store/sqlite.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import type { BenchRow } from "./types.js";

const EVENTS = Number(process.env.AIGW_BENCH_DELIVERIES ?? 10_000);
const CONCURRENCY = 64;
const TIME_LIMIT_MS = 120_000;
const SECRET = `whsec_${Buffer.from("bench-delivery-secret-0123456789").toString("base64")}`;

function completion(): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_bench",
    app: "bench",
    provider: "openai",
    time: timestampNow(),
    payload: {
      case: "completion",
      value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 150, promptTokens: 100, completionTokens: 50, costUsd: 0.0045, latencyMs: 420 },
    },
  });
}

interface Receiver {
  url: string;
  count: number;
  sample: { body: string; headers: Record<string, string> } | undefined;
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const state = { count: 0, sample: undefined as Receiver["sample"] };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      state.count++;
      if (state.sample === undefined && req.headers["webhook-signature"]) {
        state.sample = { body: Buffer.concat(chunks).toString("utf8"), headers: req.headers as Record<string, string> };
      }
      res.writeHead(200, { "content-length": "0" }).end();
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    get count() {
      return state.count;
    },
    get sample() {
      return state.sample;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function until(what: string, probe: () => Promise<boolean> | boolean, deadline: number): Promise<void> {
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`delivery bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Raw undici POSTs of the same signed body to the same receiver, same concurrency. */
async function baselinePostsPerSecond(url: string, count: number): Promise<number> {
  const agent = new Agent({ keepAliveTimeout: 10_000 });
  const body = JSON.stringify(webhookBody(completion()));
  const target = new URL(url);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const ts = Math.floor(Date.now() / 1000);
      const signature = sign([SECRET], "evt_baseline", ts, body);
      const res = await agent.request({
        origin: target.origin,
        path: target.pathname,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": USER_AGENT,
          "webhook-id": "evt_baseline",
          "webhook-timestamp": String(ts),
          "webhook-signature": signature,
        },
        body,
      });
      await res.body.dump();
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  await agent.close();
  return count / seconds;
}

export async function benchDelivery(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-delivery-"));
  const receiver = await startReceiver();
  const store = await openSqliteStore(join(dir, "aigw.db"));
  const pool = createDeliveryPool({ maxThreads: 2, concurrentTasksPerWorker: CONCURRENCY });
  const deadline = Date.now() + TIME_LIMIT_MS;
  let scheduler: DeliveryScheduler | undefined;
  try {
    await store.upsertEndpoint({ name: "bench", url: receiver.url, enabled: true, eventTypes: [], failoverTo: "" }, SECRET);
    for (let done = 0; done < EVENTS; done += 1000) {
      await store.ingest(Array.from({ length: Math.min(1000, EVENTS - done) }, completion), () => ["bench"]);
    }

    // Warm the worker threads (tsx loading, first connections) outside the timed window.
    const warmBody = JSON.stringify({ event: "completion", id: "evt_warm" });
    await Promise.all(
      Array.from({ length: 8 }, () =>
        pool.run({
          deliveryId: "dlv_warm",
          url: receiver.url,
          body: warmBody,
          webhookId: "evt_warm",
          secrets: [SECRET],
          signatureHeader: "X-Webhook-Signature",
          timeoutMs: 10_000,
          requireHttps: false,
          allowedNetworks: ["127.0.0.0/8"],
          userAgent: USER_AGENT,
        }),
      ),
    );
    const warmCount = receiver.count;

    const config = defaultConfig();
    config.security = { ...config.security, requireHttps: false, allowedNetworks: ["127.0.0.0/8"] };
    config.delivery = {
      ...config.delivery,
      concurrentDeliveries: CONCURRENCY,
      perEndpointConcurrency: CONCURRENCY,
      timeoutMs: 10_000,
    };
    scheduler = new DeliveryScheduler({ store, config, pool, logger: createLogger({ level: "warn", name: "bench" }) });
    const started = performance.now();
    scheduler.start();
    await until("every delivery to finish", async () => (await store.countPending()) === 0, deadline);
    const aigwSeconds = (performance.now() - started) / 1000;
    const delivered = receiver.count - warmCount;
    if (delivered !== EVENTS) throw new Error(`delivery bench: receiver got ${delivered} of ${EVENTS} deliveries`);
    const sample = receiver.sample;
    if (!sample) throw new Error("delivery bench: no delivery reached the receiver");
    new Webhook(SECRET).verify(sample.body, sample.headers); // throws if what we measured was not properly signed
    const metrics = scheduler.metrics();
    await scheduler.stop();
    scheduler = undefined;

    const aigwRate = EVENTS / aigwSeconds;
    const baselineRate = await baselinePostsPerSecond(receiver.url, EVENTS);
    const p50 = latencyQuantile(metrics, 0.5);
    return [
      {
        name: `signed webhook deliveries (SQLite → scheduler → piscina → receiver, N=${EVENTS}, c=${CONCURRENCY})`,
        value: aigwRate,
        unit: "deliveries/s",
        baseline: `raw undici POST to the same receiver, c=${CONCURRENCY}`,
        baselineValue: baselineRate,
        ratio: aigwRate / baselineRate,
        target: "≥ 5,000/s",
      },
      {
        name: "delivery attempt latency p50 (bucket bound)",
        value: p50,
        unit: "ms",
      },
    ];
  } finally {
    await scheduler?.stop();
    await pool.close();
    await store.close();
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function latencyQuantile(metrics: ReturnType<DeliveryScheduler["metrics"]>, q: number): number {
  const { bucketsMs, counts, count } = metrics.latency;
  const target = count * q;
  for (let i = 0; i < bucketsMs.length; i++) if ((counts[i] ?? 0) >= target) return bucketsMs[i] ?? Number.POSITIVE_INFINITY;
  return Number.POSITIVE_INFINITY;
}
