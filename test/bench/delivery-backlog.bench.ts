// What a backlog costs the delivery core, in-process against a real SQLite store:
// - the drain rate of a 100k backlog on one endpoint vs the same endpoint with a queue of
//   10k (same config, same receiver process), and
// - the time of one lane's claim with 1M pending rows vs 1k.
// A design whose cost grows with what is waiting shows here as a ratio well away from 1.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { defaultConfig } from "../../control-plane/config/defaults.js";
import { createDeliveryPool } from "../../control-plane/delivery/pool.js";
import { DeliveryScheduler } from "../../control-plane/delivery/scheduler.js";
import { openSqliteStore, type SqliteStore } from "../../control-plane/store/sqlite/store.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { node, port, quantile, RECEIVER_SOURCE } from "./bench-processes.js";
import type { BenchRow } from "./types.js";

const SECRET = `whsec_${Buffer.from("bench-backlog-secret-0123456789a").toString("base64")}`;
const BIG = Number(process.env.AIGW_BENCH_BACKLOG ?? 100_000);
const SMALL = 10_000;

function completion(): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_bench",
    app: "bench",
    provider: "openai",
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 18 } },
  });
}

async function fill(store: SqliteStore, events: number, endpoints: string[]): Promise<void> {
  for (let done = 0; done < events; done += 10_000) {
    await store.ingest(Array.from({ length: Math.min(10_000, events - done) }, completion), () => endpoints);
  }
}

/** Deliveries per second draining `backlog` rows for one endpoint at concurrency 64. */
async function drainRate(receiverUrl: string, backlog: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-drain-"));
  const store = await openSqliteStore(join(dir, "aigw.db"));
  const pool = createDeliveryPool({ concurrentTasksPerWorker: 64 });
  let scheduler: DeliveryScheduler | undefined;
  try {
    await store.upsertEndpoint({ name: "e", url: receiverUrl, enabled: true, eventTypes: [], failoverTo: "" }, SECRET);
    await fill(store, backlog, ["e"]);
    const config = defaultConfig();
    config.security = { ...config.security, requireHttps: false, allowedNetworks: ["127.0.0.0/8"] };
    config.delivery = { ...config.delivery, concurrentDeliveries: 64, perEndpointConcurrency: 64, timeoutMs: 10_000 };
    scheduler = new DeliveryScheduler({ store, config, pool, logger: createLogger({ level: "warn", name: "bench" }) });
    const started = performance.now();
    scheduler.start();
    const deadline = Date.now() + 600_000;
    while ((await store.countPending()) > 0) {
      if (Date.now() > deadline) throw new Error("bench: backlog did not drain within 10 minutes");
      await new Promise((r) => setTimeout(r, 20));
    }
    return backlog / ((performance.now() - started) / 1000);
  } finally {
    await scheduler?.stop();
    await pool.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Median time (ms) of one lane's claim of 32 rows, with `events` × 10 endpoints pending. */
async function claimTime(events: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-claim-"));
  const store = await openSqliteStore(join(dir, "aigw.db"));
  try {
    const endpoints = Array.from({ length: 10 }, (_, i) => `e${i}`);
    await fill(store, events, endpoints);
    const times: number[] = [];
    for (let i = 0; i < 400; i++) {
      const now = Date.now();
      const started = performance.now();
      await store.claim({ now, leaseOwner: "bench", leaseMs: 60_000, lanes: [{ endpoint: `e${i % 10}`, limit: 32 }] });
      times.push(performance.now() - started);
      await store.releaseLeases("bench");
    }
    return quantile(times.slice(100), 0.5);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchDeliveryBacklog(): Promise<BenchRow[]> {
  const receiver = node(RECEIVER_SOURCE);
  try {
    const url = `http://127.0.0.1:${await port(receiver)}/hooks`;
    await drainRate(url, 2_000); // warm-up: workers, JIT, connections
    const small = await drainRate(url, SMALL);
    const big = await drainRate(url, BIG);
    const claimSmall = await claimTime(100);
    const claimBig = await claimTime(100_000);
    return [
      {
        name: `drain rate of a ${BIG / 1000}k backlog on one endpoint (concurrency 64, in-process store + pool)`,
        value: big,
        unit: "deliveries/s",
        baseline: `the same endpoint and config with a ${SMALL / 1000}k queue`,
        baselineValue: small,
        ratio: big / small,
        target: "≥ 0.9 ×",
      },
      {
        name: "one lane's claim of 32 deliveries with 1M pending rows (10 endpoints), median",
        value: claimBig,
        unit: "ms",
        baseline: "the same with 1k pending rows",
        baselineValue: claimSmall,
        ratio: claimBig / claimSmall,
        target: "≤ 1.5 ×",
      },
    ];
  } finally {
    await receiver.stop();
  }
}
