import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { Watchdog } from "../../control-plane/http/watchdog.js";
import { renderMetrics } from "../../control-plane/http/metrics.js";
import { waitFor } from "../support/wait.js";

describe("Watchdog", () => {
  let dir: string | undefined;
  let watchdog: Watchdog | undefined;
  afterEach(async () => {
    await watchdog?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    watchdog = dir = undefined;
  });

  it("reports a blocked main thread while it is blocked, and again (with what it was doing) once it resumes", async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-watchdog-"));
    const threadLog = join(dir, "thread.log");
    const fd = openSync(threadLog, "a");
    const lines: string[] = [];
    const logger = createLogger({
      level: "info",
      destination: new Writable({
        write(chunk, _enc, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    });
    let phase = "idle";
    watchdog = new Watchdog({ logger, activity: () => ({ phase }), stallMs: 100, reportAfterMs: 500, fd });
    watchdog.start();
    phase = "claim";
    await waitFor("the watchdog thread to have the main thread's activity", () => watchdog?.watching);

    // A synchronous stretch of 3 s, as a runaway loop on the main thread would be; the
    // thread reports it (from 0.5 s on) before it ends.
    const until = Date.now() + 3_000;
    let reportedDuringBlock = 0;
    while (Date.now() < until) reportedDuringBlock = watchdog.reportedWhileBlocked;
    expect(reportedDuringBlock).toBe(1);
    closeSync(fd);
    const written = readFileSync(threadLog, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(written).toHaveLength(1);
    expect(written[0]).toMatchObject({ level: 40, component: "watchdog", activity: { phase: "claim" } });
    expect(written[0]!.blockedMs).toBeGreaterThanOrEqual(500);

    await waitFor("the main thread's own report", () => lines.some((l) => l.includes("main thread was blocked")));
    const own = JSON.parse(lines.find((l) => l.includes("main thread was blocked"))!) as Record<string, unknown>;
    expect(own.blockedMs).toBeGreaterThanOrEqual(2_500);
    expect(own.activity).toEqual({ phase: "claim" });
    expect(watchdog.stallCount).toBeGreaterThanOrEqual(1);
    const text = renderMetrics(watchdog.metrics());
    expect(text).toMatch(/aigw_event_loop_stalls_total [1-9]/);
    const longest = Number(/aigw_event_loop_longest_stall_seconds ([\d.]+)/.exec(text)?.[1]);
    expect(longest).toBeGreaterThanOrEqual(2.5);
    const max = Number(/aigw_event_loop_delay_seconds\{quantile="1"\} ([\d.]+)/.exec(text)?.[1]);
    expect(max).toBeGreaterThanOrEqual(2.5);
  });

  it("stays quiet while the main thread keeps up", async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: "info",
      destination: new Writable({
        write(chunk, _enc, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    });
    watchdog = new Watchdog({ logger, activity: () => ({}), reportAfterMs: 500 });
    watchdog.start();
    await waitFor("the watchdog thread watching", () => watchdog?.watching);
    // Timers keep firing on time for a while (a second of ordinary turns).
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 50));
    expect(watchdog.reportedWhileBlocked).toBe(0);
    expect(lines.filter((l) => l.includes("blocked"))).toEqual([]);
  });
});
