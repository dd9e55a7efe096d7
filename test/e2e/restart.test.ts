import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { createLogger } from "../../common/logger.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { runSidecar, type RunningSidecar } from "../../sidecar/run.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// The control plane is killed (SIGKILL, no goodbye) in the middle of traffic and started
// again on the same database: the app never notices, nothing acked is lost, and nothing is
// delivered twice except attempts that were in flight at the kill.
describe("control plane killed and restarted mid-run", () => {
  let dir: string;
  let location: TestStoreLocation;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let sidecar: RunningSidecar | undefined;
  let cp: AigwProcess | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-restart-"));
    location = await testStoreLocation();
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
  });

  afterAll(async () => {
    await sidecar?.close();
    cp?.child.kill("SIGKILL");
    await cp?.exited;
    await provider?.close();
    await receiver?.close();
    await location?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("loses nothing and duplicates only in-flight attempts", async () => {
    const configPath = join(dir, "config.yaml");
    writeFileSync(configPath, withStorageKey(testConfigYaml({ primaryUrl: receiver.url }), location));
    const start = (grpc: string, http: string) =>
      runAigw(["control-plane", "--config", configPath, "--store", location.url, "--grpc", grpc, "--http", http]);

    cp = start("127.0.0.1:0", "127.0.0.1:0");
    const ready = await cp.waitForLog("control plane ready");
    const grpcUrl = String(ready.grpc);
    const httpUrl = String(ready.http);

    sidecar = await runSidecar({
      controlPlane: grpcUrl,
      listen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
      upstreams: { openai: provider.url },
      orgId: "org_restart",
      app: "restart",
      spoolDir: join(dir, "spool"),
      logger: createLogger({ level: "silent" }),
    });
    const requestIds: string[] = [];
    const callApp = async () => {
      const res = await fetch(`${sidecar!.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
        body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status).toBe(200);
      await res.json();
      requestIds.push(res.headers.get("x-aigw-request-id") as string);
    };

    for (let i = 0; i < 20; i++) await callApp();
    await waitFor("some deliveries before the kill", () => receiver.accepted().length >= 5);
    cp.child.kill("SIGKILL");
    await cp.exited;

    // The app's calls keep working while the control plane is gone.
    for (let i = 0; i < 20; i++) await callApp();

    cp = start(grpcUrl.replace("http://", ""), httpUrl.replace("http://", ""));
    await cp.waitForLog("control plane ready");

    const delivered = () => new Set(receiver.accepted().map((r) => String(r.body.request_id)));
    await waitFor("every request's webhook", () => requestIds.every((id) => delivered().has(id)), 60_000);

    const perEvent = new Map<string, number>();
    for (const r of receiver.accepted()) perEvent.set(r.id, (perEvent.get(r.id) ?? 0) + 1);
    const duplicated = [...perEvent.values()].filter((n) => n > 1).length;
    // At most what can be in flight at once (delivery.concurrent_deliveries = 10).
    expect(duplicated).toBeLessThanOrEqual(10);
    expect(perEvent.size).toBe(40);
    expect(receiver.rejected).toEqual([]);
  });
});
