import type { Logger } from "../../common/logger.js";

/**
 * `delivery.queue_size` as backpressure on ingest. When that many deliveries are pending,
 * a sidecar's next batch waits before it is stored, so it is not acked: the sidecar keeps
 * it (and what follows) in its on-disk spool, and its app's requests go on untouched (the
 * sidecar never waits for an ack). Batches go on once fewer than `resumeBelow` are pending.
 * Nothing is dropped: a batch that waits is either stored and acked later, or its stream
 * ends and the sidecar sends it again.
 *
 * The count is the store's (Store.countPending: deliveries in state pending — waiting,
 * retrying or in flight — kept as rows change, never counted with a query) less those of
 * paused and disabled endpoints (HeldDeliveries: held, not moving, so one paused
 * endpoint's backlog never stops ingest for everyone), read before every batch while
 * flowing and polled while paused. A stream handles one batch at a time,
 * so batches admitted just before the bound was reached can pass it by at most one batch
 * per connected sidecar, times the endpoints each of its events goes to.
 */

export interface BackpressureOptions {
  /** delivery.queue_size. */
  queueSize: number;
  countPending(): Promise<number>;
  logger: Logger;
  /** How often a paused ingest reads the count; default 200 ms. */
  pollEveryMs?: number;
}

export interface BackpressureState {
  pending: number;
  queueSize: number;
  resumeBelow: number;
}

export interface BackpressureMetrics {
  paused: boolean;
  /** Times ingest paused since start. */
  pauses: number;
  /** Batches waiting now. */
  waitingBatches: number;
  /** Time spent paused, ended pauses and the current one. */
  pausedMs: number;
}

/** The low-water mark: 90 % of the bound, so a queue hovering at the bound does not flap. */
export function resumeBelowFor(queueSize: number): number {
  return Math.max(1, Math.floor(queueSize * 0.9));
}

interface Waiter {
  resolve(): void;
  reject(reason: unknown): void;
}

export class IngestBackpressure {
  readonly queueSize: number;
  readonly resumeBelow: number;
  private readonly options: BackpressureOptions;
  private readonly pollEveryMs: number;
  private pending = 0;
  private reading: Promise<number> | undefined;
  private pausedAt: number | undefined;
  private pausedMsBefore = 0;
  private pauses = 0;
  private readonly waiters = new Set<Waiter>();
  private poller: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: BackpressureOptions) {
    if (!Number.isInteger(options.queueSize) || options.queueSize < 1) {
      throw new RangeError(`delivery.queue_size must be a positive integer, got ${options.queueSize}`);
    }
    this.options = options;
    this.queueSize = options.queueSize;
    this.resumeBelow = resumeBelowFor(options.queueSize);
    this.pollEveryMs = options.pollEveryMs ?? 200;
  }

  get paused(): boolean {
    return this.pausedAt !== undefined;
  }

  state(): BackpressureState {
    return { pending: this.pending, queueSize: this.queueSize, resumeBelow: this.resumeBelow };
  }

  metrics(): BackpressureMetrics {
    const current = this.pausedAt === undefined ? 0 : performance.now() - this.pausedAt;
    return {
      paused: this.paused,
      pauses: this.pauses,
      waitingBatches: this.waiters.size,
      pausedMs: this.pausedMsBefore + current,
    };
  }

  /**
   * Resolves when a batch may be stored; while ingest is paused, waits for the queue to
   * drain, calling `onWait` at once and every `remindEveryMs` meanwhile (the stream tells
   * its sidecar why the ack is late). Rejects with the signal's reason when it aborts.
   */
  async admit(signal: AbortSignal, onWait?: (state: BackpressureState) => void, remindEveryMs = 5_000): Promise<void> {
    if (this.closed) return;
    if (!this.paused) {
      // A count that cannot be read pauses nothing: the store's own write decides then.
      const pending = await this.read().catch(() => 0);
      if (pending >= this.queueSize && !this.paused) this.pause();
    }
    if (!this.paused) return;
    signal.throwIfAborted();
    const reminder = onWait ? setInterval(() => onWait(this.state()), remindEveryMs).unref() : undefined;
    try {
      onWait?.(this.state());
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          resolve: () => {
            signal.removeEventListener("abort", onAbort);
            resolve();
          },
          reject,
        };
        const onAbort = () => {
          this.waiters.delete(waiter);
          reject(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        this.waiters.add(waiter);
      });
    } finally {
      clearInterval(reminder);
    }
  }

  /** Lets every waiting batch go (shutdown: their streams are ending anyway). */
  close(): void {
    this.closed = true;
    clearTimeout(this.poller);
    this.release();
  }

  private read(): Promise<number> {
    this.reading ??= this.options.countPending().then(
      (pending) => {
        this.reading = undefined;
        this.pending = pending;
        return pending;
      },
      (err: unknown) => {
        this.reading = undefined;
        throw err;
      },
    );
    return this.reading;
  }

  private pause(): void {
    this.pausedAt = performance.now();
    this.pauses++;
    this.options.logger.warn(
      {
        code: "AIGW_INGEST_PAUSED",
        pending: this.pending,
        queueSize: this.queueSize,
        resumeBelow: this.resumeBelow,
      },
      "ingest paused: delivery.queue_size deliveries are pending; sidecars keep their events in their spools until the queue drains",
    );
    this.schedulePoll();
  }

  private schedulePoll(): void {
    this.poller = setTimeout(() => {
      this.poller = undefined;
      if (this.closed) return;
      this.read().then(
        (pending) => {
          if (pending < this.resumeBelow) this.resume();
          else this.schedulePoll();
        },
        (err: unknown) => {
          this.options.logger.error({ err }, "reading the pending delivery count failed; ingest stays paused");
          this.schedulePoll();
        },
      );
    }, this.pollEveryMs);
    this.poller.unref();
  }

  private resume(): void {
    const pausedMs = this.pausedAt === undefined ? 0 : performance.now() - this.pausedAt;
    this.pausedMsBefore += pausedMs;
    this.pausedAt = undefined;
    this.options.logger.info(
      { pending: this.pending, resumeBelow: this.resumeBelow, pausedMs: Math.round(pausedMs) },
      "ingest resumed: the delivery queue drained below its low-water mark",
    );
    this.release();
  }

  private release(): void {
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const w of waiting) w.resolve();
  }
}

/**
 * Pending deliveries of paused or disabled endpoints (Store.countHeld). Counting them walks
 * their rows, so the count is read again at most every `minEveryMs`, and no more often than
 * 50 times what the last read took (at most ~2 % of the time spent counting, however large
 * a paused endpoint's backlog grows); pausing, resuming or disabling reads it afresh.
 */
export class HeldDeliveries {
  private value = 0;
  private readAt = Number.NEGATIVE_INFINITY;
  private costMs = 0;
  private reading: Promise<number> | undefined;

  constructor(
    private readonly countHeld: () => Promise<number>,
    private readonly minEveryMs = 1_000,
  ) {}

  /** Endpoints were paused, resumed, enabled or disabled: the next get() counts again. */
  invalidate(): void {
    this.readAt = Number.NEGATIVE_INFINITY;
  }

  get(): Promise<number> {
    if (performance.now() - this.readAt < Math.max(this.minEveryMs, 50 * this.costMs)) {
      return Promise.resolve(this.value);
    }
    this.reading ??= (async () => {
      const started = performance.now();
      try {
        this.value = await this.countHeld();
        this.readAt = performance.now();
        this.costMs = this.readAt - started;
        return this.value;
      } finally {
        this.reading = undefined;
      }
    })();
    return this.reading;
  }
}
