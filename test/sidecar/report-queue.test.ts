import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ReportQueue } from "../../sidecar/proxy/report-queue.js";

const SOURCE = fileURLToPath(new URL("../../sidecar/proxy/report-queue.ts", import.meta.url));

describe("report queue", () => {
  it("runs a batch's reports in order, once, and goes on after one that throws", async () => {
    const errors: unknown[] = [];
    const queue = new ReportQueue((err) => errors.push(err));
    const ran: number[] = [];
    queue.add(() => ran.push(1));
    queue.add(() => {
      throw new Error("bad report");
    });
    queue.add(() => ran.push(3));
    expect(ran).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(ran).toEqual([1, 3]);
    expect(errors).toHaveLength(1);
    queue.flush();
    expect(ran).toEqual([1, 3]);
  });

  it("runs a report added from a timer at once, not when the next I/O arrives", () => {
    // A process of its own, so that nothing else wakes its event loop: a report added from a
    // timer callback (outside node's I/O phase) must run before the loop waits for I/O; the
    // only other thing keeping the loop alive is a timer 3 s away.
    const script = `
      const { ReportQueue } = await import(${JSON.stringify(SOURCE)});
      const queue = new ReportQueue();
      const keepAlive = setTimeout(() => { console.log("waited"); }, 3000);
      setTimeout(() => {
        const added = performance.now();
        queue.add(() => {
          console.log(JSON.stringify({ ms: performance.now() - added }));
          clearTimeout(keepAlive);
        });
      }, 10);
    `;
    const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 60_000,
    });
    const lines = run.stdout.trim().split("\n");
    expect(lines, run.stderr).toHaveLength(1);
    expect(JSON.parse(lines[0]!).ms).toBeLessThan(1000);
  });
});
