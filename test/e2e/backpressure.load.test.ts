import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// delivery.queue_size with real processes (control plane, sidecar) and a receiver that is
// down: a burst of app calls far bigger than the bound. The app's calls all succeed at their
// usual speed, the pending count stops near the bound, ingest pauses (metric, log line with
// its code), the sidecar's spool holds the rest on disk, and when the receiver is back every
// event is delivered exactly once per endpoint (by webhook-id), nothing lost.

const QUEUE_SIZE = 200;
const WARM_UP_CALLS = 20;
const BASELINE_CALLS = 60;
const BURST_CALLS = 1_200;
const CONCURRENCY = 8;
const TOTAL_CALLS = WARM_UP_CALLS + BASELINE_CALLS + BURST_CALLS;

function spoolBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) if (name.startsWith("segment-")) total += statSync(join(dir, name)).size;
  return total;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] ?? 0;
}

describe("delivery.queue_size: backpressure with a dead receiver (real processes)", () => {
  let dir: string;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let cp: AigwProcess | undefined;
  let sidecar: AigwProcess | undefined;
  let dead = true;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-backpressure-"));
    receiver = await startTestReceiver({ secret: TEST_SECRET, script: () => (dead ? 503 : 200) });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
  });

  afterAll(async () => {
    for (const p of [sidecar, cp]) {
      p?.child.kill("SIGKILL");
      await p?.exited;
    }
    await provider?.close();
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("pauses ingest at the bound, keeps the app fast, spools the rest, and delivers everything once", async () => {
    const configPath = join(dir, "config.yaml");
    writeFileSync(
      configPath,
      testConfigYaml({
        primaryUrl: receiver.url,
        // Retries go on for longer than the outage: nothing is dead-lettered meanwhile.
        maxAttempts: 100,
        initialDelayMs: 100,
        extra: `  queue_size: ${QUEUE_SIZE}\n  circuit_breaker_cooldown_ms: 500\n`,
      }).replace(
        'subscribe: ["completion", "error", "streaming", "budget", "rate_limit"]',
        'subscribe: ["completion"]',
      ),
    );
    cp = runAigw([
      "control-plane",
      "--config",
      configPath,
      "--store",
      `sqlite:${join(dir, "cp.db")}`,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    const ready = await cp.waitForLog("control plane ready");
    const httpUrl = String(ready.http);
    const spoolDir = join(dir, "spool");
    sidecar = runAigw([
      "sidecar",
      "--control-plane",
      String(ready.grpc),
      "--listen",
      "127.0.0.1:0",
      "--admin-listen",
      "127.0.0.1:0",
      "--upstream",
      provider.url,
      "--org",
      "org_bp",
      "--app",
      "bp",
      "--spool",
      spoolDir,
    ]);
    const sidecarUrl = String((await sidecar.waitForLog("sidecar ready")).url);

    const metrics = async (): Promise<Record<string, number>> => {
      const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
      const out: Record<string, number> = {};
      for (const m of text.matchAll(/^(aigw_[a-z_]+) (\S+)$/gm)) out[m[1] as string] = Number(m[2]);
      return out;
    };
    // The pending count, the pause and the spool, sampled through the whole run.
    let maxPending = 0;
    let sawPaused = false;
    let maxSpool = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const m = await metrics().catch(() => ({}) as Record<string, number>);
        maxPending = Math.max(maxPending, m.aigw_deliveries_pending ?? 0);
        if (m.aigw_ingest_paused === 1) {
          sawPaused = true;
          maxSpool = Math.max(maxSpool, spoolBytes(spoolDir));
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const requestIds: string[] = [];
    const failures: string[] = [];
    const calls = async (count: number): Promise<number[]> => {
      const latencies: number[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < count) {
            next++;
            const started = performance.now();
            const res = await fetch(`${sidecarUrl}/v1/chat/completions`, {
              method: "POST",
              headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
              body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
            });
            await res.json();
            latencies.push(performance.now() - started);
            if (res.status !== 200) failures.push(`status ${res.status}`);
            requestIds.push(res.headers.get("x-aigw-request-id") as string);
          }
        }),
      );
      return latencies;
    };

    // Before the bound: the app's usual speed (the receiver is already down), after a warm-up.
    await calls(WARM_UP_CALLS);
    const baseline = await calls(BASELINE_CALLS);
    const burst = await calls(BURST_CALLS);
    expect(failures).toEqual([]);
    await waitFor("ingest paused at the bound", () => sawPaused, 30_000);
    await cp.waitForLog(
      "ingest paused: delivery.queue_size deliveries are pending; sidecars keep their events in their spools until the queue drains",
    );
    const pausedLine = cp.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.code === "AIGW_INGEST_PAUSED");
    expect(pausedLine).toMatchObject({ level: 40, queueSize: QUEUE_SIZE, resumeBelow: 180 });
    await sidecar.waitForLog(
      "uplink: control plane paused ingest (its delivery queue is full); events wait in the spool",
    );
    // Paused for a while: the count stays near the bound, the rest waits in the spool on disk.
    await new Promise((r) => setTimeout(r, 1_000));
    const during = await metrics();
    expect(during.aigw_ingest_paused).toBe(1);
    expect(during.aigw_events_ingested_total).toBeLessThan(TOTAL_CALLS);
    expect(maxSpool).toBeGreaterThan(0);

    dead = false;
    const delivered = () => new Set(receiver.accepted().map((r) => String(r.body.request_id)));
    await waitFor("every call's webhook", () => requestIds.every((id) => delivered().has(id)), 120_000);
    sampling = false;
    await sampler;

    // One batch (the sidecar's, ≤ 256 events) admitted before the pause was seen can land past the bound.
    expect(maxPending).toBeGreaterThanOrEqual(QUEUE_SIZE);
    expect(maxPending).toBeLessThanOrEqual(QUEUE_SIZE + 256);
    const perId = new Map<string, number>();
    for (const r of receiver.accepted()) perId.set(r.id, (perId.get(r.id) ?? 0) + 1);
    expect(perId.size).toBe(TOTAL_CALLS);
    expect([...perId.values()].filter((n) => n > 1)).toEqual([]);
    expect(receiver.rejected).toEqual([]);
    await cp.waitForLog("ingest resumed: the delivery queue drained below its low-water mark");
    const after = await metrics();
    expect(after.aigw_ingest_paused).toBe(0);
    expect(after.aigw_ingest_pauses_total).toBeGreaterThanOrEqual(1);
    // The app never waited for the control plane: the burst ran at the speed the app had before the bound.
    const p99 = { baseline: percentile(baseline, 0.99), burst: percentile(burst, 0.99) };
    console.log(
      `app call latency p50/p99 (ms): baseline ${percentile(baseline, 0.5).toFixed(1)}/${p99.baseline.toFixed(1)}, burst ${percentile(burst, 0.5).toFixed(1)}/${p99.burst.toFixed(1)}; max pending ${maxPending}; max spool ${maxSpool} bytes`,
    );
    expect(p99.burst).toBeLessThan(Math.max(5 * p99.baseline, 250));
  });
});
