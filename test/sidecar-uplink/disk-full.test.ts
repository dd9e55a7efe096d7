import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { sidecarReadiness } from "../../sidecar/admin/admin-server.js";
import { parseSegment } from "../../sidecar/uplink/segment-format.js";
import { Uplink } from "../../sidecar/uplink/uplink.js";
import { FakeControlPlane, unusedPort, waitFor } from "./fake-control-plane.js";
import { CapturedLog, completionEvent, temporaryDir } from "./helpers.js";

// Disk full for the spool: a small tmpfs, filled up. Writes fail with a clear
// error, nothing on disk is corrupted, events wait in memory, /readyz says why, and the
// spool recovers by itself when space returns. Needs root (mount); skipped with a note otherwise.

function tryMount(dir: string, size: string): boolean {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

let base: { path: string; remove: () => Promise<void> };
let mounted: string | undefined;
let uplink: Uplink | undefined;
let plane: FakeControlPlane | undefined;

beforeEach(async () => {
  base = await temporaryDir();
});

afterEach(async () => {
  await uplink?.close();
  await plane?.stop();
  uplink = undefined;
  plane = undefined;
  if (mounted) execFileSync("umount", ["-l", mounted]);
  mounted = undefined;
  await base.remove();
});

const canMount = (() => {
  const probe = join(process.env.TMPDIR ?? "/tmp", `aigw-mount-probe-${process.pid}`);
  mkdirSync(probe, { recursive: true });
  const ok = tryMount(probe, "64k");
  if (ok) execFileSync("umount", [probe]);
  rmSync(probe, { recursive: true, force: true });
  if (!ok) process.stderr.write("disk-full test skipped: mounting a tmpfs needs root (CAP_SYS_ADMIN)\n");
  return ok;
})();

describe.skipIf(!canMount)("spool on a full disk", () => {
  it("fails clearly, keeps events in memory, corrupts nothing, and recovers when space returns", async () => {
    const disk = join(base.path, "disk");
    mkdirSync(disk);
    expect(tryMount(disk, "256k")).toBe(true);
    mounted = disk;
    const spoolDir = join(disk, "spool");
    const log = new CapturedLog();
    const port = await unusedPort();
    uplink = new Uplink({
      target: `127.0.0.1:${port}`,
      orgId: "org_test",
      app: "disk-full",
      version: "test",
      spoolDir,
      logger: log.logger,
      batchMaxDelayMs: 5,
      reconnectInitialMs: 50,
      reconnectMaxMs: 200,
    });
    await uplink.start();

    // Fill the disk but for a few KiB.
    let filler = 0;
    try {
      for (;;) writeFileSync(join(disk, `filler-${filler++}`), Buffer.alloc(16 * 1024, 1));
    } catch (error) {
      expect((error as NodeJS.ErrnoException).code).toBe("ENOSPC");
    }

    const ids: string[] = [];
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 50; i++) {
        const event = completionEvent();
        ids.push(event.id);
        uplink.publish(event);
      }
      await waitFor(() => uplink!.stats().bufferedEvents === 0, "events sealed");
    }
    await waitFor(() => uplink!.stats().spoolWriteFailures > 0, "a failed spool write");
    const full = log.lines.find((line) => String(line.msg).includes("writing to disk failed"));
    expect(full).toMatchObject({ level: 40, err: expect.objectContaining({ code: "ENOSPC" }) });
    const stats = uplink.stats();
    expect(stats.dropped).toBe(0);
    expect(stats.queuedEvents).toBe(ids.length);
    expect(stats.spooledEvents).toBeLessThan(ids.length);
    expect(sidecarReadiness(uplink)).toEqual({
      ready: false,
      reason: expect.stringMatching(/spool cannot be written/),
    });
    // What is on disk is whole: every segment parses to its end.
    for (const name of readdirSync(spoolDir).filter((n) => n.startsWith("segment-"))) {
      expect(parseSegment(readFileSync(join(spoolDir, name))).problem).toBeUndefined();
    }

    // Space returns: the spool catches up by itself.
    for (let i = 0; i < filler; i++) rmSync(join(disk, `filler-${i}`), { force: true });
    await waitFor(() => uplink!.stats().spooledEvents === ids.length, "every event on disk", 30_000);
    expect(sidecarReadiness(uplink)).toMatchObject({ ready: true });

    // And everything reaches the control plane, in order.
    plane = new FakeControlPlane();
    await plane.start(port);
    await uplink.flush({ timeoutMs: 30_000 });
    expect([...new Set(plane.storedEventIds())]).toEqual(ids);
  });
});
