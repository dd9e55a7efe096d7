import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type RunningSidecar, runSidecar } from "../../sidecar/run.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

// `aigw watch` as a person runs it, while the control plane under it is killed (SIGKILL),
// stopped (SIGTERM) and started again on the same database and ports, and the app keeps
// calling through its sidecar the whole time: every completion is printed once, none lost.
describe("aigw watch across control-plane restarts", () => {
  let dir: string;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let receiver: TestReceiver;
  let sidecar: RunningSidecar | undefined;
  let cp: AigwProcess | undefined;
  let watcher: AigwProcess | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-watch-restart-"));
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
    // Sidecars build only the events some endpoint wants: one receiver wants completions.
    receiver = await startTestReceiver({ secret: TEST_SECRET });
  });

  afterAll(async () => {
    watcher?.child.kill("SIGKILL");
    await sidecar?.close();
    cp?.child.kill("SIGKILL");
    await cp?.exited;
    await provider?.close();
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("resumes from its cursor: no event lost, none printed twice", { timeout: 240_000 }, async () => {
    const configPath = join(dir, "config.yaml");
    writeFileSync(configPath, testConfigYaml({ primaryUrl: receiver.url }));
    const start = (grpc: string, http: string) =>
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
    cp = start("127.0.0.1:0", "127.0.0.1:0");
    const ready = await cp.waitForLog("control plane ready");
    const grpcUrl = String(ready.grpc);
    const httpUrl = String(ready.http);
    const restart = async () => {
      cp = start(grpcUrl.replace("http://", ""), httpUrl.replace("http://", ""));
      await cp.waitForLog("control plane ready");
    };

    sidecar = await runSidecar({
      controlPlane: grpcUrl,
      listen: "127.0.0.1:0",
      upstreams: { openai: provider.url },
      orgId: "org_watch",
      app: "watch",
      spoolDir: join(dir, "spool"),
      logger: createLogger({ level: "silent" }),
    });
    const requestIds: string[] = [];
    const callApp = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const res = await fetch(`${sidecar!.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
          body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
        });
        expect(res.status).toBe(200);
        await res.json();
        requestIds.push(res.headers.get("x-aigw-request-id") as string);
      }
    };

    // --since 0: everything stored, then live; the process is the real CLI, output piped.
    watcher = runAigw(["watch", "--json", "--events", "completion", "--since", "0", "--admin", httpUrl]);
    const printed = (): string[] =>
      watcher!.lines
        .filter((l) => l.startsWith("{"))
        .map((l) => String((JSON.parse(l) as Record<string, unknown>).request_id));
    const allPrinted = (what: string) => waitFor(what, () => requestIds.every((id) => printed().includes(id)), 60_000);

    await callApp(15);
    await allPrinted("the first completions on the watcher");

    // SIGKILL: the watcher loses its stream; the app goes on (events spool in the sidecar).
    cp.child.kill("SIGKILL");
    await cp.exited;
    await callApp(15);
    await restart();
    await callApp(15);
    await allPrinted("the completions from before, during and after the kill");

    // SIGTERM: the control plane ends the feed itself on the way down.
    cp.child.kill("SIGTERM");
    expect(await cp.exited).toBe(0);
    await callApp(15);
    await restart();
    await callApp(15);
    await allPrinted("the completions around the graceful restart");

    // A last call, stored after everything above: once it is printed, nothing else is owed.
    await callApp(1);
    await allPrinted("the last completion");
    const lines = printed();
    expect(lines).toHaveLength(requestIds.length);
    expect(new Set(lines).size).toBe(lines.length);
    expect(lines.at(-1)).toBe(requestIds.at(-1));

    const notices = watcher.stderr();
    expect(notices.match(/feed lost/g)?.length ?? 0).toBeGreaterThanOrEqual(2);
    expect(notices).toMatch(/aigw watch: reconnected; resuming after cursor \d+/);

    watcher.child.kill("SIGTERM");
    expect(await watcher.exited).toBe(0);
    expect(watcher.stderr()).toMatch(/aigw watch: stopped; resume with --since \d+\n$/);
  });

  it("waits for a control plane that is not up yet, then follows it", async () => {
    // A port nothing listens on (yet): bound once by the OS, then released.
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const early = runAigw(["watch", "--json", "--admin", `http://127.0.0.1:${port}`]);
    try {
      await waitFor("the first retry notice", () => early.stderr().includes("cannot reach the feed"));
      const configPath = join(dir, "early.yaml");
      writeFileSync(configPath, testConfigYaml({ primaryUrl: receiver.url }));
      const late = runAigw([
        "control-plane",
        "--config",
        configPath,
        "--store",
        `sqlite:${join(dir, "early.db")}`,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        `127.0.0.1:${port}`,
      ]);
      try {
        await late.waitForLog("control plane ready");
        await waitFor("the watcher to connect", () => /connected; starting after cursor \d+/.test(early.stderr()));
        expect(early.stderr()).not.toContain("feed lost");
        const send = runAigw(["send-test", "--admin", `http://127.0.0.1:${port}`]);
        expect(await send.exited).toBe(0);
        const id = /event (evt_\w+)/.exec(send.lines.join("\n"))?.[1];
        await waitFor("the test event on the watcher", () =>
          early.lines.some((l) => id !== undefined && l.includes(id)),
        );
      } finally {
        late.child.kill("SIGTERM");
        await late.exited;
      }
    } finally {
      early.child.kill("SIGTERM");
      await early.exited;
    }
  });
});
