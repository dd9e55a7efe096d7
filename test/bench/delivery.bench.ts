// Delivery throughput: pre-ingested events in a real SQLite store, delivered by the
// DeliveryScheduler through the piscina pool (signing, undici keep-alive) to a local
// receiver on 127.0.0.1:0 that answers 200, against raw undici POSTs to the same receiver
// at the same concurrency in the same run. Bounded in count and time; stops by itself.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import { Agent, request } from "undici";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { USER_AGENT } from "../../common/version.js";
import { webhookBody } from "../../common/webhook-body.js";
import { defaultConfig } from "../../control-plane/config/defaults.js";
import { createDeliveryPool } from "../../control-plane/delivery/pool.js";
import { DeliveryScheduler } from "../../control-plane/delivery/scheduler.js";
import { sign } from "../../common/signature.js";
import { openSqliteStore } from "../../control-plane/store/sqlite/store.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import type { BenchRow } from "./types.js";

// 30k: at 10k, worker start-up, JIT warm-up and connection setup are a third of the run.
const EVENTS = Number(process.env.AIGW_BENCH_DELIVERIES ?? 30_000);
const CONCURRENCY = Number(process.env.AIGW_BENCH_CONCURRENCY ?? 64);
const THREADS = process.env.AIGW_BENCH_THREADS ? Number(process.env.AIGW_BENCH_THREADS) : undefined;
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
      value: {
        requestId: newRequestId(),
        model: "gpt-4",
        tokensUsed: 150,
        promptTokens: 100,
        completionTokens: 50,
        costUsd: 0.0045,
        latencyMs: 420,
      },
    },
  });
}

interface Receiver {
  url: string;
  /** Requests answered so far (asked of the receiver process). */
  count(): Promise<number>;
  /** The first signed request it saw, to verify that what was measured was signed. */
  sample(): Promise<{ body: string; headers: Record<string, string> } | undefined>;
  close(): Promise<void>;
}

// The receiver runs in its own process, as a real one would: its HTTP parsing must not
// share the control plane's main thread (nor the baseline client's).
const RECEIVER_SOURCE = `
const http = require("node:http");
let count = 0;
let sample;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (req.method === "GET") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ count, sample }));
      return;
    }
    count++;
    if (sample === undefined && req.headers["webhook-signature"]) {
      sample = { body: Buffer.concat(chunks).toString("utf8"), headers: req.headers };
    }
    res.writeHead(200, { "content-length": "0" }).end();
  });
});
server.keepAliveTimeout = 30000;
server.listen(0, "127.0.0.1", () => process.stdout.write(server.address().port + "\\n"));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
`;

async function startReceiver(): Promise<Receiver> {
  const child = spawn(process.execPath, ["-e", RECEIVER_SOURCE], { stdio: ["pipe", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8");
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) resolve(Number(line));
    });
    child.once("exit", (code) => reject(new Error(`delivery bench: receiver exited with ${code}`)));
  });
  const base = `http://127.0.0.1:${port}`;
  const status = async () => {
    const res = await request(`${base}/status`);
    return (await res.body.json()) as { count: number; sample?: { body: string; headers: Record<string, string> } };
  };
  return {
    url: `${base}/hook`,
    count: async () => (await status()).count,
    sample: async () => (await status()).sample,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin.end();
      await exited;
    },
  };
}

async function until(what: string, probe: () => Promise<boolean>, deadline: number, everyMs: number): Promise<void> {
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`delivery bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Raw undici POSTs of the same signed body to the same receiver, same concurrency. */
async function baselinePosts(url: string, count: number): Promise<{ perSecond: number; cpuMicros: number }> {
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
  const cpuBefore = process.cpuUsage();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const cpu = process.cpuUsage(cpuBefore);
  const seconds = (performance.now() - started) / 1000;
  await agent.close();
  return { perSecond: count / seconds, cpuMicros: (cpu.user + cpu.system) / count };
}

export async function benchDelivery(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-delivery-"));
  const receiver = await startReceiver();
  const store = await openSqliteStore(join(dir, "aigw.db"));
  const pool = createDeliveryPool({
    ...(THREADS ? { maxThreads: THREADS } : {}),
    concurrentTasksPerWorker: CONCURRENCY,
  });
  const deadline = Date.now() + TIME_LIMIT_MS;
  let scheduler: DeliveryScheduler | undefined;
  try {
    await store.upsertEndpoint(
      { name: "bench", url: receiver.url, enabled: true, eventTypes: [], failoverTo: "" },
      SECRET,
    );
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
    const warmCount = await receiver.count();

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
    const cpuBefore = process.cpuUsage();
    const mainCpuBefore = mainThreadCpuMicros();
    const eluBefore = performance.eventLoopUtilization();
    scheduler.start();
    await until("every delivery to finish", async () => (await store.countPending()) === 0, deadline, 50);
    const aigwSeconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    const mainCpuAfter = mainThreadCpuMicros();
    const mainCpu =
      mainCpuBefore !== undefined && mainCpuAfter !== undefined ? mainCpuAfter - mainCpuBefore : undefined;
    const mainThreadBusy = performance.eventLoopUtilization(eluBefore).utilization;
    const delivered = (await receiver.count()) - warmCount;
    if (delivered !== EVENTS) throw new Error(`delivery bench: receiver got ${delivered} of ${EVENTS} deliveries`);
    const sample = await receiver.sample();
    if (!sample) throw new Error("delivery bench: no delivery reached the receiver");
    new Webhook(SECRET).verify(sample.body, sample.headers); // throws if what we measured was not properly signed
    const metrics = scheduler.metrics();
    await scheduler.stop();
    scheduler = undefined;

    const aigwRate = EVENTS / aigwSeconds;
    const baseline = await baselinePosts(receiver.url, EVENTS);
    const baselineRate = baseline.perSecond;
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
        // Robust on a shared machine, where wall-clock rates swing with other load.
        name: "control-plane CPU per delivery (main thread + workers, user+system)",
        value: (cpu.user + cpu.system) / EVENTS,
        unit: "µs",
        baseline: "raw undici POST (client CPU per request)",
        baselineValue: baseline.cpuMicros,
        ratio: (cpu.user + cpu.system) / EVENTS / baseline.cpuMicros,
      },
      ...(mainCpu !== undefined
        ? [{ name: "of which the main thread (store, scheduler)", value: mainCpu / EVENTS, unit: "µs" }]
        : []),
      {
        name: "main thread busy share during delivery (event-loop utilization)",
        value: mainThreadBusy,
        unit: "share",
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

/** This thread's CPU time (Linux /proc; undefined elsewhere): process.cpuUsage() counts every thread. */
function mainThreadCpuMicros(): number | undefined {
  try {
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    const stat = readFileSync("/proc/thread-self/stat", "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? (ticks * 1_000_000) / CLOCK_TICKS_PER_SECOND : undefined;
  } catch {
    return undefined;
  }
}

/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS_PER_SECOND = 100;

function latencyQuantile(metrics: ReturnType<DeliveryScheduler["metrics"]>, q: number): number {
  const { bucketsMs, counts, count } = metrics.latency;
  const target = count * q;
  for (let i = 0; i < bucketsMs.length; i++)
    if ((counts[i] ?? 0) >= target) return bucketsMs[i] ?? Number.POSITIVE_INFINITY;
  return Number.POSITIVE_INFINITY;
}
