// The sidecar proxy against direct calls to the same mock provider, in one run and one
// process (client, proxy and mock share the event loop, so the proxy's CPU time shows up in
// full): added latency with sequential requests, throughput at 4 concurrent connections.
import { performance } from "node:perf_hooks";
import { Pool } from "undici";
import { createLogger } from "../../common/logger.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { startProxy } from "../../sidecar/proxy/server.js";
import type { BenchRow } from "./types.js";

const BODY = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello" }] });
const HEADERS = { "content-type": "application/json", authorization: "Bearer sk-bench" };
const WARMUP = 600;
const SAMPLES = 4000;
const LATENCY_BUDGET_MS = 8_000;
const THROUGHPUT_ROUND_MS = 1_500;
const THROUGHPUT_ROUNDS = 2;
const CONCURRENCY = 4;

async function call(pool: Pool): Promise<void> {
  const res = await pool.request({ path: "/v1/chat/completions", method: "POST", headers: HEADERS, body: BODY });
  await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new Error(`bench request failed with ${res.statusCode}`);
}

function percentile(sorted: readonly number[], p: number): number {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? Number.NaN;
}

/** Requests completed by `CONCURRENCY` loops in `ms`. */
async function throughput(pool: Pool, ms: number): Promise<number> {
  let done = 0;
  const until = performance.now() + ms;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < until) {
        await call(pool);
        done++;
      }
    }),
  );
  return (done * 1000) / ms;
}

export async function benchSidecar(): Promise<BenchRow[]> {
  const mock = await startMockProvider({ record: false });
  let events = 0;
  const proxy = await startProxy({
    port: 0,
    upstreams: { openai: mock.url },
    sink: {
      publish() {
        events++;
      },
    },
    orgId: "org_bench",
    app: "bench",
    logger: createLogger({ level: "silent" }),
  });
  const direct = new Pool(mock.url, { connections: CONCURRENCY, pipelining: 1 });
  const through = new Pool(proxy.url, { connections: CONCURRENCY, pipelining: 1 });
  try {
    for (let i = 0; i < WARMUP; i++) {
      await call(direct);
      await call(through);
    }
    await throughput(direct, 300);
    await throughput(through, 300);

    // Alternate so that drift (GC, CPU frequency, other load) hits both sides alike.
    const directMs: number[] = [];
    const throughMs: number[] = [];
    const deadline = performance.now() + LATENCY_BUDGET_MS;
    for (let i = 0; i < SAMPLES && performance.now() < deadline; i++) {
      const first = i % 2 === 0 ? direct : through;
      const second = first === direct ? through : direct;
      for (const pool of [first, second]) {
        const t0 = performance.now();
        await call(pool);
        (pool === direct ? directMs : throughMs).push(performance.now() - t0);
      }
    }
    directMs.sort((a, b) => a - b);
    throughMs.sort((a, b) => a - b);

    let directRate = 0;
    let throughRate = 0;
    for (let round = 0; round < THROUGHPUT_ROUNDS; round++) {
      directRate += await throughput(direct, THROUGHPUT_ROUND_MS);
      throughRate += await throughput(through, THROUGHPUT_ROUND_MS);
    }
    directRate /= THROUGHPUT_ROUNDS;
    throughRate /= THROUGHPUT_ROUNDS;

    const p50d = percentile(directMs, 50);
    const p50t = percentile(throughMs, 50);
    const p99d = percentile(directMs, 99);
    const p99t = percentile(throughMs, 99);
    const baseline = `direct to the mock provider (loopback, keep-alive, ${directMs.length} sequential chat completions)`;
    return [
      {
        name: "sidecar added latency p50",
        value: p50t - p50d,
        unit: "ms",
        baseline: `${baseline}, p50`,
        baselineValue: p50d,
        ratio: p50t / p50d,
        target: "≤ 0.15 ms",
      },
      {
        name: "sidecar added latency p99",
        value: p99t - p99d,
        unit: "ms",
        baseline: `${baseline}, p99`,
        baselineValue: p99d,
        ratio: p99t / p99d,
        target: "≤ 1 ms",
      },
      {
        name: `sidecar throughput, ${CONCURRENCY} connections`,
        value: throughRate,
        unit: "req/s",
        baseline: `direct to the mock provider, ${CONCURRENCY} connections (same process: the proxy's CPU counts in full)`,
        baselineValue: directRate,
        ratio: throughRate / directRate,
      },
      {
        name: "sidecar events published during the run",
        value: events,
        unit: "events",
      },
    ];
  } finally {
    await direct.close();
    await through.close();
    await proxy.close();
    await mock.close();
  }
}
