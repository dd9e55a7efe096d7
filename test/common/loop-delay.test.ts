import { describe, expect, it } from "vitest";
import { LoopDelayMonitor } from "../../common/loop-delay.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("event-loop delay", () => {
  it("reads what the loop was late by, not the sampling interval (an idle loop is ~0, not 20 ms)", async () => {
    const delay = new LoopDelayMonitor(20);
    delay.enable();
    try {
      expect(delay.read()).toEqual({ p50: 0, p99: 0, max: 0 });
      await sleep(400);
      const idle = delay.read();
      // Node's histogram alone reads ≥ 20 ms here: its timer's interval.
      expect(idle.p50).toBeGreaterThanOrEqual(0);
      expect(idle.p50).toBeLessThan(20);
      // A synchronous stretch of 150 ms makes the loop that late.
      const until = performance.now() + 150;
      while (performance.now() < until) {
        // blocked, as a long synchronous task would
      }
      await sleep(100);
      expect(delay.read().max).toBeGreaterThanOrEqual(120);
      delay.reset();
      expect(delay.read()).toEqual({ p50: 0, p99: 0, max: 0 });
    } finally {
      delay.disable();
    }
  });
});
