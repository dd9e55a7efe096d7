import { afterEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { type Harness, startHarness, waitFor } from "../sidecar/harness.js";
import { eventsOf, limit, postChat, SettingsSource } from "./helpers.js";

const HOOK = "https://hooks.example.com/aigw/one-off?token=abc";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("x-aigw-webhook-url", () => {
  it("stamps every event of the request with the URL and does not forward the header", async () => {
    const settings = new SettingsSource({ wantedEventTypes: new Set([EventType.STREAMING, EventType.COMPLETION]) });
    h = await startHarness({ settings: settings.get });
    const res = await postChat(
      h,
      { "x-aigw-webhook-url": HOOK, "x-mock-chunks": "3" },
      {
        model: "gpt-4o",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      },
    );
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-aigw-request-id");
    await waitFor("completion", () => (eventsOf(h!.sink.events, "completion").length === 1 ? true : undefined));
    expect(eventsOf(h.sink.events, "streaming").length).toBeGreaterThan(0);
    for (const event of h.sink.events) expect(event.webhookUrl).toBe(HOOK);
    expect(eventsOf(h.sink.events, "completion")[0]?.requestId).toBe(requestId);
    expect(h.mock.requests[0]!.headers["x-aigw-webhook-url"]).toBeUndefined();

    // A request without the header: no URL on its events.
    await postChat(h);
    await waitFor("second completion", () => (eventsOf(h!.sink.events, "completion").length === 2 ? true : undefined));
    expect(eventsOf(h.sink.events, "completion")[1]?.event.webhookUrl).toBe("");
  });

  it("builds the request's completion and error for its endpoint even when no subscription wants them", async () => {
    const settings = new SettingsSource({ wantedEventTypes: new Set([EventType.BUDGET]) });
    h = await startHarness({ settings: settings.get });
    await postChat(h, { "x-aigw-webhook-url": HOOK });
    await postChat(h, { "x-aigw-webhook-url": HOOK, "x-mock-status": "503" });
    await postChat(h);
    await waitFor("two events", () => (h!.sink.events.length >= 2 ? true : undefined));
    expect(h.sink.events.map((e) => [e.payload.case, e.webhookUrl])).toEqual([
      ["completion", HOOK],
      ["error", HOOK],
    ]);
  });

  it("stamps the gateway's refusal events too", async () => {
    const settings = new SettingsSource({ limits: [limit({ rpm: 1 })], wantedEventTypes: new Set() });
    h = await startHarness({ settings: settings.get });
    await postChat(h);
    const refused = await postChat(h, { "x-aigw-webhook-url": HOOK });
    expect(refused.status).toBe(429);
    await waitFor("refusal events", () => (h!.sink.events.length >= 2 ? true : undefined));
    expect(h.sink.events.map((e) => [e.payload.case, e.webhookUrl])).toEqual([
      ["rateLimit", HOOK],
      ["error", HOOK],
    ]);
  });

  it("answers 400 naming the header for an invalid URL, without calling the provider", async () => {
    h = await startHarness();
    const cases = [
      "ftp://example.com/hook",
      "/relative/hook",
      `https://example.com/${"a".repeat(2048)}`,
      "https://u:p@example.com/",
    ];
    for (const url of cases) {
      const res = await postChat(h, { "x-aigw-webhook-url": url });
      expect(res.status, url).toBe(400);
      expect(res.headers.get("x-aigw-request-id")).toMatch(/^req_/);
      expect(res.json).toMatchObject({
        error: {
          message: expect.stringContaining("x-aigw-webhook-url"),
          type: "invalid_request_error",
          param: "x-aigw-webhook-url",
          code: "invalid_webhook_url",
        },
      });
    }
    // Anthropic's Messages API gets Anthropic's error shape.
    const anthropic = await postChat(h, { "x-aigw-webhook-url": "nope" }, { model: "claude" }, "/v1/messages");
    expect(anthropic.status).toBe(400);
    expect(anthropic.json).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: expect.stringContaining("x-aigw-webhook-url") },
    });
    expect(h.mock.requests).toHaveLength(0);
    expect(h.sink.events).toHaveLength(0);
  });
});
