import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { webhookBody } from "../../common/webhook-body.js";

const base = {
  id: "evt_01JDZ3Q4W8X2B7M5N9P0R6S1TV",
  orgId: "org_123",
  app: "checkout",
  provider: "openai",
  time: timestampFromMs(Date.UTC(2024, 0, 15, 10, 30, 0)),
};

// The exact bytes receivers get (and that are signed): the product page's payloads plus
// id, org_id, app and provider, in a fixed field order.
describe("webhookBody", () => {
  it("renders a completion as the product page's payload plus aigw's fields", () => {
    const body = webhookBody(
      create(EventSchema, {
        ...base,
        payload: {
          case: "completion",
          value: {
            requestId: "req_abc123",
            model: "gpt-4",
            tokensUsed: 1250,
            promptTokens: 1000,
            completionTokens: 250,
            costUsd: 0.045,
            latencyMs: 2340,
            statusCode: 200,
          },
        },
      }),
    );
    expect(JSON.stringify(body)).toBe(
      '{"event":"completion","id":"evt_01JDZ3Q4W8X2B7M5N9P0R6S1TV","org_id":"org_123","app":"checkout","provider":"openai",' +
        '"request_id":"req_abc123","model":"gpt-4","tokens_used":1250,"prompt_tokens":1000,"completion_tokens":250,' +
        '"cost_usd":0.045,"latency_ms":2340,"stream":false,"status_code":200,"timestamp":"2024-01-15T10:30:00.000Z"}',
    );
  });

  it("renders null for absent optional fields: error retry_after, streaming finish_reason, rate_limit numbers", () => {
    const error = webhookBody(
      create(EventSchema, {
        ...base,
        payload: { case: "error", value: { requestId: "req_def456", errorType: "timeout", severity: "error" } },
      }),
    );
    expect(error.retry_after).toBeNull();
    const streaming = webhookBody(
      create(EventSchema, {
        ...base,
        payload: { case: "streaming", value: { requestId: "req_ghi789", tokenIndex: 42, content: "Hello" } },
      }),
    );
    expect(streaming).toMatchObject({ event: "streaming", token_index: 42, content: "Hello", finish_reason: null });
    const rateLimit = webhookBody(
      create(EventSchema, {
        ...base,
        payload: { case: "rateLimit", value: { requestId: "r", source: "upstream", limitType: "tokens", limit: 100n } },
      }),
    );
    expect(rateLimit).toMatchObject({ limit: 100, remaining: null, reset_at: null, retry_after: null, warning: false });
    expect(Object.keys(rateLimit).at(-1)).toBe("timestamp");
  });

  it("parses an async completion's response into the body", () => {
    const body = webhookBody(
      create(EventSchema, {
        ...base,
        payload: { case: "completion", value: { requestId: "r", responseJson: '{"object":"chat.completion"}' } },
      }),
    );
    expect(body.response).toEqual({ object: "chat.completion" });
  });
});
