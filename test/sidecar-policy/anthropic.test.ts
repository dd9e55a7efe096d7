import Anthropic from "@anthropic-ai/sdk";
import { afterEach, describe, expect, it } from "vitest";
import { type ProviderHarness, startProviderHarness } from "../sidecar/provider-harness.js";
import { waitFor } from "../sidecar/harness.js";
import { budget, eventsOf, eventually, limit } from "./helpers.js";

const MESSAGE = { model: "claude-haiku-4-5", max_tokens: 64, messages: [{ role: "user" as const, content: "Hi" }] };

let h: ProviderHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("policy and async on Anthropic's Messages API", () => {
  it("refuses past a gateway limit in Anthropic's error format, which the SDK raises as RateLimitError", async () => {
    h = await startProviderHarness({ settings: { limits: [limit({ rpm: 1 })] } });
    await h.anthropic.messages.create(MESSAGE);
    const err = await h.anthropic.messages.create(MESSAGE).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    const apiError = err as InstanceType<typeof Anthropic.RateLimitError>;
    expect(apiError.status).toBe(429);
    expect(apiError.error).toEqual({
      type: "error",
      error: { type: "rate_limit_error", message: expect.stringContaining("requests per minute: limit 1") },
    });
    expect(Number(apiError.headers?.get("retry-after"))).toBeGreaterThan(0);
    expect(h.mocks.anthropic!.requests).toHaveLength(1);
    await waitFor("rate_limit event", () => (eventsOf(h!.sink.events, "rateLimit").length === 1 ? true : undefined));
    expect(eventsOf(h.sink.events, "rateLimit")[0]?.event.provider).toBe("anthropic");
  });

  it("refuses an exceeded, enforced budget in Anthropic's format", async () => {
    h = await startProviderHarness({
      settings: { budgets: [budget({ exceeded: true, enforce: true, limitType: "daily" })] },
    });
    const err = await h.anthropic.messages.create(MESSAGE).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    expect((err as InstanceType<typeof Anthropic.RateLimitError>).message).toContain(
      "budget exceeded: daily spend 10.02 of 10.00 USD",
    );
    expect(h.mocks.anthropic!.requests).toHaveLength(0);
  });

  it("runs a streamed message async: tokens in progress, Anthropic usage in the result", async () => {
    h = await startProviderHarness();
    const res = await fetch(`${h.proxy.url}/v1/messages`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        prefer: "respond-async",
        "x-mock-chunks": "10",
        "x-mock-chunk-delay-ms": "60",
      },
      body: JSON.stringify({ ...MESSAGE, stream: true }),
    });
    expect(res.status).toBe(202);
    const { status_url } = (await res.json()) as { status_url: string };
    type Status = { status: string; progress?: { tokens?: number }; result?: { usage: unknown; body: unknown[] } };
    const read = async (): Promise<Status> => (await (await fetch(`${h!.proxy.url}${status_url}`)).json()) as Status;
    await eventually("streamed tokens", async () => {
      const s = await read();
      return s.status === "processing" && (s.progress?.tokens ?? 0) > 0 ? s : undefined;
    });
    const done = await eventually("completion", async () => {
      const s = await read();
      return s.status === "completed" ? s : undefined;
    });
    expect(done.result?.usage).toMatchObject({ completion_tokens: 10 });
    expect(done.result?.body.some((e) => (e as { type?: string }).type === "message_stop")).toBe(true);
    const upstream = h.mocks.anthropic!.requests[0]!;
    expect(upstream.headers.prefer).toBeUndefined();
    expect(upstream.headers["x-api-key"]).toBe("sk-ant-test");
  });
});
