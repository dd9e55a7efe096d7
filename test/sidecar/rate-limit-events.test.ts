import Anthropic from "@anthropic-ai/sdk";
import type { APIError } from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import {
  afterDuration,
  ProviderRateLimits,
  rateLimitsOfResponse,
  readRateLimitHeaders,
} from "../../sidecar/proxy/provider-rate-limits.js";
import { type ProviderHarness, payloads, startProviderHarness, waitForPayloads } from "./provider-harness.js";

const CHAT = { model: "gpt-4o", messages: [{ role: "user" as const, content: "Say hello" }] };
const MESSAGE = {
  model: "claude-haiku-4-5",
  max_tokens: 64,
  messages: [{ role: "user" as const, content: "Say hello" }],
};
const RATE_LIMITED = new Set([EventType.COMPLETION, EventType.ERROR, EventType.RATE_LIMIT]);

let h: ProviderHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** OpenAI remaining-requests of 100 as the provider states it. */
const openAiRemaining = (remaining: number) => ({
  "x-mock-ratelimit-limit-requests": "100",
  "x-mock-ratelimit-remaining-requests": String(remaining),
  "x-mock-ratelimit-reset-requests": "6m0s",
});

describe("rate_limit events from the provider", () => {
  it("reports a 429 with OpenAI headers as a rate_limit hit on the exhausted limit, and as an error", async () => {
    h = await startProviderHarness({ settings: { wantedEventTypes: RATE_LIMITED } });
    const before = Date.now();
    const err = await h.openai.chat.completions
      .create(CHAT, {
        headers: {
          "x-mock-status": "429",
          "x-mock-retry-after": "7",
          "x-mock-ratelimit-limit-requests": "500",
          "x-mock-ratelimit-remaining-requests": "120",
          "x-mock-ratelimit-reset-requests": "1s",
          "x-mock-ratelimit-limit-tokens": "30000",
          "x-mock-ratelimit-remaining-tokens": "0",
          "x-mock-ratelimit-reset-tokens": "6m0s",
        },
      })
      .catch((e: unknown) => e);
    expect((err as APIError).status).toBe(429);
    const [rateLimit] = await waitForPayloads(h.sink, "rateLimit", 1);
    const [error] = await waitForPayloads(h.sink, "error", 1);
    expect(rateLimit).toMatchObject({
      source: "upstream",
      limitType: "tokens",
      limit: 30000n,
      remaining: 0n,
      retryAfter: 7,
      statusCode: 429,
      warning: false,
      requestId: error!.requestId,
    });
    const resetAt = Date.parse(rateLimit!.resetAt);
    expect(resetAt).toBeGreaterThanOrEqual(before + 360_000);
    expect(resetAt).toBeLessThanOrEqual(Date.now() + 360_000);
    expect(error).toMatchObject({ errorType: "rate_limit", statusCode: 429, retryAfter: 7 });
    // The requests limit was at 24%: no warning beside the hit.
    expect(payloads(h.sink, "rateLimit")).toHaveLength(1);
  });

  it("reports a bare 429 against the requests limit", async () => {
    h = await startProviderHarness({ settings: { wantedEventTypes: RATE_LIMITED } });
    await h.openai.chat.completions.create(CHAT, { headers: { "x-mock-status": "429" } }).catch(() => {});
    const [rateLimit] = await waitForPayloads(h.sink, "rateLimit", 1);
    expect(rateLimit).toMatchObject({ limitType: "requests", remaining: 0n, statusCode: 429, resetAt: "" });
    expect(rateLimit!.limit).toBeUndefined();
    expect(rateLimit!.retryAfter).toBeUndefined();
  });

  it("warns once while remaining stays low, and again after it recovered", async () => {
    h = await startProviderHarness({ settings: { wantedEventTypes: RATE_LIMITED, rateLimitWarningShare: 0.1 } });
    const call = async (remaining: number, done: number) => {
      await h!.openai.chat.completions.create(CHAT, { headers: openAiRemaining(remaining) });
      await waitForPayloads(h!.sink, "completion", done);
    };
    await call(50, 1);
    expect(payloads(h.sink, "rateLimit")).toHaveLength(0);
    for (const [i, remaining] of [9, 8, 5, 3, 9].entries()) await call(remaining, 2 + i);
    const warnings = payloads(h.sink, "rateLimit");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      source: "upstream",
      limitType: "requests",
      limit: 100n,
      remaining: 9n,
      warning: true,
      statusCode: 200,
      requestId: payloads(h.sink, "completion")[1]!.requestId,
    });
    expect(Date.parse(warnings[0]!.resetAt)).toBeGreaterThan(Date.now() + 300_000);

    await call(60, 7);
    expect(payloads(h.sink, "rateLimit")).toHaveLength(1);
    await call(4, 8);
    await call(2, 9);
    const after = payloads(h.sink, "rateLimit");
    expect(after).toHaveLength(2);
    expect(after[1]).toMatchObject({ remaining: 4n, warning: true });
  });

  it("keeps each upstream's limits apart", async () => {
    h = await startProviderHarness({ settings: { wantedEventTypes: RATE_LIMITED } });
    const low = {
      "x-mock-anthropic-ratelimit-tokens-limit": "10000",
      "x-mock-anthropic-ratelimit-tokens-remaining": "200",
      "x-mock-anthropic-ratelimit-tokens-reset": "2030-01-01T00:00:30Z",
    };
    await h.anthropic.messages.create(MESSAGE, { headers: low });
    await h.anthropic.messages.stream(MESSAGE, { headers: low }).finalMessage();
    await h.openai.chat.completions.create(CHAT, {
      headers: {
        "x-mock-ratelimit-limit-tokens": "10000",
        "x-mock-ratelimit-remaining-tokens": "200",
      },
    });
    await waitForPayloads(h.sink, "completion", 3);
    const warnings = h.sink.events.filter((e) => e.payload.case === "rateLimit");
    expect(warnings.map((e) => e.provider)).toEqual(["anthropic", "openai"]);
    expect(payloads(h.sink, "rateLimit")[0]).toMatchObject({
      limitType: "tokens",
      limit: 10000n,
      remaining: 200n,
      resetAt: "2030-01-01T00:00:30.000Z",
      warning: true,
    });
  });

  it("reports an Anthropic 429 on its exhausted limit and a 529 as overloaded", async () => {
    h = await startProviderHarness({ settings: { wantedEventTypes: RATE_LIMITED } });
    const err = await h.anthropic.messages
      .create(MESSAGE, {
        headers: {
          "x-mock-status": "429",
          "x-mock-retry-after": "12",
          "x-mock-anthropic-ratelimit-requests-limit": "50",
          "x-mock-anthropic-ratelimit-requests-remaining": "31",
          "x-mock-anthropic-ratelimit-input-tokens-limit": "40000",
          "x-mock-anthropic-ratelimit-input-tokens-remaining": "0",
          "x-mock-anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:01:00Z",
        },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    await h.anthropic.messages.create(MESSAGE, { headers: { "x-mock-status": "529" } }).catch(() => {});
    const limits = await waitForPayloads(h.sink, "rateLimit", 2);
    expect(limits[0]).toMatchObject({
      limitType: "input_tokens",
      limit: 40000n,
      remaining: 0n,
      resetAt: "2030-01-01T00:01:00.000Z",
      retryAfter: 12,
      statusCode: 429,
      warning: false,
    });
    expect(limits[1]).toMatchObject({ limitType: "requests", remaining: 0n, statusCode: 529, warning: false });
    const errors = await waitForPayloads(h.sink, "error", 2);
    expect(errors.map((e) => [e.statusCode, e.errorType, e.severity])).toEqual([
      [429, "rate_limit", "warning"],
      [529, "rate_limit", "error"],
    ]);
  });

  it("builds none when no subscription wants them", async () => {
    h = await startProviderHarness({
      settings: { wantedEventTypes: new Set([EventType.COMPLETION, EventType.ERROR]) },
    });
    await h.openai.chat.completions.create(CHAT, { headers: openAiRemaining(1) });
    await h.openai.chat.completions.create(CHAT, { headers: { "x-mock-status": "429" } }).catch(() => {});
    await waitForPayloads(h.sink, "error", 1);
    expect(payloads(h.sink, "rateLimit")).toHaveLength(0);
  });
});

describe("provider rate-limit headers", () => {
  const now = Date.parse("2026-01-15T10:00:00Z");

  it("reads OpenAI durations", () => {
    expect(afterDuration("6m0s", now)).toBe(now + 360_000);
    expect(afterDuration("1s", now)).toBe(now + 1000);
    expect(afterDuration("20ms", now)).toBe(now + 20);
    expect(afterDuration("1h2m3.5s", now)).toBe(now + 3_723_500);
    expect(afterDuration("0.5s", now)).toBe(now + 500);
    for (const bad of ["", "soon", "5", "1x", "1s garbage", "-1s"])
      expect(afterDuration(bad, now), bad).toBeUndefined();
  });

  it("reads both families and skips what it cannot read", () => {
    const limits = readRateLimitHeaders(
      [
        "X-RateLimit-Limit-Requests",
        "60",
        "x-ratelimit-remaining-requests",
        "59",
        "x-ratelimit-reset-requests",
        "1s",
        "x-ratelimit-remaining-tokens",
        "lots",
        "anthropic-ratelimit-output-tokens-limit",
        "8000",
        "anthropic-ratelimit-output-tokens-remaining",
        "7000",
        "anthropic-ratelimit-output-tokens-reset",
        "2026-01-15T10:00:05Z",
        "anthropic-ratelimit-unified-status",
        "allowed",
        "content-type",
        "application/json",
      ],
      now,
    );
    expect(limits).toEqual([
      { kind: "requests", limit: 60, remaining: 59, resetAt: now + 1000 },
      { kind: "tokens", limit: undefined, remaining: undefined, resetAt: undefined },
      { kind: "output_tokens", limit: 8000, remaining: 7000, resetAt: now + 5000 },
    ]);
  });

  it("re-arms the warning when the reset time it was given has passed", () => {
    const tracker = new ProviderRateLimits();
    const observe = (remaining: number, at: number) =>
      rateLimitsOfResponse(tracker, {
        upstream: "openai",
        requestId: "req_1",
        status: 200,
        headers: [
          "x-ratelimit-limit-requests",
          "100",
          "x-ratelimit-remaining-requests",
          String(remaining),
          "x-ratelimit-reset-requests",
          "10s",
        ],
        warningShare: 0.2,
        now: at,
      });
    expect(observe(10, now)).toHaveLength(1);
    expect(observe(5, now + 5_000)).toHaveLength(0);
    // Past the first warning's reset (now + 10 s) and still low: a new window, a new warning.
    expect(observe(5, now + 11_000)).toHaveLength(1);
    expect(observe(5, now + 12_000)).toHaveLength(0);
    // Another upstream has its own state.
    expect(
      rateLimitsOfResponse(tracker, {
        upstream: "groq",
        requestId: "req_2",
        status: 200,
        headers: ["x-ratelimit-limit-requests", "100", "x-ratelimit-remaining-requests", "1"],
        warningShare: 0.2,
        now,
      }),
    ).toHaveLength(1);
  });

  it("does not warn right after a 429 on the same limit", () => {
    const tracker = new ProviderRateLimits();
    const hit = rateLimitsOfResponse(tracker, {
      upstream: "openai",
      requestId: "req_1",
      status: 429,
      headers: ["retry-after", "30"],
      warningShare: 0.1,
      now,
    });
    expect(hit).toEqual([expect.objectContaining({ limitType: "requests", resetAt: now + 30_000, warning: false })]);
    const low = rateLimitsOfResponse(tracker, {
      upstream: "openai",
      requestId: "req_2",
      status: 200,
      headers: ["x-ratelimit-limit-requests", "100", "x-ratelimit-remaining-requests", "2"],
      warningShare: 0.1,
      now: now + 1000,
    });
    expect(low).toEqual([]);
  });
});
