import { afterEach, describe, expect, it } from "vitest";
import { type ProviderHarness, startProviderHarness, waitForPayloads } from "./provider-harness.js";

// Through the proxy with the real clients: the details reach the event, and a call whose
// usage could not be read says so instead of passing 0 tokens off as the provider's count.

const CHAT = { model: "o4-mini", messages: [{ role: "user" as const, content: "What is 6 × 7?" }] };
const MESSAGE = { model: "claude-sonnet-4-5", max_tokens: 256, messages: [{ role: "user" as const, content: "Hi" }] };

let h: ProviderHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("usage details and usage_known through the sidecar", () => {
  it("a chat completion and a chat stream carry cached and reasoning tokens", async () => {
    h = await startProviderHarness();
    const headers = {
      "x-mock-prompt-tokens": "2006",
      "x-mock-completion-tokens": "300",
      "x-mock-cached-tokens": "1920",
      "x-mock-reasoning-tokens": "256",
    };
    const answer = await h.openai.chat.completions.create(CHAT, { headers });
    expect(answer.usage?.prompt_tokens_details?.cached_tokens).toBe(1920);
    const stream = await h.openai.chat.completions.create({ ...CHAT, stream: true }, { headers });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    // The app did not ask for usage: it gets none, and the sidecar still read it.
    expect(chunks.some((c) => c.usage)).toBe(false);
    const completions = await waitForPayloads(h.sink, "completion", 2);
    for (const completion of completions) {
      expect(completion).toMatchObject({
        promptTokens: 2006,
        completionTokens: 300,
        tokensUsed: 2306,
        cacheReadTokens: 1920,
        reasoningTokens: 256,
        usageUnknown: false,
      });
      expect(completion.cacheWriteTokens).toBeUndefined();
    }
  });

  it("the Responses API's details, JSON and stream", async () => {
    h = await startProviderHarness();
    const headers = { "x-mock-cached-tokens": "8", "x-mock-reasoning-tokens": "3", "x-mock-completion-tokens": "9" };
    await h.openai.responses.create({ model: "o4-mini", input: "hi" }, { headers });
    const stream = await h.openai.responses.create({ model: "o4-mini", input: "hi", stream: true }, { headers });
    for await (const _ of stream) {
      // drain
    }
    const completions = await waitForPayloads(h.sink, "completion", 2);
    for (const completion of completions) {
      expect(completion).toMatchObject({
        promptTokens: 12,
        cacheReadTokens: 8,
        reasoningTokens: 3,
        usageUnknown: false,
      });
    }
  });

  it("a JSON answer without usage: usage unknown, 0 tokens", async () => {
    h = await startProviderHarness();
    const answer = await h.openai.chat.completions.create(CHAT, { headers: { "x-mock-no-usage": "1" } });
    expect(answer.usage).toBeUndefined();
    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    expect(completion).toMatchObject({ tokensUsed: 0, promptTokens: 0, completionTokens: 0, usageUnknown: true });
  });

  it("a stream from a server that ignores include_usage: usage unknown, output estimated from the chunks", async () => {
    h = await startProviderHarness();
    const stream = await h.openai.chat.completions.create(
      { ...CHAT, stream: true },
      { headers: { "x-mock-no-usage": "1", "x-mock-chunks": "6" } },
    );
    for await (const _ of stream) {
      // drain
    }
    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    expect(completion).toMatchObject({ promptTokens: 0, completionTokens: 6, tokensUsed: 6, usageUnknown: true });
    expect(completion!.finishReason).toBe("");
  });

  it("a stream whose app asked for usage itself: the app gets the chunk, the event the numbers", async () => {
    h = await startProviderHarness();
    const res = await fetch(`${h.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-mock-prompt-tokens": "40", "x-mock-cached-tokens": "32" },
      body: JSON.stringify({ ...CHAT, stream: true, stream_options: { include_usage: true } }),
    });
    expect(await res.text()).toContain('"cached_tokens":32');
    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    expect(completion).toMatchObject({ promptTokens: 40, cacheReadTokens: 32, usageUnknown: false });
  });

  it("an Anthropic message without usage, and one with it", async () => {
    h = await startProviderHarness();
    await h.anthropic.messages.create(MESSAGE, { headers: { "x-mock-no-usage": "1" } });
    const [unknown] = await waitForPayloads(h.sink, "completion", 1);
    expect(unknown).toMatchObject({ tokensUsed: 0, usageUnknown: true });
    await h.anthropic.messages.create(MESSAGE, {
      headers: { "x-mock-cache-creation-tokens": "1000", "x-mock-cache-write-1h-tokens": "400" },
    });
    const [, known] = await waitForPayloads(h.sink, "completion", 2);
    expect(known).toMatchObject({
      promptTokens: 1012,
      cacheWriteTokens: 1000,
      cacheWrite1hTokens: 400,
      cacheReadTokens: 0,
      usageUnknown: false,
    });
  });
});
