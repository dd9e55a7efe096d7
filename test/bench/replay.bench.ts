// Replay by window, in-process against a real SQLite store with the scheduler delivering the
// replays as they are queued (to a receiver in its own process): how fast a window of 100k
// dead letters is queued again, and what it does to the control plane's event loop, against
// the same event loop while the same number of deliveries drains with no replay running.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createLogger } from "../../common/logger.js";
import { LoopDelayMonitor } from "../../common/loop-delay.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { runControlPlane } from "../../control-plane/run.js";
import { openStore } from "../../control-plane/store/open.js";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { makeDeadLetters } from "../support/dead-letters.js";
import { node, port, RECEIVER_SOURCE } from "./bench-processes.js";
import type { BenchRow } from "./types.js";

const COUNT = Number(process.env.AIGW_BENCH_REPLAY ?? 100_000);
const SECRET = `whsec_${Buffer.from("bench-replay-secret-0123456789ab").toString("base64")}`;

interface Run {
  rowsPerSecond: number;
  p99Ms: number;
  maxMs: number;
}

/** Replays COUNT dead letters in one call (or, `replay` false, drains COUNT fresh deliveries). */
async function run(receiverUrl: string, replay: boolean): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-replay-"));
  const url = `sqlite:${join(dir, "aigw.db")}`;
  try {
    const seed = await openStore(url, {});
    await seed.upsertEndpoint({ name: "e", url: receiverUrl, enabled: true, eventTypes: [], failoverTo: "" }, SECRET);
    await makeDeadLetters(seed, "e", COUNT);
    await seed.close();
    const cp = await runControlPlane({
      config: parseConfig(
        `webhooks:\n  e:\n    url: "${receiverUrl}"\n    secret: "${SECRET}"\n` +
          `security:\n  require_https: false\n  allowed_networks: ["127.0.0.0/8"]\n` +
          "delivery:\n  concurrent_deliveries: 64\n  per_endpoint_concurrency: 64\n",
        { file: "bench.yaml", env: {} },
      ),
      store: url,
      grpc: "127.0.0.1:0",
      http: "127.0.0.1:0",
      logger: createLogger({ level: "warn", name: "bench" }),
    });
    try {
      const admin = createClient(AdminService, createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1" }));
      const delay = new LoopDelayMonitor(10);
      delay.enable();
      const started = performance.now();
      if (replay) {
        const res = await admin.replayDeliveries({ since: timestampFromMs(Date.now() - 3_600_000) });
        if (res.replayed !== COUNT) throw new Error(`bench: replayed ${res.replayed} of ${COUNT}`);
      } else {
        // The baseline: the same number of deliveries made pending at once (by the store, unmeasured), drained.
        await cp.store.replayDeadLettered("e");
      }
      const queuedMs = performance.now() - started;
      const deadline = Date.now() + 900_000;
      while ((await cp.store.countPending()) > 0) {
        if (Date.now() > deadline) throw new Error("bench: the replays did not drain within 15 minutes");
        await new Promise((r) => setTimeout(r, 20));
      }
      const { p99, max } = delay.read();
      delay.disable();
      return { rowsPerSecond: COUNT / (queuedMs / 1000), p99Ms: p99, maxMs: max };
    } finally {
      await cp.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchReplay(): Promise<BenchRow[]> {
  const receiver = node(RECEIVER_SOURCE);
  try {
    const url = `http://127.0.0.1:${await port(receiver)}/hooks`;
    const baseline = await run(url, false);
    const replay = await run(url, true);
    const k = `${COUNT / 1000}k`;
    return [
      {
        name: `replay of a window of ${k} dead letters (one call, steps of 250), SQLite`,
        value: replay.rowsPerSecond,
        unit: "deliveries queued/s",
      },
      {
        name: `event loop delay p99 while replaying ${k} and delivering them`,
        value: replay.p99Ms,
        unit: "ms",
        baseline: `the same ${k} deliveries draining, queued by the store at once`,
        baselineValue: baseline.p99Ms,
        ratio: replay.p99Ms / baseline.p99Ms,
        target: "≤ 1.5 ×",
      },
      {
        name: `event loop delay max while replaying ${k} and delivering them`,
        value: replay.maxMs,
        unit: "ms",
        baseline: "the same, draining only",
        baselineValue: baseline.maxMs,
        ratio: replay.maxMs / baseline.maxMs,
      },
    ];
  } finally {
    await receiver.stop();
  }
}
