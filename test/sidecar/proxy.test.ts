import { randomBytes } from "node:crypto";
import { request } from "node:http";
import type OpenAI from "openai";
import { APIError } from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { ResponseCopy } from "../../sidecar/proxy/response-copy.js";
import { DEFAULT_PROXY_SETTINGS } from "../../sidecar/proxy/settings.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type Harness, startHarness, waitFor, waitForEvents } from "./harness.js";

const CHAT = { model: "gpt-4o", messages: [{ role: "user" as const, content: "Say hello" }] };
const REQUEST_ID = /^req_[0-9A-HJKMNP-TV-Z]{26}$/;

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("sidecar proxy with the openai client", () => {
  it("returns a non-streamed chat completion identical to a direct call and reports its usage", async () => {
    h = await startHarness();
    const headers = { "x-mock-prompt-tokens": "321", "x-mock-completion-tokens": "45" };
    const viaProxy = await h.client.chat.completions.create(CHAT, { headers }).withResponse();
    const direct = await h.direct.chat.completions.create(CHAT, { headers });

    expect(viaProxy.data).toEqual(direct);
    expect(viaProxy.data.choices[0]?.message.content).toBe("Hello Hello Hello Hello Hello");
    const requestId = viaProxy.response.headers.get("x-aigw-request-id");
    expect(requestId).toMatch(REQUEST_ID);

    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({
      event: "completion",
      org_id: "org_test",
      app: "checkout",
      provider: "openai",
      request_id: requestId,
      model: "gpt-4o",
      tokens_used: 366,
      prompt_tokens: 321,
      completion_tokens: 45,
      stream: false,
      status_code: 200,
    });
    expect(event?.id).toMatch(/^evt_/);
    expect(event?.ttft_ms).toBeUndefined();
    expect(typeof event?.latency_ms).toBe("number");
    // The request went upstream byte for byte, authorization untouched, host rewritten.
    const upstream = h.mock.requests[0]!;
    expect(upstream.headers.authorization).toBe("Bearer sk-test");
    expect(upstream.headers.host).toBe(new URL(h.mock.url).host);
    expect(upstream.json).toEqual(CHAT);
  });

  it("hides the usage chunk it asked for when the client did not ask, and still reports usage", async () => {
    h = await startHarness();
    const headers = { "x-mock-chunks": "7", "x-mock-completion-tokens": "70" };
    const read = async (client: OpenAI) => {
      const stream = await client.chat.completions.create({ ...CHAT, stream: true }, { headers });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      return chunks;
    };
    const viaProxy = await read(h.client);
    const direct = await read(h.direct);

    expect(viaProxy).toEqual(direct);
    expect(viaProxy.some((c) => c.usage != null || c.choices.length === 0)).toBe(false);
    expect(viaProxy.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe(" Hello".repeat(7).trimStart());
    // Upstream was asked for usage; the client's body otherwise kept its bytes.
    expect(h.mock.requests[0]!.body.toString()).toBe(
      `{"stream_options":{"include_usage":true},${JSON.stringify({ ...CHAT, stream: true }).slice(1)}`,
    );

    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({
      event: "completion",
      model: "gpt-4o",
      prompt_tokens: 12,
      completion_tokens: 70,
      tokens_used: 82,
      stream: true,
      status_code: 200,
    });
    expect(event?.ttft_ms).toBeTypeOf("number");
    expect(event?.finish_reason).toBeUndefined();
  });

  it("passes a stream's bytes unchanged when no usage chunk was added", async () => {
    h = await startHarness();
    const body = JSON.stringify({ ...CHAT, stream: true });
    const fetchText = async (base: string) => {
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
        body,
      });
      return {
        text: await res.text(),
        type: res.headers.get("content-type"),
        id: res.headers.get("x-aigw-request-id"),
      };
    };
    const viaProxy = await fetchText(h.proxy.url);
    const direct = await fetchText(h.mock.url);
    expect(viaProxy.text).toBe(direct.text);
    expect(viaProxy.type).toBe(direct.type);
    expect(viaProxy.text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(viaProxy.id).toMatch(REQUEST_ID);
    expect(direct.id).toBeNull();
  });

  it("lets the client see the usage chunk when it asked for it", async () => {
    h = await startHarness();
    const stream = await h.client.chat.completions.create({
      ...CHAT,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 });
    // Sent upstream exactly as the client wrote it.
    expect(h.mock.requests[0]!.json).toEqual({ ...CHAT, stream: true, stream_options: { include_usage: true } });
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({ event: "completion", tokens_used: 17, stream: true });
  });

  it("reports usage of embeddings and of the Responses API (JSON and streamed)", async () => {
    h = await startHarness();
    const embeddings = await h.client.embeddings.create(
      { model: "text-embedding-3-small", input: ["a", "b"] },
      { headers: { "x-mock-prompt-tokens": "8" } },
    );
    expect(embeddings.data).toHaveLength(2);
    const response = await h.client.responses.create(
      { model: "gpt-4.1", input: "Say hello" },
      { headers: { "x-mock-prompt-tokens": "20", "x-mock-completion-tokens": "9" } },
    );
    expect(response.output_text).toBe("Hello Hello Hello Hello Hello");
    const stream = await h.client.responses.create(
      { model: "gpt-4.1", input: "Say hello", stream: true },
      { headers: { "x-mock-prompt-tokens": "30", "x-mock-completion-tokens": "3", "x-mock-chunks": "3" } },
    );
    const types: string[] = [];
    for await (const e of stream) types.push(e.type);
    expect(types.at(-1)).toBe("response.completed");

    const events = await waitForEvents(h.sink, 3);
    expect(events[0]).toMatchObject({
      model: "text-embedding-3-small",
      prompt_tokens: 8,
      completion_tokens: 0,
      tokens_used: 8,
    });
    expect(events[1]).toMatchObject({
      model: "gpt-4.1",
      prompt_tokens: 20,
      completion_tokens: 9,
      tokens_used: 29,
      stream: false,
    });
    expect(events[2]).toMatchObject({
      model: "gpt-4.1",
      prompt_tokens: 30,
      completion_tokens: 3,
      tokens_used: 33,
      stream: true,
    });
  });

  it("reports a 429 as a rate_limit warning with retry_after", async () => {
    h = await startHarness();
    const err = await h.client.chat.completions
      .create(CHAT, {
        headers: { "x-mock-status": "429", "x-mock-retry-after": "17", "x-mock-error-message": "Slow down, org-1" },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(429);
    expect((err as APIError).message).toContain("Slow down, org-1");
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({
      event: "error",
      error_type: "rate_limit",
      error_message: "Slow down, org-1",
      status_code: 429,
      retry_after: 17,
      severity: "warning",
      model: "gpt-4o",
    });
  });

  it("reports a 500 as upstream_error and a 401 as authentication", async () => {
    h = await startHarness();
    await h.client.chat.completions.create(CHAT, { headers: { "x-mock-status": "500" } }).catch(() => {});
    await h.client.chat.completions.create(CHAT, { headers: { "x-mock-status": "401" } }).catch(() => {});
    const events = await waitForEvents(h.sink, 2);
    expect(events[0]).toMatchObject({
      error_type: "upstream_error",
      severity: "error",
      status_code: 500,
      retry_after: null,
      error_message: "The server had an error while processing your request.",
    });
    expect(events[1]).toMatchObject({ error_type: "authentication", severity: "error", status_code: 401 });
  });

  it("answers 502 with an OpenAI-style error and a network event when the upstream is down", async () => {
    const gone = await startMockProvider();
    const deadUrl = gone.url;
    await gone.close();
    h = await startHarness({ upstreams: () => ({ openai: deadUrl }) });
    const res = await fetch(`${h.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-secret-key" },
      body: JSON.stringify(CHAT),
    });
    expect(res.status).toBe(502);
    expect(res.headers.get("x-aigw-request-id")).toMatch(REQUEST_ID);
    const body = (await res.json()) as { error: { message: string; type: string; code: string } };
    expect(body.error.code).toBe("upstream_unreachable");
    expect(body.error.message).toContain("ECONNREFUSED");

    const err = await h.client.chat.completions.create(CHAT).catch((e: unknown) => e);
    expect((err as APIError).status).toBe(502);

    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({
      event: "error",
      error_type: "network",
      severity: "critical",
      status_code: 0,
      model: "gpt-4o",
    });
    await waitFor("a log line", () => (h!.logs().includes("upstream request failed") ? true : undefined));
    expect(h.logs()).not.toContain("sk-secret-key");
    expect(h.logs()).not.toContain("sk-test");
  });

  it("answers 504 and reports a timeout when the upstream is silent too long", async () => {
    h = await startHarness({ requestTimeoutMs: 300 });
    const res = await fetch(`${h.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-mock-delay-ms": "5000" },
      body: JSON.stringify(CHAT),
    });
    expect(res.status).toBe(504);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("upstream_timeout");
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({ error_type: "timeout", severity: "error", status_code: 0 });
  });

  it("reports an upstream cut mid-stream as upstream_disconnected and breaks the client's stream", async () => {
    h = await startHarness();
    const stream = await h.client.chat.completions.create(
      { ...CHAT, stream: true },
      { headers: { "x-mock-chunks": "10", "x-mock-cut-after": "3", "x-mock-chunk-delay-ms": "10" } },
    );
    const contents: string[] = [];
    const err = await (async () => {
      for await (const chunk of stream) contents.push(chunk.choices[0]?.delta.content ?? "");
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    // What arrived before the cut reached the client (the last chunk may race the error).
    expect(contents.join("")).toMatch(/^Hello( Hello){1,2}$/);
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({
      event: "completion",
      finish_reason: "upstream_disconnected",
      model: "gpt-4o",
      stream: true,
      prompt_tokens: 0,
    });
    // No usage chunk came: completion tokens are estimated as one per content chunk seen.
    expect(event?.completion_tokens).toBeGreaterThanOrEqual(1);
    expect(event?.completion_tokens).toBeLessThanOrEqual(3);
    expect(event?.tokens_used).toBe(event?.completion_tokens);
  });

  it("reports a client that walks away as client_disconnected and stops the upstream", async () => {
    h = await startHarness();
    const controller = new AbortController();
    const stream = await h.client.chat.completions.create(
      { ...CHAT, stream: true, stream_options: { include_usage: true } },
      { headers: { "x-mock-chunks": "200", "x-mock-chunk-delay-ms": "20" }, signal: controller.signal },
    );
    let seen = 0;
    await (async () => {
      for await (const _ of stream) {
        if (++seen === 2) controller.abort();
      }
    })().catch(() => {});
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({ event: "completion", finish_reason: "client_disconnected", stream: true });
    expect((event?.latency_ms as number) < 4000).toBe(true);
    // The mock would write for 4 s; the proxy aborted its upstream leg instead.
    await waitFor("the upstream stream to stop", () => (h!.mock.activeResponses === 0 ? true : undefined), 3000);
  });

  it("passes other paths through untouched, bytes identical to a direct call", async () => {
    h = await startHarness();
    const models = await h.client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["gpt-4o-mini"]);

    const payload = randomBytes(256 * 1024);
    const send = async (base: string) => {
      const res = await fetch(`${base}/v1/files?purpose=batch`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream", authorization: "Bearer sk-test" },
        body: payload,
      });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    };
    const viaProxy = await send(h.proxy.url);
    const direct = await send(h.mock.url);
    expect(viaProxy.status).toBe(200);
    expect(viaProxy.body.equals(direct.body)).toBe(true);
    const uploads = h.mock.requests.filter((r) => r.url === "/v1/files?purpose=batch");
    expect(uploads).toHaveLength(2);
    expect(uploads[0]!.body.equals(payload)).toBe(true);

    const unknown = await fetch(`${h.proxy.url}/v1/unknown/thing?x=1`);
    expect(unknown.status).toBe(404);
    expect(h.mock.requests.at(-1)!.url).toBe("/v1/unknown/thing?x=1");
    // Pass-through paths are not observed.
    await h.client.chat.completions.create(CHAT);
    const events = await waitForEvents(h.sink, 1);
    expect(events).toHaveLength(1);
    expect(events[0]?.event).toBe("completion");
  });

  it("observes a chunked (no content-length) request body and forwards it whole", async () => {
    h = await startHarness();
    const body = new TextEncoder().encode(JSON.stringify({ ...CHAT, stream: true }));
    const res = await fetch(`${h.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(body.subarray(0, 10));
          controller.enqueue(body.subarray(10));
          controller.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(200);
    expect(await res.text()).not.toContain('"usage"');
    expect(h.mock.requests[0]!.headers["transfer-encoding"]).toBeUndefined();
    expect(h.mock.requests[0]!.json).toEqual({ ...CHAT, stream: true, stream_options: { include_usage: true } });
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({ tokens_used: 17, stream: true });
  });

  it("drops hop-by-hop headers and keeps the rest", async () => {
    h = await startHarness();
    // fetch refuses to send Connection; node:http sends what it is given.
    await new Promise<void>((resolve, reject) => {
      const req = request(`${h!.proxy.url}/v1/models`, {
        headers: { connection: "keep-alive, x-hop", "x-hop": "1", "x-keep": "2", "proxy-authorization": "Basic abc" },
        agent: false,
      });
      req.on("response", (res) => res.resume().on("end", resolve));
      req.on("error", reject);
      req.end();
    });
    const seen = h.mock.requests[0]!.headers;
    expect(seen["x-keep"]).toBe("2");
    expect(seen["x-hop"]).toBeUndefined();
    expect(seen["proxy-authorization"]).toBeUndefined();
  });

  it("reads usage from a gzip-compressed response while the client gets it as sent", async () => {
    h = await startHarness();
    const res = await fetch(`${h.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "accept-encoding": "gzip",
        "x-mock-gzip": "1",
        "x-mock-prompt-tokens": "40",
      },
      body: JSON.stringify(CHAT),
    });
    expect(res.headers.get("content-encoding")).toBe("gzip");
    expect(((await res.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens).toBe(40);
    const [event] = await waitForEvents(h.sink, 1);
    expect(event).toMatchObject({ prompt_tokens: 40, tokens_used: 45 });
  });

  it("keeps serving when the event sink throws", async () => {
    let calls = 0;
    h = await startHarness({
      sink: {
        publish() {
          calls++;
          throw new Error("uplink exploded");
        },
      },
    });
    for (let i = 0; i < 3; i++) {
      const completion = await h.client.chat.completions.create(CHAT);
      expect(completion.usage?.total_tokens).toBe(17);
    }
    await waitFor("3 publish calls", () => (calls >= 3 ? true : undefined));
    expect(h.logs()).toContain("event sink refused an event");
  });

  it("publishes only the event types someone wants", async () => {
    h = await startHarness({
      settings: () => ({ ...DEFAULT_PROXY_SETTINGS, wantedEventTypes: new Set([EventType.ERROR]) }),
    });
    await h.client.chat.completions.create(CHAT);
    await h.client.chat.completions.create(CHAT, { headers: { "x-mock-status": "503" } }).catch(() => {});
    const events = await waitForEvents(h.sink, 1);
    expect(events.map((e) => e.event)).toEqual(["error"]);
  });

  it("with only errors wanted, copies and parses no successful JSON body, and still reports errors", async () => {
    const pushes = vi.spyOn(ResponseCopy.prototype, "push");
    const parses = vi.spyOn(JSON, "parse");
    try {
      h = await startHarness({
        settings: () => ({ ...DEFAULT_PROXY_SETTINGS, wantedEventTypes: new Set([EventType.ERROR]) }),
      });
      // Awaited one at a time: the counts are read between the calls.
      const completion = await h.client.chat.completions.create(CHAT);
      expect(completion.choices[0]?.message.content).toBeTruthy();
      // Copies are pushed to as the body passes, before the client has it.
      expect(pushes.mock.calls.length).toBe(0);

      await h.client.chat.completions
        .create(CHAT, { headers: { "x-mock-status": "503", "x-mock-error-message": "try later" } })
        .catch(() => {});
      const events = await waitForEvents(h.sink, 1);
      expect(events.map((e) => e.event)).toEqual(["error"]);
      expect(JSON.stringify(events[0])).toContain("try later");
      expect(pushes.mock.calls.length).toBeGreaterThan(0);
      // Reports run in order, so the success's ran before the error's: the openai client parsed
      // the successful body once, the proxy not at all.
      const completionParses = parses.mock.calls.filter(
        ([text]) => typeof text === "string" && text.includes("chatcmpl"),
      );
      expect(completionParses).toHaveLength(1);
    } finally {
      pushes.mockRestore();
      parses.mockRestore();
    }
  });

  it("routes /v1/messages to the anthropic upstream and keeps an upstream's path prefix", async () => {
    const anthropic = await startMockProvider();
    try {
      h = await startHarness({
        upstreams: (mock) => ({ openai: `${mock.url}/openai-proxy/`, anthropic: anthropic.url }),
      });
      await fetch(`${h.proxy.url}/v1/messages`, { method: "POST", body: "{}" });
      await fetch(`${h.proxy.url}/v1/models?limit=2`);
      expect(anthropic.requests.map((r) => r.url)).toEqual(["/v1/messages"]);
      expect(h.mock.requests.map((r) => r.url)).toEqual(["/openai-proxy/v1/models?limit=2"]);
    } finally {
      await anthropic.close();
    }
  });
});
