import { type IntervalHistogram, monitorEventLoopDelay } from "node:perf_hooks";

/** Event-loop delay percentiles in milliseconds. */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
}

/**
 * Node's event-loop delay histogram, read as a delay. `monitorEventLoopDelay` records the time
 * between the runs of its timer, its resolution included: an idle loop sampled every 20 ms
 * reads p99 20.1 ms. What the loop was late by is that time less the resolution.
 */
export class LoopDelayMonitor {
  private readonly histogram: IntervalHistogram;

  constructor(readonly resolutionMs: number) {
    this.histogram = monitorEventLoopDelay({ resolution: resolutionMs });
  }

  enable(): void {
    this.histogram.enable();
  }

  /** The delays since the last reset (zeros before the first sample). */
  read(): LoopDelay {
    const h = this.histogram;
    if (h.count === 0) return { p50: 0, p99: 0, max: 0 };
    const late = (ns: number) => Math.max(0, ns / 1e6 - this.resolutionMs);
    return { p50: late(h.percentile(50)), p99: late(h.percentile(99)), max: late(h.max) };
  }

  reset(): void {
    this.histogram.reset();
  }

  disable(): void {
    this.histogram.disable();
  }
}
