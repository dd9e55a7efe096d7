import { RateLimitError } from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { type Harness, startHarness, waitFor } from "../sidecar/harness.js";
import { CHAT, eventsOf, eventually, limit, postChat, SettingsSource } from "./helpers.js";

const REQUEST_ID = /^req_[0-9A-HJKMNP-TV-Z]{26}$/;

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("gateway limits", () => {
  it("refuses the request past the per-minute share with a 429 in OpenAI's format, retry-after and events", async () => {
    const settings = new SettingsSource({ limits: [limit({ rpm: 2 })] });
    h = await startHarness({ settings: settings.get });
    await h.client.chat.completions.create(CHAT as never);
    await h.client.chat.completions.create(CHAT as never);

    const refused = await postChat(h);
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get("retry-after"));
    // 2 per minute: one comes back every 30 s.
    expect(retryAfter).toBeGreaterThanOrEqual(25);
    expect(retryAfter).toBeLessThanOrEqual(30);
    const requestId = refused.headers.get("x-aigw-request-id");
    expect(requestId).toMatch(REQUEST_ID);
    expect(refused.json).toEqual({
      error: {
        message: expect.stringMatching(/^aigw: rate limit reached for org org_test on requests per minute: limit 2\./),
        type: "requests",
        param: null,
        code: "rate_limit_exceeded",
      },
    });
    // The upstream saw only the admitted calls.
    expect(h.mock.requests).toHaveLength(2);

    await waitFor("refusal events", () => (eventsOf(h!.sink.events, "error").length >= 1 ? true : undefined));
    const [rateLimit] = eventsOf(h.sink.events, "rateLimit");
    expect(rateLimit).toMatchObject({
      requestId,
      source: "gateway",
      limitType: "requests",
      limit: 2n,
      remaining: 0n,
      retryAfter,
      statusCode: 429,
      warning: false,
    });
    const resetAt = Date.parse(rateLimit!.resetAt);
    expect(resetAt - Date.now()).toBeGreaterThan(20_000);
    expect(resetAt - Date.now()).toBeLessThanOrEqual(31_000);
    const [error] = eventsOf(h.sink.events, "error");
    expect(error).toMatchObject({
      requestId,
      errorType: "rate_limit",
      severity: "warning",
      statusCode: 429,
      retryAfter,
      model: "gpt-4o",
      path: "/v1/chat/completions",
    });
    expect(error!.event.orgId).toBe("org_test");

    // The openai client sees its own RateLimitError.
    const viaClient = await h.client.chat.completions.create(CHAT as never).catch((err: unknown) => err);
    expect(viaClient).toBeInstanceOf(RateLimitError);
    expect((viaClient as RateLimitError).status).toBe(429);
    await waitFor("second error event", () => (eventsOf(h!.sink.events, "error").length >= 2 ? true : undefined));
    // One rate_limit event when the limit is hit, not one per refused request.
    expect(eventsOf(h.sink.events, "rateLimit")).toHaveLength(1);
    expect(h.mock.requests).toHaveLength(2);
  });

  it("builds refusal events only for wanted types", async () => {
    const settings = new SettingsSource({
      limits: [limit({ rpm: 1 })],
      wantedEventTypes: new Set([EventType.COMPLETION]),
    });
    h = await startHarness({ settings: settings.get });
    expect((await postChat(h)).status).toBe(200);
    expect((await postChat(h)).status).toBe(429);
    await waitFor("completion", () => (h!.sink.events.length >= 1 ? true : undefined));
    expect((await postChat(h)).status).toBe(429);
    expect(h.sink.events.map((e) => e.payload.case)).toEqual(["completion"]);
  });

  it("refuses by tokens per minute once the usage of finished calls used the minute up", async () => {
    const settings = new SettingsSource({ limits: [limit({ tpm: 100 })] });
    h = await startHarness({ settings: settings.get });
    const usage = { "x-mock-prompt-tokens": "70", "x-mock-completion-tokens": "40" };
    expect((await postChat(h, usage)).status).toBe(200);
    await waitFor("completion event", () => (eventsOf(h!.sink.events, "completion").length === 1 ? true : undefined));

    const refused = await postChat(h);
    expect(refused.status).toBe(429);
    expect(refused.json).toMatchObject({ error: { type: "tokens", code: "rate_limit_exceeded" } });
    // 10 tokens in debt at 100 per minute: 11 tokens back takes 6.6 s.
    expect(Number(refused.headers.get("retry-after"))).toBe(7);
    await waitFor("rate_limit event", () => (eventsOf(h!.sink.events, "rateLimit").length === 1 ? true : undefined));
    expect(eventsOf(h.sink.events, "rateLimit")[0]).toMatchObject({
      limitType: "tokens",
      limit: 100n,
      source: "gateway",
    });
    expect(h.mock.requests).toHaveLength(1);
  });

  it("counts tokens even when nobody subscribed to completions, without sending those completions", async () => {
    const settings = new SettingsSource({
      limits: [limit({ tpm: 50 })],
      wantedEventTypes: new Set([EventType.RATE_LIMIT]),
    });
    h = await startHarness({ settings: settings.get });
    const streamed = { ...CHAT, stream: true };
    expect((await postChat(h, { "x-mock-completion-tokens": "60" }, streamed)).status).toBe(200);
    // Usage is counted when the call's events are built, a moment after its response.
    const refused = await eventually("the tokens limit to refuse", async () => {
      const r = await postChat(h!);
      return r.status === 429 ? r : undefined;
    });
    expect(refused.json).toMatchObject({ error: { type: "tokens" } });
    await waitFor("rate_limit event", () => (eventsOf(h!.sink.events, "rateLimit").length === 1 ? true : undefined));
    expect(h.sink.events.map((e) => e.payload.case)).toEqual(["rateLimit"]);
  });

  it("applies an app's limit to that app only, and an org-wide one to every app of the org", async () => {
    const settings = new SettingsSource({
      limits: [limit({ app: "billing", rpm: 1 }), limit({ orgId: "org_other", rpm: 1 })],
    });
    h = await startHarness({ settings: settings.get });
    for (let i = 0; i < 3; i++) expect((await postChat(h)).status).toBe(200);

    settings.update({ limits: [limit({ app: "checkout", rpm: 5 }), limit({ app: "", rpm: 4 })] });
    // 4 per minute org-wide, minus nothing used before (the new limits start full).
    for (let i = 0; i < 4; i++) expect((await postChat(h)).status).toBe(200);
    const orgWide = await postChat(h);
    expect(orgWide.status).toBe(429);
    expect((orgWide.json as { error: { message: string } }).error.message).toContain("for org org_test on requests");

    settings.update({ limits: [limit({ app: "checkout", rpm: 1 })] });
    // The app's limit kept its window: 4 of 5 used, now 1 allowed → still refused.
    const perApp = await postChat(h);
    expect(perApp.status).toBe(429);
    expect((perApp.json as { error: { message: string } }).error.message).toContain("for app checkout of org org_test");
  });

  it("lifts a limit with a newer settings object, and raising it frees the difference at once", async () => {
    const settings = new SettingsSource({ limits: [limit({ rpm: 1 })] });
    h = await startHarness({ settings: settings.get });
    expect((await postChat(h)).status).toBe(200);
    expect((await postChat(h)).status).toBe(429);

    settings.update({ limits: [limit({ rpm: 3 })] });
    expect((await postChat(h)).status).toBe(200);
    expect((await postChat(h)).status).toBe(200);
    expect((await postChat(h)).status).toBe(429);

    settings.update({ limits: [] });
    for (let i = 0; i < 3; i++) expect((await postChat(h)).status).toBe(200);
    expect(h.mock.requests).toHaveLength(6);
  });

  it("does not limit pass-through paths", async () => {
    const settings = new SettingsSource({ limits: [limit({ rpm: 1 })] });
    h = await startHarness({ settings: settings.get });
    expect((await postChat(h)).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${h.proxy.url}/v1/models`);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
  });
});
