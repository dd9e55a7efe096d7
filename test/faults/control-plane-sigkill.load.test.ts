import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

// The control plane SIGKILLed at random points, again and again, while an app makes
// thousands of calls through a real sidecar and the control plane delivers to a receiver
// that verifies every webhook and counts webhook-ids: every call's event is delivered at
// least once, no app call fails, and duplicates (attempts in flight at a kill) are counted
// and reported. The seed makes a run repeatable: AIGW_TEST_SEED=… npx vitest run <this file>.

const CALLS = 3_000;
const CALLS_PER_SECOND = 300;
const KILLS = 5;
/** delivery.concurrent_deliveries and per_endpoint_concurrency: at most this many attempts in flight at a kill. */
const IN_FLIGHT_MAX = 32;

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

describe("control plane SIGKILLed at random points under traffic (real processes)", () => {
  let dir: string;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let cp: AigwProcess | undefined;
  let sidecar: AigwProcess | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-sigkill-cp-"));
    receiver = await startTestReceiver({ secret: TEST_SECRET });
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

  it(`delivers every one of ${CALLS} events at least once across ${KILLS} kills`, { timeout: 150_000 }, async () => {
    const seed = Number(process.env.AIGW_TEST_SEED ?? Date.now() % 1_000_000);
    const random = seeded(seed);
    const configPath = join(dir, "config.yaml");
    writeFileSync(
      configPath,
      // Concurrency enough to drain quickly on a busy machine, and a short cooldown: a receiver
      // slowed by the load must not hold the drain for the default 30 s.
      testConfigYaml({
        primaryUrl: receiver.url,
        extra: `  per_endpoint_concurrency: ${IN_FLIGHT_MAX}\n  circuit_breaker_cooldown_ms: 1000\n`,
      })
        .replace("concurrent_deliveries: 10", `concurrent_deliveries: ${IN_FLIGHT_MAX}`)
        .replace(
          'subscribe: ["completion", "error", "streaming", "budget", "rate_limit"]',
          'subscribe: ["completion"]',
        ),
    );
    const startControlPlane = (grpc: string, http: string) =>
      runAigw([
        "control-plane",
        "--config",
        configPath,
        "--store",
        `sqlite:${join(dir, "cp.db")}`,
        "--grpc",
        grpc,
        "--http",
        http,
      ]);
    cp = startControlPlane("127.0.0.1:0", "127.0.0.1:0");
    const ready = await cp.waitForLog("control plane ready");
    const grpcAt = String(ready.grpc).replace("http://", "");
    const httpAt = String(ready.http).replace("http://", "");
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
      "org_kill",
      "--app",
      "kill",
      "--spool",
      join(dir, "spool"),
    ]);
    const sidecarUrl = String((await sidecar.waitForLog("sidecar ready")).url);

    const requestIds: string[] = [];
    const failures: string[] = [];
    let made = 0;
    const started = performance.now();
    const traffic = Promise.all(
      Array.from({ length: 8 }, async () => {
        while (made < CALLS) {
          const n = made++;
          const due = started + (n * 1000) / CALLS_PER_SECOND;
          await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
          try {
            const res = await fetch(`${sidecarUrl}/v1/chat/completions`, {
              method: "POST",
              headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
              body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
            });
            await res.json();
            if (res.status !== 200) failures.push(`status ${res.status}`);
            requestIds.push(res.headers.get("x-aigw-request-id") as string);
          } catch (err) {
            failures.push(String(err));
          }
        }
      }),
    );

    // Kills at random points of the traffic (about 10 s of it) and of the drain after it.
    const kills: { atMs: number; downMs: number; delivered: number }[] = [];
    for (let k = 0; k < KILLS; k++) {
      await new Promise((r) => setTimeout(r, 800 + random() * 1_700));
      const atMs = Math.round(performance.now() - started);
      cp.child.kill("SIGKILL");
      await cp.exited;
      const downMs = Math.round(200 + random() * 1_300);
      await new Promise((r) => setTimeout(r, downMs));
      kills.push({ atMs, downMs, delivered: receiver.accepted().length });
      cp = startControlPlane(grpcAt, httpAt);
      await cp.waitForLog("control plane ready");
    }
    await traffic;
    const trafficMs = Math.round(performance.now() - started);
    expect(failures).toEqual([]);
    expect(requestIds).toHaveLength(CALLS);

    const delivered = () => new Set(receiver.accepted().map((r) => String(r.body.request_id)));
    await waitFor("every call's event delivered", () => requestIds.every((id) => delivered().has(id)), 180_000);

    const drainedMs = Math.round(performance.now() - started);
    const perId = new Map<string, number>();
    for (const r of receiver.accepted()) perId.set(r.id, (perId.get(r.id) ?? 0) + 1);
    const duplicates = [...perId.values()].filter((n) => n > 1).length;
    console.log(
      `control plane SIGKILL: seed ${seed}; ${CALLS} events, ${KILLS} kills at ${kills.map((k) => `${k.atMs} ms (down ${k.downMs} ms)`).join(", ")}; ` +
        `traffic done at ${trafficMs} ms, all delivered at ${drainedMs} ms; lost 0; ${duplicates} webhook-ids delivered more than once (${receiver.accepted().length - perId.size} extra requests)`,
    );
    expect(perId.size).toBe(CALLS);
    expect(receiver.rejected).toEqual([]);
    // At least once: a duplicate is an attempt in flight when the process died.
    expect(duplicates).toBeLessThanOrEqual(KILLS * IN_FLIGHT_MAX);
  });
});
