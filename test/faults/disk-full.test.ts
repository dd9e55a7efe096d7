import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

// Disk full under the control plane's database: a real control plane whose SQLite file lives
// on a 16 MiB tmpfs mounted in a private mount namespace (unshare -rm; no root needed where
// user namespaces are allowed), filled by the test through /proc/PID/root. While full: app
// calls succeed, the control plane stays up and says so (AIGW_STORE_DISK_FULL), the sidecar
// keeps its events. When space returns: everything is delivered, nothing lost, and SQLite's
// integrity check passes.

const TMPFS_MB = 16;

/** Why a size-limited filesystem cannot be made here, or undefined when it can. */
function noSmallFilesystem(): string | undefined {
  try {
    execFileSync("unshare", ["-rm", "sh", "-c", `mount -t tmpfs -o size=1m tmpfs "${tmpdir()}"`], { stdio: "pipe" });
    return undefined;
  } catch (err) {
    return `cannot mount a size-limited tmpfs in a private mount namespace (unshare -rm): ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
}

/** SQLite's integrity check of `db`, run by a process inside the mount namespace of `pid`. */
function integrityCheckInside(pid: number, db: string): string {
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const script = `const D = require(${JSON.stringify(driver)}); const db = new D(${JSON.stringify(db)}, { fileMustExist: true });
    process.stdout.write(String(db.pragma("integrity_check", { simple: true }))); db.close();`;
  return execFileSync(
    "nsenter",
    ["-t", String(pid), "-U", "-m", "--preserve-credentials", process.execPath, "-e", script],
    { encoding: "utf8" },
  ).trim();
}

/** Writes zeros to `path` until the filesystem is full; returns the bytes written. */
function fillUp(path: string): number {
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(64 * 1024);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
  // The last partial page: a byte at a time.
  const tail = openSync(path, "a");
  try {
    for (;;) written += writeSync(tail, Buffer.alloc(1));
  } catch {
    // full
  } finally {
    closeSync(tail);
  }
  return written;
}

const unavailable = noSmallFilesystem();

describe.skipIf(unavailable !== undefined)(
  "disk full under the database (real control plane on a 16 MiB tmpfs)",
  () => {
    let dir: string;
    let mountPoint: string;
    let receiver: TestReceiver;
    let provider: Awaited<ReturnType<typeof startMockProvider>>;
    let cp: AigwProcess | undefined;
    let sidecar: AigwProcess | undefined;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "aigw-diskfull-"));
      mountPoint = mkdtempSync(join(tmpdir(), "aigw-diskfull-mnt-"));
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
      rmSync(mountPoint, { recursive: true, force: true });
    });

    it("waits for space without losing an event, and the database stays whole", async () => {
      const configPath = join(dir, "config.yaml");
      writeFileSync(configPath, testConfigYaml({ primaryUrl: receiver.url }));
      cp = runAigw(
        [
          "control-plane",
          "--config",
          configPath,
          "--store",
          `sqlite:${join(mountPoint, "cp.db")}`,
          "--grpc",
          "127.0.0.1:0",
          "--http",
          "127.0.0.1:0",
        ],
        {},
        (argv) => [
          "unshare",
          "-rm",
          "sh",
          "-c",
          `mount -t tmpfs -o size=${TMPFS_MB}m tmpfs "$0" && exec "$@"`,
          mountPoint,
          ...argv,
        ],
      );
      const ready = await cp.waitForLog("control plane ready");
      const httpUrl = String(ready.http);
      // The control plane's view of its own filesystem (its mount namespace).
      const inside = `/proc/${cp.child.pid}/root${mountPoint}`;
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
        "org_full",
        "--app",
        "full",
        "--spool",
        join(dir, "spool"),
      ]);
      const sidecarUrl = String((await sidecar.waitForLog("sidecar ready")).url);

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

      const ballast = join(inside, "ballast");
      const filled = fillUp(ballast);
      expect(filled).toBeGreaterThan(1024 * 1024);
      const fullFrom = requestIds.length;
      for (let i = 0; i < 200; i++) await call();
      const fullLine = await cp.waitForLog(
        "the store refuses writes; sidecars' batches are not acked and wait in their spools",
      );
      expect(fullLine).toMatchObject({ level: 40, code: "AIGW_STORE_DISK_FULL" });
      expect((await fetch(`${httpUrl}/healthz`)).status).toBe(200);
      expect(cp.child.exitCode).toBeNull();
      const whileFull = requestIds.slice(fullFrom).filter((id) => delivered().has(id)).length;

      unlinkSync(ballast);
      await waitFor(
        "every call's webhook once space is back",
        () => requestIds.every((id) => delivered().has(id)),
        60_000,
      );
      const perId = new Map<string, number>();
      for (const r of receiver.accepted()) perId.set(r.id, (perId.get(r.id) ?? 0) + 1);
      expect(perId.size).toBe(requestIds.length);
      const duplicates = [...perId.values()].filter((n) => n > 1).length;
      console.log(
        `disk full: ${filled} bytes of ballast; ${requestIds.length - fullFrom} calls while full (${whileFull} delivered before space returned); ${duplicates} duplicate webhook-ids`,
      );
      expect(receiver.rejected).toEqual([]);

      // SQLite resolves the /proc/PID/root link to this namespace's "/": check from inside.
      expect(integrityCheckInside(cp.child.pid as number, join(mountPoint, "cp.db"))).toBe("ok");
    });
  },
);

if (unavailable !== undefined) console.warn(`skipping the disk-full test: ${unavailable}`);
