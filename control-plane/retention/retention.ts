import { steadyNow } from "../../common/clock.js";
import type { Logger } from "../../common/logger.js";
import type { MetricFamily } from "../http/metrics.js";
import { rollupCutoffs } from "../store/rollups.js";
import { PURGE_START, type PurgeCursor } from "../store/retention.js";
import type { Store } from "../store/store.js";

/**
 * `delivery.retention_hours`: what the store keeps, and the pace at which it forgets.
 *
 * An event ingested before the window is deleted with its deliveries and their attempts
 * once every delivery of it has ended (delivered, failed, dead-lettered) before the window
 * too. Two kinds of event are kept past the window, and said so:
 * - one with a delivery still pending to a live endpoint (it exists and is enabled), or in
 *   flight: retention never takes work away from an endpoint that may still take it. Such
 *   events are logged (AIGW_RETENTION_KEPT_PENDING) and counted every run; they are bounded
 *   by delivery.queue_size, since pending deliveries are. Disable or delete the endpoint, or
 *   let its deliveries dead-letter, and the next run purges them;
 * - one with a delivery that ended within the window (a recent retry or replay), so an
 *   attempt is never purged younger than the window.
 * A delivery pending to an endpoint that is disabled or deleted has nowhere to go: it is
 * deleted with its event (counted as abandoned).
 *
 * Runs go in small steps on the main thread (SQLite is synchronous): each step is sized to
 * take about `stepBudgetMs`, and the next one waits at least as long as the last one took,
 * so deliveries, acks and /healthz keep at least half the thread whatever the backlog.
 */

export interface RetentionOptions {
  store: Store;
  retentionHours: number;
  logger: Logger;
  /** Wall clock for event ages; default Date.now. */
  now?: () => number;
  /** Target main-thread time of one step; default 2 ms. */
  stepBudgetMs?: number;
  /** Time between runs; default a 24th of the window, within [1 min, 1 h]. */
  everyMs?: number;
  /** The first run after start(); default 10 s. */
  firstRunMs?: number;
}

export interface RetentionRun {
  beforeMs: number;
  events: number;
  deliveries: number;
  attempts: number;
  abandoned: number;
  keptPending: number;
  keptRecent: number;
  oldestKeptPendingAt: number | undefined;
  steps: number;
  /** The longest step: the longest the run held the main thread at once. */
  longestStepMs: number;
  ms: number;
  /** Stopped before the end (shutdown). */
  interrupted: boolean;
  /** Analytics rollup rows deleted (older than their resolution keeps, or than retention). */
  rollups: number;
}

const MIN_STEP = 8;
const MAX_STEP = 2_000;
const FIRST_STEP = 64;

export class RetentionPurger {
  private readonly options: RetentionOptions;
  private readonly windowMs: number;
  private readonly everyMs: number;
  private readonly stepBudgetMs: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RetentionRun> | undefined;
  private stopping = false;
  /** Step size carried over between runs: the rate learnt for this store and machine. */
  private stepLimit = FIRST_STEP;
  private readonly totals = { runs: 0, events: 0, deliveries: 0, attempts: 0, abandoned: 0, failures: 0 };
  private last: RetentionRun | undefined;
  private lastRunAt = 0;

  constructor(options: RetentionOptions) {
    this.options = options;
    this.windowMs = options.retentionHours * 3_600_000;
    this.everyMs = options.everyMs ?? Math.min(3_600_000, Math.max(60_000, this.windowMs / 24));
    this.stepBudgetMs = options.stepBudgetMs ?? 2;
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.stopping = false;
    this.schedule(this.options.firstRunMs ?? 10_000);
  }

  /** Stops the timer and a run in progress (between two steps). */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /** One run over every event older than `beforeMs` (default: the window before now). */
  runOnce(beforeMs = this.now() - this.windowMs): Promise<RetentionRun> {
    this.running ??= this.run(beforeMs).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  metrics(): MetricFamily[] {
    const last = this.last;
    return [
      counter("aigw_retention_runs_total", "Retention runs finished.", this.totals.runs),
      counter(
        "aigw_retention_failures_total",
        "Retention runs that failed (retried at the next run).",
        this.totals.failures,
      ),
      counter(
        "aigw_retention_purged_events_total",
        "Events deleted past delivery.retention_hours.",
        this.totals.events,
      ),
      counter(
        "aigw_retention_purged_deliveries_total",
        "Deliveries deleted with their events.",
        this.totals.deliveries,
      ),
      counter("aigw_retention_purged_attempts_total", "Attempts deleted with their deliveries.", this.totals.attempts),
      counter(
        "aigw_retention_abandoned_deliveries_total",
        "Pending deliveries to disabled or deleted endpoints deleted with their events.",
        this.totals.abandoned,
      ),
      {
        name: "aigw_retention_kept_events",
        help: "Events past the window kept by the last run: a delivery pending to a live endpoint, or one that ended within the window.",
        type: "gauge",
        samples: [
          { labels: { reason: "pending" }, value: last?.keptPending ?? 0 },
          { labels: { reason: "recent" }, value: last?.keptRecent ?? 0 },
        ],
      },
      {
        name: "aigw_retention_longest_step_seconds",
        help: "The longest main-thread step of the last retention run.",
        type: "gauge",
        samples: [{ value: (last?.longestStepMs ?? 0) / 1000 }],
      },
      {
        name: "aigw_retention_last_run_timestamp_seconds",
        help: "When the last retention run ended (0: none yet).",
        type: "gauge",
        samples: [{ value: this.lastRunAt / 1000 }],
      },
    ];
  }

  private schedule(delayMs: number): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runOnce().then(
        () => this.schedule(this.everyMs),
        () => this.schedule(this.everyMs),
      );
    }, delayMs);
    this.timer.unref();
  }

  private async run(beforeMs: number): Promise<RetentionRun> {
    const { store, logger } = this.options;
    const started = performance.now();
    const run: RetentionRun = {
      beforeMs,
      events: 0,
      deliveries: 0,
      attempts: 0,
      abandoned: 0,
      keptPending: 0,
      keptRecent: 0,
      oldestKeptPendingAt: undefined,
      steps: 0,
      longestStepMs: 0,
      ms: 0,
      interrupted: false,
      rollups: 0,
    };
    let after: PurgeCursor = PURGE_START;
    try {
      for (;;) {
        if (this.stopping) {
          run.interrupted = true;
          break;
        }
        const stepStarted = performance.now();
        const step = await store.purgeStep({ beforeMs, after, limit: this.stepLimit, now: steadyNow() });
        const stepMs = performance.now() - stepStarted;
        run.steps++;
        run.longestStepMs = Math.max(run.longestStepMs, stepMs);
        run.events += step.events;
        run.deliveries += step.deliveries;
        run.attempts += step.attempts;
        run.abandoned += step.abandoned;
        run.keptPending += step.keptPending;
        run.keptRecent += step.keptRecent;
        run.oldestKeptPendingAt ??= step.oldestKeptPendingAt;
        after = step.after;
        if (step.examined === this.stepLimit) this.resize(stepMs);
        if (step.done) break;
        // The thread is the deliveries' at least as long as it was the purge's.
        await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.ceil(stepMs))));
      }
      if (!run.interrupted) {
        const now = this.now();
        run.rollups = await store.purgeRollups(rollupCutoffs(now, Math.max(0, now - beforeMs)));
      }
    } catch (err) {
      this.totals.failures++;
      logger.error({ err, purged: run.events }, "retention run failed; it is tried again at the next run");
      throw err;
    } finally {
      run.ms = Math.round(performance.now() - started);
      this.totals.events += run.events;
      this.totals.deliveries += run.deliveries;
      this.totals.attempts += run.attempts;
      this.totals.abandoned += run.abandoned;
    }
    this.totals.runs++;
    this.last = run;
    this.lastRunAt = this.now();
    this.report(run);
    return run;
  }

  /** Moves the step size towards the budget, half the way each time (a busy machine's outlier moves it little). */
  private resize(stepMs: number): void {
    const ideal = this.stepLimit * (this.stepBudgetMs / Math.max(stepMs, 0.01));
    const next = Math.round((this.stepLimit + ideal) / 2);
    this.stepLimit = Math.min(MAX_STEP, Math.max(MIN_STEP, next));
  }

  private report(run: RetentionRun): void {
    const { logger } = this.options;
    const fields = {
      before: new Date(run.beforeMs).toISOString(),
      events: run.events,
      deliveries: run.deliveries,
      attempts: run.attempts,
      abandoned: run.abandoned,
      keptPending: run.keptPending,
      keptRecent: run.keptRecent,
      steps: run.steps,
      longestStepMs: Math.round(run.longestStepMs * 100) / 100,
      ms: run.ms,
    };
    if (run.events > 0 || run.keptRecent > 0) logger.info(fields, "retention: purged events past the window");
    if (run.keptPending > 0) {
      logger.warn(
        {
          code: "AIGW_RETENTION_KEPT_PENDING",
          events: run.keptPending,
          oldestIngestedAt:
            run.oldestKeptPendingAt === undefined ? undefined : new Date(run.oldestKeptPendingAt).toISOString(),
        },
        "retention: events past the window kept because their deliveries to live endpoints are still pending",
      );
    }
  }
}

function counter(name: string, help: string, value: number): MetricFamily {
  return { name, help, type: "counter", samples: [{ value }] };
}
