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
    expect(breaker.canAttempt("a", 500)).toBe(false);
    expect(breaker.allowance("a", 500, 4)).toBe(0);
    expect(breaker.nextTransitionAt(500)).toBe(1020);

    // Half-open: exactly one trial.
    expect(breaker.state("a", 1020)).toBe("half_open");
    expect(breaker.allowance("a", 1020, 4)).toBe(1);
    expect(breaker.canAttempt("a", 1020)).toBe(true);
    breaker.attemptStarted("a", 1020);
    expect(breaker.canAttempt("a", 1021)).toBe(false);
    breaker.recordSuccess("a");
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
});
