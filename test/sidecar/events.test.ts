import { describe, expect, it } from "vitest";
import { webhookBody } from "../../common/webhook-body.js";
import { classifyStatus, errorEvent, NETWORK_ERROR, retryAfterSeconds } from "../../sidecar/proxy/events.js";

describe("error classification", () => {
  it("maps statuses to error types and severities", () => {
    expect(classifyStatus(429)).toEqual({ errorType: "rate_limit", severity: "warning" });
    expect(classifyStatus(529)).toEqual({ errorType: "rate_limit", severity: "error" });
    expect(classifyStatus(401)).toEqual({ errorType: "authentication", severity: "error" });
    expect(classifyStatus(403)).toEqual({ errorType: "authentication", severity: "error" });
    for (const s of [400, 404, 409, 413, 422])
      expect(classifyStatus(s)).toEqual({ errorType: "invalid_request", severity: "warning" });
    expect(classifyStatus(408)).toEqual({ errorType: "timeout", severity: "error" });
    expect(classifyStatus(504)).toEqual({ errorType: "timeout", severity: "error" });
    for (const s of [500, 502, 503])
      expect(classifyStatus(s)).toEqual({ errorType: "upstream_error", severity: "error" });
  });

  it("reads retry-after in seconds, as an HTTP date, and OpenAI's retry-after-ms", () => {
    const now = Date.parse("2024-01-15T10:35:00Z");
    expect(retryAfterSeconds("60", undefined, now)).toBe(60);
    expect(retryAfterSeconds("1.2", undefined, now)).toBe(2);
    expect(retryAfterSeconds("Mon, 15 Jan 2024 10:35:30 GMT", undefined, now)).toBe(30);
    expect(retryAfterSeconds("Mon, 15 Jan 2024 10:30:00 GMT", undefined, now)).toBe(0);
    expect(retryAfterSeconds("60", "1500", now)).toBe(2);
    expect(retryAfterSeconds("soon", undefined, now)).toBeUndefined();
    expect(retryAfterSeconds(undefined, undefined, now)).toBeUndefined();
  });

  it("builds the product page's error payload", () => {
    const event = errorEvent(
      { orgId: "org_1", app: "app", provider: "openai" },
      {
        requestId: "req_def456",
        errorClass: NETWORK_ERROR,
        errorMessage: "upstream unreachable",
        statusCode: 0,
        retryAfter: undefined,
        model: "gpt-4",
        path: "/v1/chat/completions",
        latencyMs: 12.6,
      },
    );
    expect(webhookBody(event)).toMatchObject({
      event: "error",
      request_id: "req_def456",
      error_type: "network",
      error_message: "upstream unreachable",
      retry_after: null,
      severity: "critical",
      provider: "openai",
    });
    expect(event.id).toMatch(/^evt_/);
  });
});
