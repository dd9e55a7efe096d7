import { afterEach, describe, expect, it } from "vitest";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { webhookBody } from "../../common/webhook-body.js";
import { StreamingEvents } from "../../sidecar/proxy/streaming-events.js";
import { waitFor } from "./harness.js";
import { type ProviderHarness, payloads, startProviderHarness, waitForPayloads } from "./provider-harness.js";

const CHAT = { model: "gpt-4o", messages: [{ role: "user" as const, content: "Say hello" }] };
const MESSAGE = {
  model: "claude-haiku-4-5",
  max_tokens: 256,
  messages: [{ role: "user" as const, content: "Say hello" }],
};
const hello = (i: number) => (i === 0 ? "Hello" : " Hello");

let h: ProviderHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function readChat(harness: ProviderHarness, headers: Record<string, string>): Promise<string> {
  const stream = await harness.openai.chat.completions.create({ ...CHAT, stream: true }, { headers });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
  return text;
}

describe("streaming events", () => {
  it("sends one event per OpenAI content chunk, in order, the last with the finish_reason", async () => {
    h = await startProviderHarness();
    const text = await readChat(h, { "x-mock-chunks": "4" });
    expect(text).toBe("Hello Hello Hello Hello");
    await waitForPayloads(h.sink, "completion", 1);
    const streaming = h.sink.events.filter((e) => e.payload.case === "streaming").map(webhookBody);
    const requestId = payloads(h.sink, "completion")[0]!.requestId;
    expect(streaming).toEqual(
      [0, 1, 2, 3, 4].map((i) =>
        expect.objectContaining({
          event: "streaming",
          request_id: requestId,
          token_index: i,
          content: i < 4 ? hello(i) : "",
          finish_reason: i < 4 ? null : "stop",
          model: "gpt-4o",
          provider: "openai",
        }),
      ),
    );
    // The last streaming event goes out before the request's completion.
    const kinds = h.sink.events.map((e) => e.payload.case);
    expect(kinds.lastIndexOf("streaming")).toBeLessThan(kinds.indexOf("completion"));
  });

  it("sends Anthropic text deltas with the stop_reason at the end", async () => {
    h = await startProviderHarness();
    const final = await h.anthropic.messages
      .stream(MESSAGE, { headers: { "x-mock-chunks": "3", "x-mock-stop-reason": "max_tokens" } })
      .finalMessage();
    expect(final.stop_reason).toBe("max_tokens");
    await waitForPayloads(h.sink, "completion", 1);
    const streaming = payloads(h.sink, "streaming");
    expect(streaming.map((s) => [s.tokenIndex, s.content, s.finishReason, s.model])).toEqual([
      [0, "Hello", undefined, "claude-haiku-4-5"],
      [1, " Hello", undefined, "claude-haiku-4-5"],
      [2, " Hello", undefined, "claude-haiku-4-5"],
      [3, "", "max_tokens", "claude-haiku-4-5"],
    ]);
    expect(
      payloads(h.sink, "streaming").every((s) => s.requestId === payloads(h!.sink, "completion")[0]!.requestId),
    ).toBe(true);
  });

  it("covers the Responses API's text deltas", async () => {
    h = await startProviderHarness();
    const stream = await h.openai.responses.create(
      { model: "gpt-4.1", input: "hi", stream: true },
      { headers: { "x-mock-chunks": "2" } },
    );
    for await (const _ of stream) {
      // drain
    }
    await waitForPayloads(h.sink, "completion", 1);
    expect(payloads(h.sink, "streaming").map((s) => [s.tokenIndex, s.content, s.finishReason])).toEqual([
      [0, "Hello", undefined],
      [1, " Hello", undefined],
      [2, "", "stop"],
    ]);
  });

  it("coalesces a request's chunks over the window: fewer events, same text, first-chunk indexes", async () => {
    h = await startProviderHarness({ settings: { streamingCoalesceMs: 100 } });
    const chunks = 30;
    const text = await readChat(h, { "x-mock-chunks": String(chunks), "x-mock-chunk-delay-ms": "10" });
    expect(text).toBe(Array.from({ length: chunks }, (_, i) => hello(i)).join(""));
    await waitForPayloads(h.sink, "completion", 1);
    const streaming = payloads(h.sink, "streaming");
    // ~300 ms of stream in 100 ms windows: a handful of events rather than 31.
    expect(streaming.length).toBeGreaterThanOrEqual(2);
    expect(streaming.length).toBeLessThanOrEqual(10);
    expect(streaming.map((s) => s.content).join("")).toBe(text);
    const indexes = streaming.map((s) => s.tokenIndex);
    expect(indexes[0]).toBe(0);
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]!).toBeGreaterThan(indexes[i - 1]!);
    // Each event's index is the number of chunks before it.
    let before = 0;
    for (const s of streaming) {
      expect(s.tokenIndex).toBe(before);
      before += s.content === "" ? 1 : s.content.split("Hello").length - 1;
    }
    expect(streaming.slice(0, -1).every((s) => s.finishReason === undefined)).toBe(true);
    expect(streaming.at(-1)!.finishReason).toBe("stop");
  });

  it("ends a stream the upstream cut with upstream_disconnected and partial usage", async () => {
    h = await startProviderHarness();
    const harness = h;
    await readChat(harness, { "x-mock-chunks": "10", "x-mock-cut-after": "4" }).catch(() => {});
    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    const streaming = payloads(h.sink, "streaming");
    expect(streaming.at(-1)).toMatchObject({ finishReason: "upstream_disconnected", content: "" });
    const contentChunks = streaming.length - 1;
    expect(
      streaming
        .slice(0, -1)
        .map((s) => s.content)
        .join(""),
    ).toBe(Array.from({ length: contentChunks }, (_, i) => hello(i)).join(""));
    // OpenAI's usage comes last, so it never came: one token per content chunk, no prompt count.
    expect(completion).toMatchObject({
      finishReason: "upstream_disconnected",
      promptTokens: 0,
      completionTokens: contentChunks,
      tokensUsed: contentChunks,
      usageUnknown: true,
    });
    expect(contentChunks).toBe(4);
  });

  it("keeps Anthropic's input tokens of a cut stream and counts what was streamed", async () => {
    h = await startProviderHarness();
    const err = await h.anthropic.messages
      .stream(MESSAGE, { headers: { "x-mock-chunks": "10", "x-mock-cut-after": "3", "x-mock-prompt-tokens": "42" } })
      .finalMessage()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    expect(completion).toMatchObject({
      model: "claude-haiku-4-5",
      finishReason: "upstream_disconnected",
      promptTokens: 42,
      completionTokens: 3,
      tokensUsed: 45,
      usageUnknown: true,
    });
    expect(payloads(h.sink, "streaming").at(-1)).toMatchObject({
      tokenIndex: 3,
      finishReason: "upstream_disconnected",
    });
  });

  it("ends a stream the client walked away from with client_disconnected", async () => {
    h = await startProviderHarness();
    const controller = new AbortController();
    const stream = await h.anthropic.messages.create(
      { ...MESSAGE, stream: true },
      { headers: { "x-mock-chunks": "200", "x-mock-chunk-delay-ms": "20" }, signal: controller.signal },
    );
    let deltas = 0;
    await (async () => {
      for await (const event of stream) {
        if (event.type === "content_block_delta" && ++deltas === 2) controller.abort();
      }
    })().catch(() => {});
    const [completion] = await waitForPayloads(h.sink, "completion", 1);
    expect(completion).toMatchObject({ finishReason: "client_disconnected", promptTokens: 12, usageUnknown: true });
    expect(completion!.completionTokens).toBeGreaterThanOrEqual(2);
    const last = payloads(h.sink, "streaming").at(-1)!;
    expect(last.finishReason).toBe("client_disconnected");
    expect(payloads(h.sink, "streaming").filter((s) => s.finishReason !== undefined)).toHaveLength(1);
  });

  it("builds none when no subscription wants them, and starts when the settings say so", async () => {
    h = await startProviderHarness({ settings: { wantedEventTypes: new Set([EventType.COMPLETION]) } });
    await readChat(h, {});
    await waitForPayloads(h.sink, "completion", 1);
    expect(payloads(h.sink, "streaming")).toHaveLength(0);
    h.configure({ wantedEventTypes: new Set([EventType.STREAMING]) });
    await readChat(h, { "x-mock-chunks": "2" });
    const streaming = await waitForPayloads(h.sink, "streaming", 3);
    expect(streaming.at(-1)!.finishReason).toBe("stop");
    expect(payloads(h.sink, "completion")).toHaveLength(1);
  });
});

describe("StreamingEvents", () => {
  const origin = { orgId: "org_1", app: "a", provider: "openai" };

  it("flushes a coalesced event early once its content reaches the bound", () => {
    const published: Event[] = [];
    const events = new StreamingEvents({
      origin,
      requestId: "req_1",
      coalesceMs: 60_000,
      publish: (e) => published.push(e),
      requestModel: () => "from-request",
      maxCoalescedChars: 10,
    });
    for (let i = 0; i < 7; i++) events.content("abcd", undefined);
    events.finish("length", undefined);
    events.content("late", undefined);
    const bodies = published.map(webhookBody);
    expect(bodies.map((b) => [b.token_index, b.content, b.finish_reason, b.model])).toEqual([
      [0, "abcdabcdabcd", null, "from-request"],
      [3, "abcdabcdabcd", null, "from-request"],
      [6, "abcd", "length", "from-request"],
    ]);
  });

  it("sends a window's chunks when the window ends, without waiting for the stream", async () => {
    const published: Event[] = [];
    const events = new StreamingEvents({
      origin,
      requestId: "req_2",
      coalesceMs: 30,
      publish: (e) => published.push(e),
      requestModel: () => "m",
    });
    events.content("a", "gpt-4o");
    events.content("b", "gpt-4o");
    await waitFor("the window to flush", () => (published.length === 1 ? true : undefined), 2000);
    events.content("c", "gpt-4o");
    events.finish("stop", undefined);
    expect(published.map(webhookBody).map((b) => [b.token_index, b.content, b.finish_reason, b.model])).toEqual([
      [0, "ab", null, "gpt-4o"],
      [2, "c", "stop", "gpt-4o"],
    ]);
  });
});
