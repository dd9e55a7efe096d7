import Anthropic from "@anthropic-ai/sdk";
import { afterEach, describe, expect, it } from "vitest";
import { anthropicAdapter, AnthropicStreamObserver } from "../../sidecar/providers/anthropic.js";
import { waitForEvents } from "./harness.js";
import {
  anthropicWithApiKeyHeader,
  type ProviderHarness,
  payloads,
  startProviderHarness,
  waitForPayloads,
} from "./provider-harness.js";

const MESSAGE = {
  model: "claude-haiku-4-5",
  max_tokens: 256,
  messages: [{ role: "user" as const, content: "Say hello" }],
};
const USAGE_HEADERS = {
  "x-mock-prompt-tokens": "25",
  "x-mock-completion-tokens": "40",
  "x-mock-cache-read-tokens": "7",
  "x-mock-cache-creation-tokens": "3",
};

let h: ProviderHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("Anthropic Messages through the sidecar, with @anthropic-ai/sdk", () => {
  it("answers a plain message as the provider does and reports its usage", async () => {
    h = await startProviderHarness();
    const viaProxy = await h.anthropic.messages.create(MESSAGE, { headers: USAGE_HEADERS }).withResponse();
    const direct = await anthropicWithApiKeyHeader(h.mocks.anthropic!.url, "sk-ant-test").messages.create(MESSAGE, {
      headers: USAGE_HEADERS,
    });
    expect(viaProxy.data).toEqual(direct);
    expect(viaProxy.data.content).toEqual([{ type: "text", text: "Hello Hello Hello Hello Hello" }]);
    const requestId = viaProxy.response.headers.get("x-aigw-request-id");

    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({
      event: "completion",
      provider: "anthropic",
      request_id: requestId,
      model: "claude-haiku-4-5",
      // Anthropic's input_tokens (25) leaves out the cache writes (3) and reads (7);
      // aigw's prompt_tokens holds them, as OpenAI's does, and reports them as its parts.
      prompt_tokens: 35,
      cache_read_tokens: 7,
      cache_write_tokens: 3,
      cache_write_1h_tokens: 0,
      completion_tokens: 40,
      tokens_used: 75,
      stream: false,
      status_code: 200,
    });
    // Only the anthropic upstream saw it; the SDK's headers arrived as sent.
    expect(h.mocks.openai!.requests).toHaveLength(0);
    const [upstream, directRequest] = h.mocks.anthropic!.requests;
    expect(upstream!.url).toBe("/v1/messages");
    expect(upstream!.headers["x-api-key"]).toBe("sk-ant-test");
    expect(upstream!.headers.authorization).toBeUndefined();
    expect(upstream!.headers["anthropic-version"]).toBe(directRequest!.headers["anthropic-version"]);
    expect(upstream!.json).toEqual(MESSAGE);
    expect(h.logs()).not.toContain("sk-ant-test");
  });

  it("passes Authorization: Bearer through untouched", async () => {
    h = await startProviderHarness();
    const message = await h.anthropicBearer.messages.create(MESSAGE);
    expect(message.stop_reason).toBe("end_turn");
    const upstream = h.mocks.anthropic!.requests[0]!;
    expect(upstream.headers.authorization).toBe("Bearer sk-ant-bearer");
    expect(upstream.headers["x-api-key"]).toBeUndefined();
    expect(h.logs()).not.toContain("sk-ant-bearer");
  });

  it("streams with messages.stream() and reports usage merged from message_start and message_delta", async () => {
    h = await startProviderHarness();
    const stream = h.anthropic.messages.stream(MESSAGE, { headers: { ...USAGE_HEADERS, "x-mock-chunks": "6" } });
    const texts: string[] = [];
    stream.on("text", (text) => texts.push(text));
    const final = await stream.finalMessage();
    expect(texts.join("")).toBe(" Hello".repeat(6).trimStart());
    expect(final.usage).toMatchObject({ input_tokens: 25, output_tokens: 40, cache_read_input_tokens: 7 });

    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    expect(completion).toMatchObject({
      model: "claude-haiku-4-5",
      promptTokens: 35,
      cacheReadTokens: 7,
      cacheWriteTokens: 3,
      completionTokens: 40,
      tokensUsed: 75,
      usageUnknown: false,
      stream: true,
      statusCode: 200,
      finishReason: "",
    });
    expect(completion!.ttftMs).toBeTypeOf("number");
  });

  it("streams with create({ stream: true }), byte for byte as the provider sent it", async () => {
    h = await startProviderHarness();
    const stream = await h.anthropic.messages.create({ ...MESSAGE, stream: true }, { headers: USAGE_HEADERS });
    const types: string[] = [];
    for await (const event of stream) types.push(event.type);
    expect(types).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    const raw = async (base: string) => {
      const res = await fetch(`${base}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": "k", "anthropic-version": "2023-06-01" },
        body: JSON.stringify({ ...MESSAGE, stream: true }),
      });
      return res.text();
    };
    expect(await raw(h.proxy.url)).toBe(await raw(h.mocks.anthropic!.url));
    const completions = await waitForPayloads(h.sink, "completion", 2);
    expect(completions[0]).toMatchObject({ promptTokens: 35, completionTokens: 40, tokensUsed: 75 });
  });

  it("surfaces 529 overloaded_error as OverloadedError and reports it", async () => {
    h = await startProviderHarness();
    const err = await h.anthropic.messages
      .create(MESSAGE, { headers: { "x-mock-status": "529", "x-mock-retry-after": "3" } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.OverloadedError);
    expect((err as InstanceType<typeof Anthropic.APIError>).status).toBe(529);
    expect((err as InstanceType<typeof Anthropic.APIError>).error).toEqual({
      type: "error",
      error: { type: "overloaded_error", message: "Overloaded" },
    });
    const [error] = await waitForPayloads(h.sink, "error", 1);
    expect(error).toMatchObject({
      errorType: "rate_limit",
      severity: "error",
      errorMessage: "Overloaded",
      statusCode: 529,
      retryAfter: 3,
      model: "claude-haiku-4-5",
      path: "/v1/messages",
    });
    const [rateLimit] = await waitForPayloads(h.sink, "rateLimit", 1);
    expect(rateLimit).toMatchObject({ source: "upstream", statusCode: 529, remaining: 0n, retryAfter: 3 });
  });

  it("surfaces 429 as RateLimitError with the provider's message", async () => {
    h = await startProviderHarness();
    const err = await h.anthropic.messages
      .create(MESSAGE, { headers: { "x-mock-status": "429", "x-mock-error-message": "Slow down" } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    const [error] = await waitForPayloads(h.sink, "error", 1);
    expect(error).toMatchObject({ errorType: "rate_limit", severity: "warning", errorMessage: "Slow down" });
  });

  it("reports a mid-stream `event: error` as an error event and a completion ended by it", async () => {
    h = await startProviderHarness();
    const stream = h.anthropic.messages.stream(MESSAGE, {
      headers: { ...USAGE_HEADERS, "x-mock-chunks": "6", "x-mock-stream-error-after": "2" },
    });
    const err = await stream.finalMessage().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(String(err)).toContain("Overloaded");
    const [error] = await waitForPayloads(h.sink, "error", 1);
    expect(error).toMatchObject({
      errorType: "rate_limit",
      severity: "error",
      errorMessage: "Overloaded",
      statusCode: 200,
    });
    const [completion] = payloads(h.sink, "completion");
    // message_start's input counts were read, the final output count never came.
    expect(completion).toMatchObject({
      finishReason: "upstream_error",
      promptTokens: 35,
      cacheReadTokens: 7,
      completionTokens: 2,
      usageUnknown: true,
      stream: true,
    });
  });

  it("routes /v1/messages to the only upstream when that is an OpenAI-compatible one", async () => {
    h = await startProviderHarness({ upstreams: ["openai"] });
    const message = await h.anthropic.messages.create(MESSAGE);
    expect(message.content[0]).toMatchObject({ type: "text" });
    const chat = await h.openai.chat.completions.create({
      model: "gpt-4o",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(chat.choices[0]?.message.content).toBe("Hello Hello Hello Hello Hello");
    expect(h.mocks.openai!.requests.map((r) => r.url)).toEqual(["/v1/messages", "/v1/chat/completions"]);
    const completions = await waitForPayloads(h.sink, "completion", 2);
    expect(completions.map((c) => c.model)).toEqual(["claude-haiku-4-5", "gpt-4o"]);
    // Each call's provider is its format's: the one upstream is "openai" only by default.
    expect(h.sink.events.map((e) => e.provider)).toEqual(["anthropic", "openai"]);
  });

  it("serves several upstreams at once, each request to its own", async () => {
    h = await startProviderHarness({ upstreams: ["openai", "anthropic", "groq"] });
    const harness = h;
    await Promise.all([
      harness.anthropic.messages.create(MESSAGE),
      harness.openai.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }),
      harness.anthropic.messages.stream(MESSAGE).finalMessage(),
      harness.openai.embeddings.create({ model: "text-embedding-3-small", input: "x" }),
    ]);
    expect(h.mocks.anthropic!.requests.map((r) => r.url)).toEqual(["/v1/messages", "/v1/messages"]);
    expect(h.mocks.openai!.requests.map((r) => r.url).sort()).toEqual(["/v1/chat/completions", "/v1/embeddings"]);
    expect(h.mocks.groq!.requests).toHaveLength(0);
    await waitForPayloads(h.sink, "completion", 4);
    const byProvider = h.sink.events
      .filter((e) => e.payload.case === "completion")
      .map((e) => e.provider)
      .sort();
    expect(byProvider).toEqual(["anthropic", "anthropic", "openai", "openai"]);
  });
});

describe("Anthropic adapter", () => {
  it("observes POST /v1/messages only", () => {
    expect(anthropicAdapter.observes("POST", "/v1/messages")).toBe(true);
    expect(anthropicAdapter.observes("GET", "/v1/messages")).toBe(false);
    expect(anthropicAdapter.observes("POST", "/v1/chat/completions")).toBe(false);
    expect(anthropicAdapter.rewriteRequest("/v1/messages", Buffer.from('{"stream":true}'))).toBeUndefined();
    expect(anthropicAdapter.readRequest("/v1/messages", Buffer.from('{"model":"claude","stream":true}'))).toEqual({
      model: "claude",
      stream: true,
    });
  });

  it("merges usage field by field: later non-null values win, null and absent keep the earlier", () => {
    const observer = new AnthropicStreamObserver();
    const send = (type: string, data: unknown) =>
      observer.push(Buffer.from(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`));
    send("message_start", {
      type: "message_start",
      message: {
        model: "claude-x",
        usage: { input_tokens: 10, output_tokens: 1, cache_creation_input_tokens: 4, cache_read_input_tokens: null },
      },
    });
    send("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "a" } });
    send("message_delta", {
      type: "message_delta",
      delta: { stop_reason: "max_tokens" },
      usage: { input_tokens: null, output_tokens: 30, cache_read_input_tokens: 6 },
    });
    expect(observer.finish()).toEqual({
      model: "claude-x",
      finishReason: "max_tokens",
      contentDeltas: 1,
      usage: {
        promptTokens: 20,
        completionTokens: 30,
        totalTokens: 50,
        cacheWriteTokens: 4,
        cacheReadTokens: 6,
      },
    });
  });

  it("reads events split anywhere and survives garbage", () => {
    const text =
      'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}\n\n' +
      "event: content_block_delta\ndata: {not json\n\n" +
      'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n';
    const bytes = Buffer.from(text);
    for (let i = 0; i <= bytes.length; i += 5) {
      const observer = new AnthropicStreamObserver();
      observer.push(bytes.subarray(0, i));
      observer.push(bytes.subarray(i));
      expect(observer.finish(), `split at ${i}`).toEqual({
        model: "m",
        // message_start's provisional numbers only: no message_delta came.
        usage: { promptTokens: 3, completionTokens: 1, totalTokens: 4, partial: true },
        contentDeltas: 1,
        errorMessage: "boom",
        errorType: "api_error",
      });
    }
  });
});
