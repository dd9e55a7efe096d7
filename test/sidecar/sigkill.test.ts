import { appendFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockProvider } from "../../examples/mock-provider.js";
import { encodeRecord } from "../../sidecar/uplink/segment-format.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// The sidecar killed with SIGKILL, as real processes: a control plane, a
// verifying receiver, the mock provider, and `aigw sidecar` restarted on the same spool.
// README "What a SIGKILL can lose" states what these hold to.
describe("sidecar killed with SIGKILL", () => {
  let dir: string;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let configPath: string;
  const running = new Set<AigwProcess>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-sigkill-"));
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0, record: false });
    configPath = join(dir, "config.yaml");
    writeFileSync(configPath, testConfigYaml({ primaryUrl: receiver.url }));
  });

  afterAll(async () => {
    for (const process of running) {
      process.child.kill("SIGKILL");
      await process.exited;
    }
    await provider?.close();
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function track(process: AigwProcess): AigwProcess {
    running.add(process);
    void process.exited.then(() => running.delete(process));
    return process;
  }

  async function kill(process: AigwProcess): Promise<void> {
    process.child.kill("SIGKILL");
    await process.exited;
  }

  function controlPlane(name: string, grpc = "127.0.0.1:0"): AigwProcess {
    return track(
      runAigw([
        "control-plane",
        "--config",
        configPath,
        "--store",
        `sqlite:${join(dir, `${name}.db`)}`,
        "--grpc",
        grpc,
        "--http",
        "127.0.0.1:0",
      ]),
    );
  }

  async function sidecar(
    controlPlaneAddress: string,
    spool: string,
  ): Promise<{ process: AigwProcess; url: string; admin: string }> {
    const process = track(
      runAigw([
        "sidecar",
        "--control-plane",
        controlPlaneAddress,
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
        spool,
      ]),
    );
    const ready = await process.waitForLog("sidecar ready");
    return { process, url: String(ready.url), admin: String(ready.admin) };
  }

  async function call(url: string): Promise<string> {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
      body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    return res.headers.get("x-aigw-request-id") as string;
  }

  async function metric(admin: string, name: string): Promise<number> {
    const text = await (await fetch(`${admin}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  }

  const delivered = () => new Set(receiver.accepted().map((r) => String(r.body.request_id)));

  it("while spooling, and with a torn record left by a kill mid-write: nothing spooled is lost", async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const spool = join(dir, "spool-spooling");
    const requestIds: string[] = [];
    for (let round = 0; round < 2; round++) {
      // No control plane: every event goes to disk.
      const first = await sidecar(`127.0.0.1:${port}`, spool);
      const before = requestIds.length;
      for (let i = 0; i < 40; i++) requestIds.push(await call(first.url));
      await waitFor(
        "the events on disk",
        async () => (await metric(first.admin, "aigw_sidecar_events_spooled")) === 40 + before,
      );
      await kill(first.process);
    }
    // A kill in the middle of a write leaves a record cut short at the end of the last segment.
    const segments = readdirSync(spool)
      .filter((name) => name.startsWith("segment-"))
      .sort();
    expect(segments.length).toBeGreaterThan(0);
    appendFileSync(join(spool, segments.at(-1)!), encodeRecord(Buffer.alloc(300, 9)).subarray(0, 120));

    const cp = controlPlane("spooling", `127.0.0.1:${port}`);
    await cp.waitForLog("control plane ready");
    const second = await sidecar(`127.0.0.1:${port}`, spool);
    await waitFor("every spooled request's webhook", () => requestIds.every((id) => delivered().has(id)), 60_000);
    expect(second.process.lines.some((line) => line.includes("damaged segment tail skipped"))).toBe(true);
    await kill(second.process);
    await kill(cp);
  });

  it("while connected: everything older than the spool threshold survives the kill", async () => {
    const cp = controlPlane("connected");
    const ready = await cp.waitForLog("control plane ready");
    const grpc = String(ready.grpc);
    const spool = join(dir, "spool-connected");
    const completedAt = new Map<string, number>();
    const killedAt: number[] = [];
    for (let round = 0; round < 3; round++) {
      const running = await sidecar(grpc, spool);
      // Paced traffic for a while, and a kill at a point that varies from round to round.
      const thisRound = new Map<string, number>();
      const until = Date.now() + 1_000 + Math.random() * 1_000;
      while (Date.now() < until) {
        const id = await call(running.url);
        thisRound.set(id, Date.now());
        completedAt.set(id, Date.now());
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const at = Date.now();
      await kill(running.process);
      killedAt.push(at);
      // A restart on the same spool sends what was spooled. The README promises ~50 ms;
      // the bound here is generous because this machine may be busy.
      const again = await sidecar(grpc, spool);
      const mustArrive = [...thisRound].filter(([, done]) => at - done > 500).map(([id]) => id);
      await waitFor(
        "every request older than the threshold delivered",
        () => mustArrive.every((id) => delivered().has(id)),
        60_000,
      );
      await kill(again.process);
    }
    // Reported for the README's fault table: how many were lost, and how recent they were,
    // once the control plane has delivered everything it stored.
    await waitFor(
      "the control plane's deliveries to finish",
      async () => {
        const text = await (await fetch(`${String(ready.http)}/metrics`)).text();
        return /^aigw_deliveries_pending 0$/m.test(text) && /^aigw_deliveries_in_flight 0$/m.test(text);
      },
      60_000,
    );
    const lost = [...completedAt].filter(([id]) => !delivered().has(id));
    const ages = lost.map(([, done]) => Math.min(...killedAt.filter((k) => k >= done).map((k) => k - done)));
    process.stderr.write(
      `sidecar SIGKILL while connected (3 kills): ${lost.length} of ${completedAt.size} events not delivered, completed at most ${Math.max(0, ...ages)} ms before a kill\n`,
    );
    await kill(cp);
  }, 180_000);
});
