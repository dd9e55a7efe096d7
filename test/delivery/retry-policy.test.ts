import { describe, expect, it } from "vitest";
import type { RetryConfig } from "../../control-plane/config/types.js";
import {
  type AttemptResult,
  backoffDelayMs,
  classifyAttempt,
  decideOutcome,
  describeAttempt,
  MAX_RETRY_AFTER_MS,
  nextAttemptDelayMs,
  parseRetryAfter,
} from "../../control-plane/delivery/retry-policy.js";

const retry: RetryConfig = {
  maxAttempts: 5,
  backoffMultiplier: 2,
  initialDelayMs: 1000,
  maxDelayMs: 60_000,
  retryableStatusCodes: [408, 429, 500, 502, 503],
  jitter: 0.2,
};

const result = (over: Partial<AttemptResult>): AttemptResult => ({
  statusCode: 0,
  latencyMs: 5,
  error: "",
  responseBody: "",
  timedOut: false,
  networkError: false,
  refused: false,
  ...over,
});

describe("retry schedule", () => {
  it("grows exponentially from initial_delay_ms and caps at max_delay_ms (no jitter)", () => {
    const noJitter = { ...retry, jitter: 0 };
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelayMs(noJitter, a))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000,
    ]);
  });

  it("jitter only shortens a delay, by at most the configured share", () => {
    expect(backoffDelayMs(retry, 3, () => 0)).toBe(4000);
    expect(backoffDelayMs(retry, 3, () => 0.999999)).toBe(3200);
    expect(backoffDelayMs(retry, 10, () => 0.5)).toBe(54_000);
    for (let i = 0; i < 1000; i++) {
      const d = backoffDelayMs(retry, 2);
      expect(d).toBeGreaterThanOrEqual(1600);
      expect(d).toBeLessThanOrEqual(2000);
    }
  });

  it("honours Retry-After as a floor, bounded at one hour", () => {
    expect(nextAttemptDelayMs(retry, 1, 30_000, () => 0)).toBe(30_000);
    expect(nextAttemptDelayMs(retry, 1, 10, () => 0)).toBe(1000);
    expect(nextAttemptDelayMs(retry, 1, 10 * 3_600_000, () => 0)).toBe(MAX_RETRY_AFTER_MS);
  });

  it("parses Retry-After seconds and HTTP dates; ignores garbage", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("99999999999999999999", now)).toBe(MAX_RETRY_AFTER_MS);
    for (const bad of [undefined, "", "soon", "-5", "1.5", "5 minutes"])
      expect(parseRetryAfter(bad, now)).toBeUndefined();
  });
});

describe("attempt classification", () => {
  it("follows DESIGN.md: 2xx delivered, listed codes/timeouts/network retried, 410 gone, the rest fatal", () => {
    expect(classifyAttempt(result({ statusCode: 200 }), retry)).toBe("delivered");
    expect(classifyAttempt(result({ statusCode: 204 }), retry)).toBe("delivered");
    for (const s of [408, 429, 500, 502, 503])
      expect(classifyAttempt(result({ statusCode: s }), retry)).toBe("retryable");
    expect(classifyAttempt(result({ timedOut: true }), retry)).toBe("retryable");
    expect(classifyAttempt(result({ networkError: true }), retry)).toBe("retryable");
    expect(classifyAttempt(result({ statusCode: 410 }), retry)).toBe("gone");
    // Unlisted 5xx fail at once: the list is the operator's definition of retryable.
    for (const s of [400, 401, 404, 422, 301, 302, 307, 308, 504, 501]) {
      expect(classifyAttempt(result({ statusCode: s }), retry), String(s)).toBe("fatal");
    }
    expect(classifyAttempt(result({ refused: true, error: "private address" }), retry)).toBe("fatal");
  });

  it("decides the delivery's next state, dead-lettering with failover when attempts run out", () => {
    const ctx = { now: 1_000_000, failoverTo: "backup", endpoint: "primary", random: () => 0 };
    expect(decideOutcome(result({ statusCode: 503 }), retry, { ...ctx, attempt: 1 })).toEqual({
      status: "retry",
      nextAttemptAt: 1_001_000,
    });
    expect(decideOutcome(result({ statusCode: 429, retryAfterMs: 7000 }), retry, { ...ctx, attempt: 2 })).toEqual({
      status: "retry",
      nextAttemptAt: 1_007_000,
    });
    expect(decideOutcome(result({ statusCode: 503 }), retry, { ...ctx, attempt: 5 })).toEqual({
      status: "dead_lettered",
      failoverTo: "backup",
    });
    expect(decideOutcome(result({ networkError: true }), retry, { ...ctx, failoverTo: "", attempt: 5 })).toEqual({
      status: "dead_lettered",
    });
    expect(decideOutcome(result({ statusCode: 400 }), retry, { ...ctx, attempt: 1 })).toEqual({ status: "failed" });
    expect(decideOutcome(result({ statusCode: 200 }), retry, { ...ctx, attempt: 5 })).toEqual({ status: "delivered" });
    const gone = decideOutcome(result({ statusCode: 410 }), retry, { ...ctx, attempt: 1 });
    expect(gone.status).toBe("endpoint_gone");
    expect(gone.status === "endpoint_gone" && gone.reason).toMatch(/410.*primary/);
  });

  it("describes attempts for last_error", () => {
    expect(describeAttempt(result({ statusCode: 302 }))).toBe("receiver answered 302 (redirect not followed)");
    expect(describeAttempt(result({ statusCode: 503 }))).toBe("receiver answered 503");
    expect(describeAttempt(result({ statusCode: 200 }))).toBe("");
    expect(describeAttempt(result({ error: "connect ECONNREFUSED 127.0.0.1:9" }))).toBe(
      "connect ECONNREFUSED 127.0.0.1:9",
    );
  });
});
