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

  it("adds cache and reasoning tokens, known ones only, between the counts and cost_usd", () => {
    const body = webhookBody(
      create(EventSchema, {
        ...base,
        provider: "anthropic",
        payload: {
          case: "completion",
          value: {
            requestId: "req_abc123",
            model: "claude-sonnet-4-5",
            tokensUsed: 3300,
            promptTokens: 3000,
            completionTokens: 300,
            cacheReadTokens: 2048,
            cacheWriteTokens: 900,
            cacheWrite1hTokens: 0,
            costUsd: 0.0111894,
            latencyMs: 2340,
            statusCode: 200,
          },
        },
      }),
    );
    expect(JSON.stringify(body)).toBe(
      '{"event":"completion","id":"evt_01JDZ3Q4W8X2B7M5N9P0R6S1TV","org_id":"org_123","app":"checkout","provider":"anthropic",' +
        '"request_id":"req_abc123","model":"claude-sonnet-4-5","tokens_used":3300,"prompt_tokens":3000,"completion_tokens":300,' +
        '"cache_read_tokens":2048,"cache_write_tokens":900,"cache_write_1h_tokens":0,' +
        '"cost_usd":0.0111894,"latency_ms":2340,"stream":false,"status_code":200,"timestamp":"2024-01-15T10:30:00.000Z"}',
    );
    const reasoning = webhookBody(
      create(EventSchema, {
        ...base,
        payload: {
          case: "completion",
          value: { requestId: "r", tokensUsed: 30, promptTokens: 10, completionTokens: 20, reasoningTokens: 16 },
        },
      }),
    );
    expect(JSON.stringify(reasoning)).toContain('"completion_tokens":20,"reasoning_tokens":16,"cost_usd":0,');
  });

  it("says usage_known: false, and only then, for a call whose usage could not be read", () => {
    const body = webhookBody(
      create(EventSchema, {
        ...base,
        payload: {
          case: "completion",
          value: { requestId: "r", model: "gpt-4o", completionTokens: 4, tokensUsed: 4, usageUnknown: true },
        },
      }),
    );
    expect(JSON.stringify(body)).toContain(
      '"tokens_used":4,"prompt_tokens":0,"completion_tokens":4,"usage_known":false,"cost_usd":0,',
    );
    const known = webhookBody(create(EventSchema, { ...base, payload: { case: "completion", value: {} } }));
    expect(known).not.toHaveProperty("usage_known");
    expect(known).not.toHaveProperty("cache_read_tokens");
    expect(known).not.toHaveProperty("reasoning_tokens");
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
