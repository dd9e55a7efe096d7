import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type RunningSidecar, runSidecar } from "../../sidecar/run.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// Several control planes (DESIGN.md "CLI"): the sidecar uses one and moves to the
// next when it is refused or unreachable, its spool and seqs carried over. Two real
// control-plane processes, each with its own store, one receiver subscribed on both.
describe("sidecar with several control planes", () => {
  let dir: string;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let configPath: string;
  const planes: AigwProcess[] = [];
  const sidecars: RunningSidecar[] = [];
  let blackhole: Server | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-failover-"));
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
    configPath = join(dir, "config.yaml");
    writeFileSync(configPath, testConfigYaml({ primaryUrl: receiver.url }));
  });

  afterAll(async () => {
    for (const sidecar of sidecars) await sidecar.close();
    for (const plane of planes) {
      plane.child.kill("SIGKILL");
      await plane.exited;
    }
    await new Promise<void>((resolve) => (blackhole ? blackhole.close(() => resolve()) : resolve()));
    await provider?.close();
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startPlane(name: string): Promise<{ process: AigwProcess; grpc: string; http: string }> {
    const process = runAigw([
      "control-plane",
      "--config",
      configPath,
      "--store",
      `sqlite:${join(dir, `${name}.db`)}`,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    planes.push(process);
    const ready = await process.waitForLog("control plane ready");
    return { process, grpc: String(ready.grpc), http: String(ready.http) };
  }

  async function sidecarTo(controlPlane: string[], app: string): Promise<RunningSidecar> {
    const sidecar = await runSidecar({
      controlPlane,
      listen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
      upstreams: { openai: provider.url },
      orgId: "org_failover",
      app,
      spoolDir: join(dir, `spool-${app}`),
      logger: createLogger({ level: process.env.AIGW_TEST_LOG ?? "silent" }),
    });
    sidecars.push(sidecar);
    return sidecar;
  }

  async function call(sidecar: RunningSidecar): Promise<string> {
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
      body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(200);
    await res.json();
    return res.headers.get("x-aigw-request-id") as string;
  }

  const deliveredRequestIds = () => new Set(receiver.accepted().map((r) => String(r.body.request_id)));

  it("moves to the next control plane when the first is killed, losing nothing and keeping its seqs", async () => {
    const a = await startPlane("a");
    const b = await startPlane("b");
    const sidecar = await sidecarTo([a.grpc, b.grpc], "moves");
    const requestIds: string[] = [];
    for (let i = 0; i < 20; i++) requestIds.push(await call(sidecar));
    await waitFor("the first requests delivered through a", () =>
      requestIds.every((id) => deliveredRequestIds().has(id)),
    );
    expect(sidecar.uplink.stats().target).toBe(a.grpc);
    const seqBefore = sidecar.uplink.stats().lastSeq;

    a.process.child.kill("SIGKILL");
    await a.process.exited;
    // The app's calls go on while the sidecar moves.
    for (let i = 0; i < 20; i++) requestIds.push(await call(sidecar));
    await waitFor("every request delivered, the later ones through b", () =>
      requestIds.every((id) => deliveredRequestIds().has(id)),
    );
    // Acks may trail the webhooks: wait until the last batch is acked too.
    await waitFor("every batch acked", () => sidecar.uplink.stats().ackedSeq === sidecar.uplink.stats().lastSeq);
    const stats = sidecar.uplink.stats();
    expect(stats).toMatchObject({ connected: true, target: b.grpc, dropped: 0 });
    // The same spool and numbering went on: no seq was reused.
    expect(stats.lastSeq).toBeGreaterThan(seqBefore);
    expect(stats.ackedSeq).toBe(stats.lastSeq);
    expect(receiver.rejected).toEqual([]);
  });

  it("starts on the second when the first is down or never answers, and reports it on /readyz and /metrics", async () => {
    const b = await startPlane("b2");
    // A port that accepts nothing (closed) and one that accepts TCP and never speaks HTTP/2.
    const closedPort = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    blackhole = createServer((socket) => socket.resume()).listen(0, "127.0.0.1");
    await new Promise((resolve) => blackhole!.once("listening", resolve));
    const silentPort = (blackhole.address() as { port: number }).port;
    const sidecar = await sidecarTo([`127.0.0.1:${closedPort},127.0.0.1:${silentPort}`, b.grpc], "second");
    await waitFor("connected to b", () => sidecar.uplink.stats().connected && sidecar.uplink.stats().target === b.grpc);
    const id = await call(sidecar);
    await waitFor("the request delivered through b", () => deliveredRequestIds().has(id));

    const ready = await fetch(`${sidecar.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.text()).toContain(`connected to control plane ${b.grpc}`);
    expect(await (await fetch(`${sidecar.adminUrl}/healthz`)).text()).toBe("ok\n");
    // The ack can reach the sidecar after the webhook reached the receiver, and a slow ack
    // (busy machine) puts the batch on disk until the ack is recorded: wait for the quiet state.
    const metrics = await waitFor("the ack recorded and the spool empty again", async () => {
      const text = await (await fetch(`${sidecar.adminUrl}/metrics`)).text();
      return /^aigw_sidecar_events_queued 0$/m.test(text) && /^aigw_sidecar_spool_bytes 0$/m.test(text)
        ? text
        : undefined;
    });
    expect(metrics).toMatch(/^aigw_sidecar_requests_total\{upstream="openai"\} 1$/m);
    expect(metrics).toMatch(/^aigw_sidecar_upstream_responses_total\{upstream="openai",code="200"\} 1$/m);
    expect(metrics).toMatch(/^aigw_sidecar_added_latency_seconds_count 1$/m);
    expect(metrics).toMatch(/^aigw_sidecar_events_sent_total 1$/m);
    expect(metrics).toMatch(/^aigw_sidecar_uplink_connected 1$/m);
    // The admin port never answers provider paths, and the proxy never answers admin ones.
    expect((await fetch(`${sidecar.adminUrl}/v1/chat/completions`)).status).toBe(404);

    b.process.child.kill("SIGKILL");
    await b.process.exited;
    const whileDown = await call(sidecar);
    await waitFor("the event spooled while no control plane answers", () => sidecar.uplink.stats().spooledEvents === 1);
    const spooling = await fetch(`${sidecar.adminUrl}/readyz`);
    expect(spooling.status).toBe(200);
    expect(await spooling.text()).toContain("events wait in the spool");
    const down = await (await fetch(`${sidecar.adminUrl}/metrics`)).text();
    expect(down).toMatch(/^aigw_sidecar_uplink_connected 0$/m);
    expect(down).toMatch(/^aigw_sidecar_events_spooled 1$/m);
    expect(Number(/^aigw_sidecar_spool_bytes (\d+)$/m.exec(down)?.[1])).toBeGreaterThan(0);
    expect(Number(/^aigw_sidecar_spool_writes_total (\d+)$/m.exec(down)?.[1])).toBeGreaterThan(0);
    expect(deliveredRequestIds().has(whileDown)).toBe(false);
  });
});
