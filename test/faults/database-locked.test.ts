import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { rpcErrorCode } from "../../common/rpc-errors.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

// The control plane's SQLite file locked by another process (a second connection holding a
// write transaction) while an app makes calls: the app never notices, the control plane stays
// responsive (/healthz) and says what is wrong (AIGW_STORE_LOCKED), the Admin API answers
// UNAVAILABLE, the sidecar keeps its events, and once the lock is gone everything is
// delivered, nothing lost, and the database passes SQLite's integrity check.

/** Another process holding a write lock on `db` until it is told to let go (stdin closes). */
function lockHolder(db: string): { child: ChildProcess; locked: Promise<void>; release(): Promise<void> } {
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const child = spawn(
    process.execPath,
    [
      "-e",
      `const Database = require(${JSON.stringify(driver)});
       const db = new Database(${JSON.stringify(db)});
       db.exec("BEGIN IMMEDIATE");
       db.prepare("INSERT INTO meta (name, value) VALUES ('lock_holder', 'x') ON CONFLICT (name) DO UPDATE SET value = 'x'").run();
       process.stdout.write("locked\\n");
       process.stdin.on("end", () => { db.exec("ROLLBACK"); db.close(); process.exit(0); });
       process.stdin.resume();`,
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const locked = new Promise<void>((resolve, reject) => {
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`lock holder exited (${code}) before locking`)));
  });
  return {
    child,
    locked,
    release: async () => {
      child.stdin?.end();
      await new Promise((resolve) => child.once("exit", resolve));
    },
  };
}

describe("the database locked by another process (real control plane and sidecar)", () => {
  let dir: string;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  let cp: AigwProcess | undefined;
  let sidecar: AigwProcess | undefined;
  let holder: ReturnType<typeof lockHolder> | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-locked-"));
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
  });
  afterAll(async () => {
    holder?.child.kill("SIGKILL");
    for (const p of [sidecar, cp]) {
      p?.child.kill("SIGKILL");
      await p?.exited;
    }
    await provider?.close();
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("waits the lock out responsively, refuses admin writes clearly, and loses nothing", async () => {
    const configPath = join(dir, "config.yaml");
    writeFileSync(configPath, testConfigYaml({ primaryUrl: receiver.url }));
    const dbPath = join(dir, "cp.db");
    cp = runAigw([
      "control-plane",
      "--config",
      configPath,
      "--store",
      `sqlite:${dbPath}`,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    const ready = await cp.waitForLog("control plane ready");
    const httpUrl = String(ready.http);
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
      "org_locked",
      "--app",
      "locked",
      "--spool",
      join(dir, "spool"),
    ]);
    const sidecarUrl = String((await sidecar.waitForLog("sidecar ready")).url);
    const admin = createClient(AdminService, createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" }));

    const requestIds: string[] = [];
    const call = async () => {
      const res = await fetch(`${sidecarUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
        body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status).toBe(200);
      await res.json();
      requestIds.push(res.headers.get("x-aigw-request-id") as string);
    };
    const delivered = () => new Set(receiver.accepted().map((r) => String(r.body.request_id)));

    for (let i = 0; i < 10; i++) await call();
    await waitFor("the first calls delivered", () => requestIds.every((id) => delivered().has(id)));

    holder = lockHolder(dbPath);
    await holder.locked;
    // While locked: /healthz every 100 ms, app calls at 10 a second.
    const health: number[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const started = performance.now();
        await fetch(`${httpUrl}/healthz`).then((r) => r.text());
        health.push(performance.now() - started);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const lockedIds = requestIds.length;
    for (let i = 0; i < 40; i++) {
      await call();
      await new Promise((r) => setTimeout(r, 100));
    }
    const refused = await admin
      .createEndpoint({ endpoint: { name: "later", url: receiver.url, secret: TEST_SECRET } })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    const lockedLine = await cp.waitForLog(
      "the store refuses writes; sidecars' batches are not acked and wait in their spools",
    );
    probing = false;
    await prober;

    expect(refused?.code).toBe(Code.Unavailable);
    expect(rpcErrorCode(refused!)).toBe("AIGW_STORE_LOCKED");
    expect(refused?.rawMessage).toMatch(/locked by another process/);
    expect(lockedLine).toMatchObject({ level: 40, code: "AIGW_STORE_LOCKED" });
    // Nothing of the locked stretch was stored, so nothing of it was delivered yet.
    expect(requestIds.slice(lockedIds).filter((id) => delivered().has(id))).toEqual([]);
    // The control plane kept answering: a write waits at most its short busy timeout on the main thread.
    expect(Math.max(...health)).toBeLessThan(1_000);

    await holder.release();
    await waitFor("every call's webhook after the lock", () => requestIds.every((id) => delivered().has(id)), 60_000);
    await admin.createEndpoint({ endpoint: { name: "later", url: receiver.url, secret: TEST_SECRET } });

    const perId = new Map<string, number>();
    for (const r of receiver.accepted()) perId.set(r.id, (perId.get(r.id) ?? 0) + 1);
    expect(perId.size).toBe(requestIds.length);
    expect([...perId.values()].filter((n) => n > 1)).toEqual([]);
    expect(receiver.rejected).toEqual([]);

    console.log(`healthz while locked: max ${Math.max(...health).toFixed(1)} ms over ${health.length} probes`);
    cp.child.kill("SIGTERM");
    expect(await cp.exited).toBe(0);
    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      // The other process's write was rolled back, never mixed with the control plane's.
      expect(db.prepare("SELECT value FROM meta WHERE name = 'lock_holder'").get()).toBeUndefined();
    } finally {
      db.close();
    }
  });
});
