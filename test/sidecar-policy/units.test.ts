import { describe, expect, it } from "vitest";
import { secondsToPeriodEnd } from "../../sidecar/policy/budget-guard.js";
import { MinuteBucket } from "../../sidecar/policy/minute-bucket.js";
import { errorFormatFor, providerErrorBody } from "../../sidecar/policy/provider-errors.js";
import { readRequestDirectives, stripDirectiveHeaders } from "../../sidecar/policy/request-directives.js";
import { contentDeltas } from "../../sidecar/async/stream-progress.js";

describe("request directives", () => {
  it("finds respond-async among other preferences and ignores requests without directives", () => {
    expect(readRequestDirectives(["Content-Type", "application/json", "Authorization", "Bearer x"])).toBeUndefined();
    expect(readRequestDirectives(["Prefer", "return=minimal"])).toBeUndefined();
    expect(readRequestDirectives(["PREFER", "wait=5, Respond-Async"])?.respondAsync).toBe(true);
    expect(readRequestDirectives(["prefer", "respond-asynchronously"])).toBeUndefined();
  });

  it("keeps only the preferences the sidecar does not honour itself, and drops the webhook URL", () => {
    const headers = [
      "prefer",
      "respond-async, wait=10, return=minimal",
      "x-aigw-webhook-url",
      "https://a.example",
      "x-b",
      "1",
    ];
    stripDirectiveHeaders(headers);
    expect(headers).toEqual(["prefer", "return=minimal", "x-b", "1"]);
    const only = ["Prefer", "respond-async"];
    stripDirectiveHeaders(only);
    expect(only).toEqual([]);
  });

  it("refuses two different webhook URLs on one request", () => {
    const d = readRequestDirectives([
      "x-aigw-webhook-url",
      "https://a.example",
      "x-aigw-webhook-url",
      "https://b.example",
    ]);
    expect(d?.webhookUrlProblem).toMatch(/twice/);
  });
});

describe("minute bucket", () => {
  it("admits a burst of its limit, then one unit per limit/60 s", () => {
    const bucket = new MinuteBucket(60, 0);
    for (let i = 0; i < 60; i++) {
      expect(bucket.has(1, 0)).toBe(true);
      bucket.take(1, 0);
    }
    expect(bucket.has(1, 0)).toBe(false);
    expect(bucket.msUntil(1, 0)).toBe(1000);
    expect(bucket.has(1, 999)).toBe(false);
    expect(bucket.has(1, 1000)).toBe(true);
  });

  it("keeps what was used when its limit changes", () => {
    const bucket = new MinuteBucket(10, 0);
    bucket.take(8, 0);
    bucket.setLimit(20, 0);
    expect(bucket.msUntil(12, 0)).toBe(0);
    expect(bucket.has(13, 0)).toBe(false);
    bucket.setLimit(5, 0);
    expect(bucket.has(1, 0)).toBe(false);
  });

  it("bounds the debt of a huge call to one more minute", () => {
    const bucket = new MinuteBucket(100, 0);
    bucket.take(1_000_000, 0);
    expect(bucket.msUntil(1, 0)).toBe(60_600);
  });
});

describe("provider error formats", () => {
  it("uses Anthropic's shape on /v1/messages only", () => {
    expect(errorFormatFor("/v1/messages")).toBe("anthropic");
    expect(errorFormatFor("/v1/chat/completions")).toBe("openai");
    const error = {
      message: "m",
      openAiType: "requests",
      code: "rate_limit_exceeded",
      param: null,
      anthropicType: "rate_limit_error",
    };
    expect(JSON.parse(providerErrorBody("anthropic", error).toString())).toEqual({
      type: "error",
      error: { type: "rate_limit_error", message: "m" },
    });
    expect(JSON.parse(providerErrorBody("openai", error).toString())).toEqual({
      error: { message: "m", type: "requests", param: null, code: "rate_limit_exceeded" },
    });
  });
});

describe("budget periods", () => {
  it("end at the next UTC midnight or first of the month", () => {
    const now = new Date("2026-11-27T23:00:00Z");
    expect(secondsToPeriodEnd("daily", now)).toBe(3600);
    expect(secondsToPeriodEnd("monthly", now)).toBe(3600 + 3 * 86_400);
    expect(secondsToPeriodEnd("weekly", now)).toBeUndefined();
  });
});

describe("stream progress", () => {
  it("counts content deltas of OpenAI, Responses and Anthropic streams", () => {
    const sse = (data: unknown) => ({ event: "message", data: JSON.stringify(data) });
    expect(contentDeltas(sse({ choices: [{ delta: { content: "Hi" } }] }))).toBe(1);
    expect(contentDeltas(sse({ choices: [{ delta: { role: "assistant", content: "" } }] }))).toBe(0);
    expect(contentDeltas(sse({ choices: [{ text: "Hi" }] }))).toBe(1);
    expect(contentDeltas(sse({ type: "response.output_text.delta", delta: "Hi" }))).toBe(1);
    expect(contentDeltas(sse({ type: "content_block_delta", delta: { type: "text_delta", text: "Hi" } }))).toBe(1);
    expect(contentDeltas({ event: "message", data: "[DONE]" })).toBe(0);
    expect(contentDeltas({ event: "message", data: "{not json delta" })).toBe(0);
  });
});
