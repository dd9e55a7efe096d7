import { describe, expect, it } from "vitest";
import { CircuitBreaker } from "../../control-plane/delivery/circuit-breaker.js";

describe("CircuitBreaker", () => {
  it("opens after the threshold of consecutive failures, half-opens after the cooldown, closes on success", () => {
    const breaker = new CircuitBreaker({ threshold: 3, cooldownMs: 1000 });
    expect(breaker.recordFailure("a", 0)).toBe(false);
    expect(breaker.recordFailure("a", 10)).toBe(false);
    expect(breaker.state("a", 10)).toBe("closed");
    expect(breaker.recordFailure("a", 20)).toBe(true);
    expect(breaker.state("a", 20)).toBe("open");
    expect(breaker.allowance("a", 500, 4)).toBe(0);
    expect(breaker.nextTransitionAt(500)).toBe(1020);

    // Half-open: exactly one trial.
    expect(breaker.state("a", 1020)).toBe("half_open");
    expect(breaker.allowance("a", 1020, 4)).toBe(1);
    breaker.attemptStarted("a", 1020);
    expect(breaker.allowance("a", 1021, 4)).toBe(0);
    expect(breaker.recordSuccess("a")).toBe(true);
    expect(breaker.state("a", 1030)).toBe("closed");
    expect(breaker.openEndpoints(1030)).toEqual([]);
  });

  it("a failed trial re-opens for another cooldown; a success in between resets the count", () => {
    const breaker = new CircuitBreaker({ threshold: 2, cooldownMs: 100 });
    breaker.recordFailure("b", 0);
    breaker.recordSuccess("b");
    expect(breaker.recordFailure("b", 1)).toBe(false);
    expect(breaker.recordFailure("b", 2)).toBe(true);
    breaker.attemptStarted("b", 102);
    expect(breaker.recordFailure("b", 150)).toBe(true);
    expect(breaker.state("b", 200)).toBe("open");
    expect(breaker.state("b", 250)).toBe("half_open");
    expect(breaker.openEndpoints(200)).toEqual(["b"]);
    // Other endpoints are unaffected.
    expect(breaker.state("c", 200)).toBe("closed");
  });

  // With two or more endpoints holding state, reading state while iterating
  // (an LRU cache's get moves the entry) looped forever and froze the control plane.
  it("lists open circuits of many endpoints in one pass, whatever the order of failures", () => {
    const breaker = new CircuitBreaker({ threshold: 2, cooldownMs: 1000 });
    const names = Array.from({ length: 50 }, (_, i) => `ep${i}`);
    for (const name of names) breaker.recordFailure(name, 0);
    for (const name of names.filter((_, i) => i % 2 === 0)) breaker.recordFailure(name, 1);
    // Reads in between, as the scheduler and /metrics make them.
    for (const name of names) breaker.state(name, 2);
    const open = breaker.openEndpoints(2);
    expect(open).toHaveLength(25);
    expect(new Set(open).size).toBe(25);
    expect(breaker.snapshot(2)).toHaveLength(50);
    expect(breaker.nextTransitionAt(2)).toBe(1001);
    // Half-open after the cooldown: still listed, each once.
    expect(breaker.openEndpoints(1500).sort()).toEqual(open.sort());
  });

  it("keeps an open circuit however many endpoints fail (state is never evicted); prune drops only stale closed ones", () => {
    const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 60_000 });
    breaker.recordFailure("dead", 0);
    for (let i = 0; i < 20_000; i++) {
      breaker.recordFailure(`flaky${i}`, 0);
      breaker.recordSuccess(`flaky${i}`);
    }
    expect(breaker.state("dead", 10)).toBe("open");
    const pruning = new CircuitBreaker({ threshold: 3, cooldownMs: 1000 });
    pruning.recordFailure("old", 0);
    pruning.recordFailure("recent", 9_000);
    pruning.recordFailure("open", 0);
    pruning.recordFailure("open", 0);
    pruning.recordFailure("open", 0);
    pruning.prune(10_000, 5_000);
    expect(
      pruning
        .snapshot(10_000)
        .map((c) => c.endpoint)
        .sort(),
    ).toEqual(["open", "recent"]);
    pruning.forget("open");
    expect(pruning.state("open", 10_000)).toBe("closed");
    expect(pruning.size).toBe(1);
  });

  it("a trial that ended without a verdict lets another trial start", () => {
    const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 100 });
    breaker.recordFailure("t", 0);
    breaker.attemptStarted("t", 100);
    expect(breaker.allowance("t", 101, 4)).toBe(0);
    breaker.trialAbandoned("t");
    expect(breaker.allowance("t", 101, 4)).toBe(1);
  });
});
