import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { BACKUP_SECRET, TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// The product page's shape (primary with backup as its failover), both receivers
// answering 503 for a few seconds (a deploy, a load balancer blip) while an app makes 5
// calls a second. The control plane used to spin on its circuit-breaker state and die.
// Here it must stay up and answer /healthz within a second throughout, deliver what the
// app sends after the receivers recover by itself, and deliver what was dead-lettered
// during the outage with one bulk replay.
describe("both receivers down briefly (primary → backup)", () => {
  let dir: string;
  let location: TestStoreLocation | undefined;
  let primary: TestReceiver;
  let backup: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let cp: AigwProcess | undefined;
  let sidecar: AigwProcess | undefined;
  let outage = true;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-outage-"));
    primary = await startTestReceiver({ secret: TEST_SECRET, script: () => (outage ? 503 : 200) });
    backup = await startTestReceiver({ secret: BACKUP_SECRET, script: () => (outage ? 503 : 200) });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
  });

  afterAll(async () => {
    for (const p of [sidecar, cp]) {
      p?.child.kill("SIGKILL");
      await p?.exited;
    }
    await provider?.close();
    await primary?.close();
    await backup?.close();
    await location?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("stays up, recovers by itself, and one bulk replay delivers the outage's dead letters", async () => {
    const configPath = join(dir, "config.yaml");
    location = await testStoreLocation();
    writeFileSync(
      configPath,
      withStorageKey(
        testConfigYaml({
          primaryUrl: primary.url,
          backupUrl: backup.url,
          maxAttempts: 2,
          initialDelayMs: 200,
          // A short cooldown keeps the test short; the default (30 s) only delays recovery.
          extra: "  circuit_breaker_cooldown_ms: 2000\n",
        }),
        location,
      ),
    );
    cp = runAigw([
      "control-plane",
      "--config",
      configPath,
      "--store",
      location.url,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    const ready = await cp.waitForLog("control plane ready");
    const httpUrl = String(ready.http);
    sidecar = runAigw([
      "sidecar",
      "--admin-listen",
      "127.0.0.1:0",
      "--control-plane",
      String(ready.grpc),
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      provider.url,
      "--org",
      "org_outage",
      "--app",
      "outage",
      "--spool",
      join(dir, "spool"),
    ]);
    const sidecarUrl = String((await sidecar.waitForLog("sidecar ready")).url);

    // /healthz every 200 ms for the whole run; each answer's latency is kept.
    const health: number[] = [];
    const healthFailures: string[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const started = performance.now();
        try {
          const res = await fetch(`${httpUrl}/healthz`, { signal: AbortSignal.timeout(10_000) });
          if (res.status !== 200) healthFailures.push(`status ${res.status}`);
          await res.text();
        } catch (err) {
          healthFailures.push(String(err));
        }
        health.push(performance.now() - started);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    const call = async (): Promise<string> => {
      const res = await fetch(`${sidecarUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
        body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status).toBe(200);
      await res.json();
      return res.headers.get("x-aigw-request-id") as string;
    };
    /** `count` calls at 5 a second. */
    const traffic = async (count: number): Promise<string[]> => {
      const ids: string[] = [];
      for (let i = 0; i < count; i++) {
        const next = Date.now() + 200;
        ids.push(await call());
        await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
      }
      return ids;
    };

    // The outage: 5 calls a second until the primary's circuit has opened and deliveries
    // have failed over to the backup (which fails too), and at least 8 seconds of it.
    const outageStarted = Date.now();
    const duringOutage: string[] = [];
    while (Date.now() - outageStarted < 8_000) duringOutage.push(...(await traffic(5)));
    await cp.waitForLog("endpoint circuit opened after consecutive failures", 30_000);
    await cp.waitForLog("delivery failed over", 30_000);
    expect(primary.received.length).toBeGreaterThan(0);
    expect(backup.received.length).toBeGreaterThan(0);
    outage = false;

    const afterRecovery = await traffic(10);
    const acceptedIds = () =>
      new Set([...primary.accepted(), ...backup.accepted()].map((r) => String(r.body.request_id)));
    await waitFor(
      "the calls made after recovery delivered without help",
      () => afterRecovery.every((id) => acceptedIds().has(id)),
      60_000,
    );

    const replay = runAigw(["deliveries", "replay", "--dead-lettered", "--admin", httpUrl]);
    expect(await replay.exited).toBe(0);
    await waitFor(
      "every call of the outage delivered after one bulk replay",
      () => duringOutage.every((id) => acceptedIds().has(id)),
      60_000,
    );

    probing = false;
    await prober;
    expect(healthFailures).toEqual([]);
    expect(health.length).toBeGreaterThan(20);
    expect(Math.max(...health)).toBeLessThan(1_000);
    expect(cp.child.exitCode).toBeNull();
    expect(primary.rejected).toEqual([]);
    expect(backup.rejected).toEqual([]);
  });
});
