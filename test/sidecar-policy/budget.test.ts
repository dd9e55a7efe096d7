import { RateLimitError } from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { type Harness, startHarness, waitFor } from "../sidecar/harness.js";
import { budget, CHAT, eventsOf, postChat, SettingsSource } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("budget enforcement", () => {
  it("answers 429 budget_exceeded without calling the provider while an enforced budget is exceeded", async () => {
    const settings = new SettingsSource({ budgets: [budget({ exceeded: true, enforce: true })] });
    h = await startHarness({ settings: settings.get });

    const refused = await postChat(h);
    expect(refused.status).toBe(429);
    expect(refused.json).toEqual({
      error: {
        message: "aigw: budget exceeded: monthly spend 10.02 of 10.00 USD",
        type: "insufficient_quota",
        param: null,
        code: "budget_exceeded",
      },
    });
    expect(refused.headers.get("x-should-retry")).toBe("false");
    // Until the first of next month, UTC.
    const now = new Date();
    const monthEnd = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
    expect(Math.abs(Number(refused.headers.get("retry-after")) - (monthEnd - Date.now()) / 1000)).toBeLessThan(5);
    const requestId = refused.headers.get("x-aigw-request-id");

    const viaClient = await h.client.chat.completions.create(CHAT as never).catch((err: unknown) => err);
    expect(viaClient).toBeInstanceOf(RateLimitError);
    expect(h.mock.requests).toHaveLength(0);

    await waitFor("error events", () => (eventsOf(h!.sink.events, "error").length === 2 ? true : undefined));
    expect(eventsOf(h.sink.events, "error")[0]).toMatchObject({
      requestId,
      errorType: "budget_exceeded",
      severity: "critical",
      errorMessage: "budget exceeded: monthly spend 10.02 of 10.00 USD",
      statusCode: 429,
      model: "gpt-4o",
    });

    // Pass-through paths are not AI calls: still answered.
    const models = await fetch(`${h.proxy.url}/v1/models`);
    expect(models.status).toBe(200);
    await models.arrayBuffer();
    expect(h.mock.requests.map((r) => r.url)).toEqual(["/v1/models"]);

    // The control plane lifts it (budget raised or new period): calls go through again.
    settings.update({ budgets: [budget({ exceeded: false, enforce: true })] });
    expect((await postChat(h)).status).toBe(200);
  });

  it("lets calls through when the exceeded budget is not enforced, or is another org's", async () => {
    const settings = new SettingsSource({
      budgets: [
        budget({ exceeded: true, enforce: false }),
        budget({ orgId: "org_other", exceeded: true, enforce: true }),
      ],
    });
    h = await startHarness({ settings: settings.get });
    const res = await h.client.chat.completions.create(CHAT as never);
    expect(res.choices[0]?.message.content).toContain("Hello");
    expect(h.mock.requests).toHaveLength(1);
    await waitFor("completion", () => (h!.sink.events.length === 1 ? true : undefined));
    expect(eventsOf(h.sink.events, "error")).toHaveLength(0);
  });
});
