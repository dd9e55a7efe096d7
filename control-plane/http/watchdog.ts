import { Worker } from "node:worker_threads";
import type { Logger } from "../../common/logger.js";
import { type LoopDelay, LoopDelayMonitor } from "../../common/loop-delay.js";
import type { MetricFamily } from "./metrics.js";

/**
 * Watches the control plane's main thread. Two views, because a thread cannot report its
 * own freeze while frozen:
 *
 * - on the main thread, an event-loop delay histogram (exported in /metrics) and a heartbeat
 *   that notices, once it runs again, that it was held up: the stall is counted and, past
 *   `reportAfterMs`, logged with what `activity()` says the scheduler is doing;
 * - a small watchdog thread that reads the heartbeat from shared memory and, when it has not
 *   moved for `reportAfterMs`, writes a log line itself (straight to the log's file
 *   descriptor) with the last activity the main thread shared: a loop that never ends is
 *   reported while it runs, not after.
 */

export interface WatchdogOptions {
  logger: Logger;
  /** What the main thread is busy with (the scheduler's activity), shared every 250 ms. */
  activity: () => unknown;
  /** A heartbeat this late counts as a stall; default 250 ms. */
  stallMs?: number;
  /** A stall this long is logged; default 2000 ms. */
  reportAfterMs?: number;
  /** Where the watchdog thread writes its lines; default 1 (stdout, where the logger writes). */
  fd?: number;
}

const BEAT_MS = 100;

/** Milliseconds on process.hrtime: monotonic, and the same clock in the watchdog thread (see THREAD_SOURCE). */
function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}
const SHARE_EVERY_MS = 250;
const WINDOW_MS = 60_000;

// The thread's code, evaluated from a string: it needs nothing but Node built-ins, and
// this way it loads the same from the TypeScript sources (tests) and the built package.
const THREAD_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const { writeSync } = require("node:fs");
const shared = new BigInt64Array(workerData.buffer);
// process.hrtime is monotonic and one clock for every thread of the process: a wall clock
// set forward must not read as the main thread having been blocked for that long.
const monotonicMs = () => Number(process.hrtime.bigint() / 1000000n);
let activity = null;
let reportedBeat = -1n;
parentPort.on("message", (m) => {
  if (activity === null) parentPort.postMessage("watching");
  activity = m;
});
setInterval(() => {
  const beat = Atomics.load(shared, 0);
  const blockedMs = monotonicMs() - Number(beat);
  if (blockedMs < workerData.reportAfterMs || beat === reportedBeat) return;
  reportedBeat = beat;
  Atomics.add(shared, 1, 1n);
  if (!workerData.log) return;
  const line = JSON.stringify({
    level: 40, time: Date.now(), component: "watchdog", blockedMs, activity,
    msg: "control plane main thread blocked; /healthz, the Admin API and deliveries wait until it is free",
  });
  try { writeSync(workerData.fd, line + "\\n"); } catch {}
}, 100);
`;

export class Watchdog {
  private readonly options: Required<Omit<WatchdogOptions, "logger" | "activity">> & WatchdogOptions;
  private readonly delay = new LoopDelayMonitor(10);
  private readonly shared = new BigInt64Array(new SharedArrayBuffer(16));
  private worker: Worker | undefined;
  private beatTimer: NodeJS.Timeout | undefined;
  private shareTimer: NodeJS.Timeout | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  private lastBeat = 0;
  private watchingNow = false;
  private stalls = 0;
  private longestStallMs = 0;
  /** The last full window's delays (ms), exported until the next window closes. */
  private window = { p50: 0, p99: 0, max: 0 };

  constructor(options: WatchdogOptions) {
    this.options = { stallMs: 250, reportAfterMs: 2_000, fd: 1, ...options };
  }

  start(): void {
    if (this.beatTimer) return;
    this.delay.enable();
    this.lastBeat = monotonicMs();
    Atomics.store(this.shared, 0, BigInt(this.lastBeat));
    this.beatTimer = setInterval(() => this.beat(), BEAT_MS);
    this.beatTimer.unref();
    this.windowTimer = setInterval(() => this.closeWindow(), WINDOW_MS);
    this.windowTimer.unref();
    try {
      this.worker = new Worker(THREAD_SOURCE, {
        eval: true,
        workerData: {
          buffer: this.shared.buffer,
          reportAfterMs: this.options.reportAfterMs,
          fd: this.options.fd,
          log: this.options.logger.isLevelEnabled("warn"),
        },
      });
      this.worker.unref();
      this.worker.on("error", (err) => this.options.logger.error({ err }, "watchdog thread failed"));
      this.worker.on("message", () => {
        this.watchingNow = true;
      });
      this.shareTimer = setInterval(() => this.share(), SHARE_EVERY_MS);
      this.shareTimer.unref();
    } catch (err) {
      this.options.logger.error({ err }, "watchdog thread could not start; stalls are reported after they end");
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.beatTimer);
    clearInterval(this.shareTimer);
    clearInterval(this.windowTimer);
    this.beatTimer = this.shareTimer = this.windowTimer = undefined;
    this.delay.disable();
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  /** The watchdog thread runs and has the main thread's activity. */
  get watching(): boolean {
    return this.watchingNow;
  }

  /** Stalls seen (by the heartbeat once it resumed, or by the watchdog thread while it lasted). */
  get stallCount(): number {
    return this.stalls;
  }

  /** Stalls the watchdog thread reported while they lasted. */
  get reportedWhileBlocked(): number {
    return Number(Atomics.load(this.shared, 1));
  }

  metrics(): MetricFamily[] {
    const live = this.current();
    // The larger of the closed window and the one filling now: a stall shows at once.
    const p50 = Math.max(this.window.p50, live.p50);
    const p99 = Math.max(this.window.p99, live.p99);
    const max = Math.max(this.window.max, live.max);
    return [
      {
        name: "aigw_event_loop_delay_seconds",
        help: "Main-thread event-loop delay over the last minute (quantile 1 is the maximum).",
        type: "gauge",
        samples: [
          { labels: { quantile: "0.5" }, value: p50 / 1000 },
          { labels: { quantile: "0.99" }, value: p99 / 1000 },
          { labels: { quantile: "1" }, value: max / 1000 },
        ],
      },
      {
        name: "aigw_event_loop_stalls_total",
        help: `Times the main thread was held up for more than ${this.options.stallMs} ms.`,
        type: "counter",
        samples: [{ value: this.stalls }],
      },
      {
        name: "aigw_event_loop_longest_stall_seconds",
        help: "The longest time the main thread was held up since start.",
        type: "gauge",
        samples: [{ value: this.longestStallMs / 1000 }],
      },
    ];
  }

  private beat(): void {
    const now = monotonicMs();
    const gap = now - this.lastBeat - BEAT_MS;
    this.lastBeat = now;
    Atomics.store(this.shared, 0, BigInt(now));
    if (gap <= this.options.stallMs) return;
    this.stalls++;
    this.longestStallMs = Math.max(this.longestStallMs, gap);
    if (gap >= this.options.reportAfterMs) {
      this.options.logger.warn(
        { blockedMs: gap, activity: this.safeActivity() },
        "control plane main thread was blocked",
      );
    }
  }

  private share(): void {
    try {
      this.worker?.postMessage(this.safeActivity());
    } catch {
      // An activity that cannot be cloned is not worth a failure.
    }
  }

  private safeActivity(): unknown {
    try {
      return this.options.activity();
    } catch (err) {
      return { error: String(err) };
    }
  }

  private current(): LoopDelay {
    return this.delay.read();
  }

  private closeWindow(): void {
    this.window = this.current();
    this.delay.reset();
  }
}
