import { describe, expect, it } from "vitest";
import { estimatedUsage, type ResponseObserver, type Usage } from "../../sidecar/providers/adapter.js";
import { anthropicAdapter, anthropicUsage } from "../../sidecar/providers/anthropic.js";
import { lastUsageObject, openAiAdapter, usageFrom } from "../../sidecar/providers/openai.js";
import { completionEvent } from "../../sidecar/proxy/events.js";

// Bodies and streams as the providers send them (shapes from their API references and
// captured responses): cache and reasoning details, and what aigw makes of them. The
// normalisation (one meaning of prompt_tokens for every provider) is the contract that
// pricing and budgets rely on.

const OPENAI_CHAT_JSON = {
  id: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  object: "chat.completion",
  created: 1741570283,
  model: "o4-mini-2025-04-16",
  choices: [
    {
      index: 0,
      message: { role: "assistant", content: "The answer is 42.", refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: "stop",
    },
  ],
  usage: {
    prompt_tokens: 2006,
    completion_tokens: 300,
    total_tokens: 2306,
    prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 256,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  },
  service_tier: "default",
  system_fingerprint: null,
};

const OPENAI_USAGE = {
  promptTokens: 2006,
  completionTokens: 300,
  totalTokens: 2306,
  cacheReadTokens: 1920,
  reasoningTokens: 256,
};

const chatChunk = (rest: string) =>
  `data: {"id":"chatcmpl-B9M","object":"chat.completion.chunk","created":1741570283,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,${rest}}\n\n`;

/** A chat stream with stream_options.include_usage, as OpenAI sends it. */
const OPENAI_CHAT_STREAM =
  chatChunk(
    '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null',
  ) +
  chatChunk(
    '"choices":[{"index":0,"delta":{"content":"The answer"},"logprobs":null,"finish_reason":null}],"usage":null',
  ) +
  chatChunk('"choices":[{"index":0,"delta":{"content":" is 42."},"logprobs":null,"finish_reason":null}],"usage":null') +
  chatChunk('"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null') +
  chatChunk(`"choices":[],"usage":${JSON.stringify(OPENAI_CHAT_JSON.usage)}`) +
  "data: [DONE]\n\n";

const RESPONSES_USAGE = {
  input_tokens: 1406,
  input_tokens_details: { cached_tokens: 1280 },
  output_tokens: 612,
  output_tokens_details: { reasoning_tokens: 448 },
  total_tokens: 2018,
};

const responseObject = (status: string, usage: unknown) => ({
  id: "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  object: "response",
  created_at: 1741476542,
  status,
  model: "o4-mini-2025-04-16",
  output: [],
  reasoning: { effort: "medium", summary: null },
  usage,
});

const responsesEvent = (type: string, fields: Record<string, unknown>) =>
  `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`;

const RESPONSES_STREAM =
  responsesEvent("response.created", { sequence_number: 0, response: responseObject("in_progress", null) }) +
  responsesEvent("response.output_text.delta", {
    sequence_number: 1,
    item_id: "msg_1",
    output_index: 1,
    content_index: 0,
    delta: "The answer is 42.",
  }) +
  responsesEvent("response.completed", { sequence_number: 2, response: responseObject("completed", RESPONSES_USAGE) });

const ANTHROPIC_MESSAGE_JSON = {
  id: "msg_01XFDUDYJgAACzvnptvVoYEL",
  type: "message",
  role: "assistant",
  model: "claude-sonnet-4-5-20250929",
  content: [{ type: "text", text: "The answer is 42." }],
  stop_reason: "end_turn",
  stop_sequence: null,
  usage: {
    input_tokens: 21,
    cache_creation_input_tokens: 188086,
    cache_read_input_tokens: 0,
    cache_creation: { ephemeral_5m_input_tokens: 188000, ephemeral_1h_input_tokens: 86 },
    output_tokens: 393,
    service_tier: "standard",
  },
};

const anthropicEvent = (type: string, fields: Record<string, unknown>) =>
  `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`;

/** Extended thinking from a cached prompt: thinking deltas, then text, usage at start and end. */
const ANTHROPIC_STREAM_HEAD =
  anthropicEvent("message_start", {
    message: {
      id: "msg_01",
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5-20250929",
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: {
        input_tokens: 8,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 2048,
        cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
        output_tokens: 1,
        service_tier: "standard",
      },
    },
  }) +
  anthropicEvent("content_block_start", {
    index: 0,
    content_block: { type: "thinking", thinking: "", signature: "" },
  }) +
  anthropicEvent("content_block_delta", { index: 0, delta: { type: "thinking_delta", thinking: "Six times seven" } }) +
  anthropicEvent("content_block_delta", { index: 0, delta: { type: "signature_delta", signature: "EqQBCgIYAh" } }) +
  anthropicEvent("content_block_stop", { index: 0 }) +
  'event: ping\ndata: {"type": "ping"}\n\n' +
  anthropicEvent("content_block_start", { index: 1, content_block: { type: "text", text: "" } }) +
  anthropicEvent("content_block_delta", { index: 1, delta: { type: "text_delta", text: "The answer is 42." } });

const ANTHROPIC_STREAM_TAIL =
  anthropicEvent("content_block_stop", { index: 1 }) +
  anthropicEvent("message_delta", {
    delta: { stop_reason: "end_turn", stop_sequence: null },
    usage: { input_tokens: 8, cache_creation_input_tokens: 0, cache_read_input_tokens: 2048, output_tokens: 503 },
  }) +
  anthropicEvent("message_stop", {});

function observe(observer: ResponseObserver, text: string, splitAt?: number) {
  const bytes = Buffer.from(text);
  if (splitAt === undefined) observer.push(bytes);
  else {
    observer.push(bytes.subarray(0, splitAt));
    observer.push(bytes.subarray(splitAt));
  }
  return observer.finish();
}

const JSON_CONTEXT = { path: "/v1/chat/completions", status: 200, contentType: "application/json" };
const SSE_CONTEXT = { path: "/v1/chat/completions", status: 200, contentType: "text/event-stream; charset=utf-8" };

describe("OpenAI usage details", () => {
  it("reads cached and reasoning tokens from a chat completion; both are parts of the counts", () => {
    const facts = observe(openAiAdapter.observeResponse(JSON_CONTEXT), JSON.stringify(OPENAI_CHAT_JSON));
    expect(facts).toEqual({ model: "o4-mini-2025-04-16", usage: OPENAI_USAGE });
  });

  it("reads them from the include_usage chunk of a chat stream, split anywhere", () => {
    const bytes = Buffer.byteLength(OPENAI_CHAT_STREAM);
    for (let at = 0; at <= bytes; at += 7) {
      const facts = observe(openAiAdapter.observeResponse(SSE_CONTEXT), OPENAI_CHAT_STREAM, at);
      expect(facts.usage, `split at ${at}`).toEqual(OPENAI_USAGE);
      expect(facts.contentDeltas).toBe(2);
    }
  });

  it("reads the Responses API's input_tokens_details and output_tokens_details, JSON and stream", () => {
    const expected = {
      promptTokens: 1406,
      completionTokens: 612,
      totalTokens: 2018,
      cacheReadTokens: 1280,
      reasoningTokens: 448,
    };
    const json = observe(
      openAiAdapter.observeResponse({ ...JSON_CONTEXT, path: "/v1/responses" }),
      JSON.stringify(responseObject("completed", RESPONSES_USAGE)),
    );
    expect(json.usage).toEqual(expected);
    const stream = observe(openAiAdapter.observeResponse({ ...SSE_CONTEXT, path: "/v1/responses" }), RESPONSES_STREAM);
    expect(stream).toMatchObject({ model: "o4-mini-2025-04-16", usage: expected });
  });

  it("finds nested details in the tail of a body too large to keep", () => {
    const observer = openAiAdapter.observeResponse(JSON_CONTEXT);
    const filler = "x".repeat(1024 * 1024);
    const body = JSON.stringify({
      ...OPENAI_CHAT_JSON,
      choices: Array.from({ length: 11 }, (_, index) => ({ index, message: { content: filler } })),
    });
    expect(Buffer.byteLength(body)).toBeGreaterThan(10 * 1024 * 1024);
    expect(observe(observer, body)).toEqual({ model: "o4-mini-2025-04-16", usage: OPENAI_USAGE });
  });

  it("reports no details when the provider gave none, so the event has none", () => {
    expect(usageFrom({ prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 })).toEqual({
      promptTokens: 12,
      completionTokens: 5,
      totalTokens: 17,
    });
    // Details present but without the counts aigw reads, or null.
    expect(
      usageFrom({
        prompt_tokens: 12,
        completion_tokens: 5,
        prompt_tokens_details: { audio_tokens: 3 },
        completion_tokens_details: null,
      }),
    ).toEqual({ promptTokens: 12, completionTokens: 5, totalTokens: 17 });
    // A reported 0 is known: "no cache hit" is not "not said".
    expect(
      usageFrom({ prompt_tokens: 12, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 0 } }),
    ).toMatchObject({ cacheReadTokens: 0 });
  });

  it("keeps reasoning inside completion_tokens for servers that count it beside (their total says so)", () => {
    expect(
      usageFrom({
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 45,
        completion_tokens_details: { reasoning_tokens: 30 },
      }),
    ).toEqual({ promptTokens: 10, completionTokens: 35, totalTokens: 45, reasoningTokens: 30 });
  });

  it("reads DeepSeek's prompt_cache_hit_tokens as cache reads", () => {
    expect(
      usageFrom({
        prompt_tokens: 100,
        completion_tokens: 20,
        total_tokens: 120,
        prompt_cache_hit_tokens: 64,
        prompt_cache_miss_tokens: 36,
      }),
    ).toMatchObject({ promptTokens: 100, cacheReadTokens: 64 });
  });

  it("does not believe a detail past its count, and ignores nonsense", () => {
    expect(
      usageFrom({
        prompt_tokens: 10,
        completion_tokens: 5,
        prompt_tokens_details: { cached_tokens: 900 },
        completion_tokens_details: { reasoning_tokens: 70 },
      }),
    ).toEqual({ promptTokens: 10, completionTokens: 5, totalTokens: 15, cacheReadTokens: 10, reasoningTokens: 5 });
    expect(
      usageFrom({
        prompt_tokens: 10,
        completion_tokens: 5,
        prompt_tokens_details: { cached_tokens: -1 },
        completion_tokens_details: { reasoning_tokens: "many" },
      }),
    ).toEqual({ promptTokens: 10, completionTokens: 5, totalTokens: 15 });
    expect(usageFrom({ prompt_tokens_details: { cached_tokens: 5 } })).toBeUndefined();
  });

  it("finds the last complete usage object in a tail, braces in strings and all", () => {
    expect(lastUsageObject('"text":"{\\"usage\\": {","usage":{"a":{"b":1},"c":"}"}}')).toBe('{"a":{"b":1},"c":"}"}');
    expect(lastUsageObject('"usage":{"a":{"b":1}')).toBeUndefined();
    expect(lastUsageObject("no usage here")).toBeUndefined();
  });
});

describe("Anthropic usage details", () => {
  const expectedJson: Usage = {
    // input_tokens (21) + cache writes (188,086) + cache reads (0): every input token.
    promptTokens: 188107,
    completionTokens: 393,
    totalTokens: 188500,
    cacheReadTokens: 0,
    cacheWriteTokens: 188086,
    cacheWrite1hTokens: 86,
  };

  it("makes prompt_tokens every input token: input_tokens plus cache writes and reads", () => {
    const observer = anthropicAdapter.observeResponse({ ...JSON_CONTEXT, path: "/v1/messages" });
    expect(observe(observer, JSON.stringify(ANTHROPIC_MESSAGE_JSON))).toEqual({
      model: "claude-sonnet-4-5-20250929",
      usage: expectedJson,
    });
  });

  it("reads a stream's final usage from message_delta, thinking counted as output, split anywhere", () => {
    const text = ANTHROPIC_STREAM_HEAD + ANTHROPIC_STREAM_TAIL;
    const bytes = Buffer.byteLength(text);
    for (let at = 0; at <= bytes; at += 11) {
      const facts = observe(anthropicAdapter.observeResponse({ ...SSE_CONTEXT, path: "/v1/messages" }), text, at);
      expect(facts, `split at ${at}`).toEqual({
        model: "claude-sonnet-4-5-20250929",
        finishReason: "end_turn",
        contentDeltas: 3,
        usage: {
          promptTokens: 2056,
          completionTokens: 503,
          totalTokens: 2559,
          cacheReadTokens: 2048,
          cacheWriteTokens: 0,
          cacheWrite1hTokens: 0,
        },
      });
    }
  });

  it("marks the usage of a stream cut before message_delta as partial", () => {
    const facts = observe(
      anthropicAdapter.observeResponse({ ...SSE_CONTEXT, path: "/v1/messages" }),
      ANTHROPIC_STREAM_HEAD,
    );
    expect(facts.usage).toEqual({
      promptTokens: 2056,
      completionTokens: 1,
      totalTokens: 2057,
      cacheReadTokens: 2048,
      cacheWriteTokens: 0,
      cacheWrite1hTokens: 0,
      partial: true,
    });
    // What the event then says: input as read, output estimated from the content seen.
    expect(estimatedUsage(facts.usage, facts.contentDeltas ?? 0)).toEqual({
      promptTokens: 2056,
      completionTokens: 3,
      totalTokens: 2059,
      cacheReadTokens: 2048,
      cacheWriteTokens: 0,
      cacheWrite1hTokens: 0,
    });
  });

  it("keeps the one-hour writes within the writes, and reads usage without any cache fields", () => {
    expect(
      anthropicUsage({
        input_tokens: 5,
        cache_creation_input_tokens: 10,
        cache_creation: { ephemeral_1h_input_tokens: 99 },
        output_tokens: 1,
      }),
    ).toMatchObject({ promptTokens: 15, cacheWriteTokens: 10, cacheWrite1hTokens: 10 });
    expect(anthropicUsage({ input_tokens: 5, output_tokens: 1 })).toEqual({
      promptTokens: 5,
      completionTokens: 1,
      totalTokens: 6,
    });
    expect(anthropicUsage({ cache_creation: "nonsense", input_tokens: "x" })).toBeUndefined();
  });
});

describe("the completion event's usage fields", () => {
  const origin = { orgId: "org_1", app: "a", provider: "openai" };
  const fields = { requestId: "req_1", model: "m", latencyMs: 1, ttftMs: undefined, stream: false, statusCode: 200 };
  const base = { ...fields, path: "/v1/chat/completions", finishReason: undefined };

  it("carries the details the provider gave, and leaves the others unset", () => {
    const event = completionEvent(origin, { ...base, usage: OPENAI_USAGE, usageKnown: true });
    expect(event.payload.value).toMatchObject({
      promptTokens: 2006,
      completionTokens: 300,
      tokensUsed: 2306,
      cacheReadTokens: 1920,
      reasoningTokens: 256,
      usageUnknown: false,
    });
    const plain = completionEvent(origin, {
      ...base,
      usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 },
      usageKnown: true,
    });
    expect(plain.payload.case === "completion" && plain.payload.value.cacheReadTokens).toBeUndefined();
    expect(plain.payload.case === "completion" && plain.payload.value.cacheWriteTokens).toBeUndefined();
  });

  it("says usage_unknown when no usage was read, and caps absurd counts instead of failing", () => {
    const none = completionEvent(origin, { ...base, usage: undefined, usageKnown: false });
    expect(none.payload.value).toMatchObject({ tokensUsed: 0, promptTokens: 0, usageUnknown: true });
    const huge = completionEvent(origin, {
      ...base,
      usage: { promptTokens: 0xffff_ffff, completionTokens: 0xffff_ffff, totalTokens: 2 * 0xffff_ffff },
      usageKnown: true,
    });
    expect(huge.payload.value).toMatchObject({ tokensUsed: 0xffff_ffff, promptTokens: 0xffff_ffff });
  });
});
