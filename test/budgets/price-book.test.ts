import { Writable } from "node:stream";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { newEventId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { budgetPeriod } from "../../control-plane/budgets/periods.js";
import { completionCost, PriceBook } from "../../control-plane/budgets/price-book.js";
import { defaultConfig } from "../../control-plane/config/load.js";
import { type CompletionEvent, type CompletionEventSchema, EventSchema } from "../../gen/aigw/v1/events_pb.js";

type CompletionInit = MessageInitShape<typeof CompletionEventSchema>;

function book(options: { configPricing?: ReturnType<typeof defaultConfig>["pricing"]; now?: () => number } = {}) {
  const lines: string[] = [];
  const logger = createLogger({
    level: "info",
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  });
  const prices = new PriceBook({
    configPricing: options.configPricing ?? defaultConfig().pricing,
    stored: [{ model: "gpt-4o", inputPerMillion: 1, outputPerMillion: 1 }],
    logger,
    ...(options.now ? { now: options.now } : {}),
  });
  return { prices, lines };
}

function priced(prices: PriceBook, model: string, prompt: number, completion: number, total = prompt + completion) {
  const event = create(EventSchema, {
    id: newEventId(),
    orgId: "org_1",
    payload: {
      case: "completion",
      value: { model, promptTokens: prompt, completionTokens: completion, tokensUsed: total, costUsd: 99 },
    },
  });
  prices.priceEvent(event);
  return event.payload.value as CompletionEvent;
}

describe("PriceBook", () => {
  it("charges per million tokens, by the model's family, over whatever the sidecar sent", () => {
    const { prices } = book();
    expect(priced(prices, "gpt-4.1-mini", 1_000_000, 1_000_000)).toMatchObject({ costUsd: 2, pricingUnknown: false });
    expect(priced(prices, "claude-sonnet-4-20250514", 2_000, 1_000).costUsd).toBe(0.021);
    // Only a total from the provider: charged as input, never free.
    expect(priced(prices, "gpt-4.1", 0, 0, 500_000).costUsd).toBe(1);
    expect(priced(prices, "gpt-4.1", 0, 0, 0)).toMatchObject({ costUsd: 0, pricingUnknown: false });
  });

  it("charges cache reads, cache writes and one-hour writes at their own rates, reasoning as output", () => {
    const { prices } = book();
    const price = (model: string, value: CompletionInit) => {
      const event = create(EventSchema, {
        id: newEventId(),
        orgId: "org_1",
        payload: { case: "completion", value: { model, costUsd: 99, ...value } },
      });
      prices.priceEvent(event);
      return (event.payload.value as CompletionEvent).costUsd;
    };
    // OpenAI gpt-4.1: 1M prompt tokens of which 800k cached: 200k × $2 + 800k × $0.50, 100k output
    // (of which 60k reasoning, billed as the output they are part of) × $8.
    expect(
      price("gpt-4.1-2025-04-14", {
        promptTokens: 1_000_000,
        cacheReadTokens: 800_000,
        completionTokens: 100_000,
        reasoningTokens: 60_000,
      }),
    ).toBe(1.6);
    // Anthropic claude-sonnet-4-5 ($3 input): 10k uncached, 100k read ($0.30), 50k written of
    // which 20k for an hour (30k × $3.75, 20k × $6), 2k output × $15.
    expect(
      price("claude-sonnet-4-5-20250929", {
        promptTokens: 160_000,
        cacheReadTokens: 100_000,
        cacheWriteTokens: 50_000,
        cacheWrite1hTokens: 20_000,
        completionTokens: 2_000,
      }),
    ).toBe(0.3225);
    // Without details the whole prompt is charged as input, as before.
    expect(price("claude-sonnet-4-5", { promptTokens: 160_000, completionTokens: 2_000 })).toBe(0.51);
    // Counts that do not add up: the cached parts are charged, the uncached rest is never negative.
    expect(price("gpt-4.1", { promptTokens: 10, cacheReadTokens: 1_000_000 })).toBe(0.5);
  });

  it("prices a model without cache rates: cached input as input, writes at Anthropic's 1.25× and 2×", () => {
    const configPricing = defaultConfig().pricing;
    configPricing["my-model"] = { inputPerMillion: 4, outputPerMillion: 8 };
    const { prices } = book({ configPricing });
    const cost = (value: CompletionInit) => {
      const event = create(EventSchema, {
        id: newEventId(),
        payload: { case: "completion", value: { model: "my-model", ...value } },
      });
      prices.priceEvent(event);
      return (event.payload.value as CompletionEvent).costUsd;
    };
    expect(cost({ promptTokens: 1_000_000, cacheReadTokens: 1_000_000 })).toBe(4);
    expect(cost({ promptTokens: 1_000_000, cacheWriteTokens: 1_000_000 })).toBe(5);
    expect(cost({ promptTokens: 1_000_000, cacheWriteTokens: 1_000_000, cacheWrite1hTokens: 1_000_000 })).toBe(8);
    expect(
      completionCost(
        { inputPerMillion: 4, outputPerMillion: 8, cachedInputPerMillion: 0 },
        { promptTokens: 5, cacheReadTokens: 5, completionTokens: 0 },
      ),
    ).toBe(0);
  });

  it("puts runtime prices over the defaults and the file's own entries over both", () => {
    const configPricing = defaultConfig().pricing;
    configPricing["gpt-4o-mini"] = { inputPerMillion: 7, outputPerMillion: 7 };
    configPricing["claude-haiku-4-5"] = { inputPerMillion: 1, outputPerMillion: 5, cachedInputPerMillion: 0.2 };
    const { prices } = book({ configPricing });
    expect(prices.priceOf("gpt-4o")).toEqual({ inputPerMillion: 1, outputPerMillion: 1 }); // runtime over default
    // A file entry differing from the built-in price in a cache rate only is the file's.
    expect(prices.priceOf("claude-haiku-4-5")).toEqual({
      inputPerMillion: 1,
      outputPerMillion: 5,
      cachedInputPerMillion: 0.2,
    });
    expect(prices.priceOf("gpt-4o-mini")).toEqual({ inputPerMillion: 7, outputPerMillion: 7 }); // file
    prices.set({ model: "gpt-4o-mini", inputPerMillion: 3, outputPerMillion: 4 });
    expect(prices.priceOf("gpt-4o-mini-2024-07-18")).toEqual({ inputPerMillion: 3, outputPerMillion: 4 });
    expect(prices.list().map((p) => p.model)).toEqual([...prices.list().map((p) => p.model)].sort());
  });

  it("reports unknown models: flag, a counter per model, one log line per model per ten minutes", () => {
    const clock = { now: 0 };
    const { prices, lines } = book({ now: () => clock.now });
    for (let i = 0; i < 5; i++)
      expect(priced(prices, "mystery", 10, 10)).toMatchObject({ costUsd: 0, pricingUnknown: true });
    priced(prices, "other-mystery", 1, 1);
    expect(lines).toHaveLength(2);
    clock.now = 10 * 60_000;
    priced(prices, "mystery", 1, 1);
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[2]!)).toMatchObject({ model: "mystery", suppressedSinceLastLog: 4 });
    expect(prices.metrics()[0]?.samples).toEqual([
      { labels: { model: "mystery" }, value: 6 },
      { labels: { model: "other-mystery" }, value: 1 },
    ]);
  });

  it("counts completions whose usage the sidecar could not read, by provider and model", () => {
    const { prices } = book();
    const completion = (provider: string, model: string, usageUnknown: boolean) => {
      const event = create(EventSchema, {
        id: newEventId(),
        provider,
        payload: { case: "completion", value: { model, completionTokens: 7, tokensUsed: 7, usageUnknown } },
      });
      prices.priceEvent(event);
      return event.payload.value as CompletionEvent;
    };
    // Still priced: the estimate is better than nothing, and the count says it is one.
    expect(completion("openai", "gpt-4.1", true).costUsd).toBe(0.000056);
    completion("openai", "gpt-4.1", true);
    completion("anthropic", "claude-sonnet-4-5", true);
    completion("openai", "gpt-4.1", false);
    const family = prices.metrics().find((m) => m.name === "aigw_usage_unknown_total");
    expect(family?.samples).toEqual([
      { labels: { provider: "openai", model: "gpt-4.1" }, value: 2 },
      { labels: { provider: "anthropic", model: "claude-sonnet-4-5" }, value: 1 },
    ]);
    for (let i = 0; i < 205; i++) completion("openai", `junk-${i}`, true);
    const bounded = prices.metrics().find((m) => m.name === "aigw_usage_unknown_total")?.samples ?? [];
    expect(bounded).toHaveLength(201);
    expect(bounded.at(-1)).toEqual({ labels: { provider: "_other", model: "_other" }, value: 7 });
  });

  it("bounds the metric's labels: past 200 models, the rest count under _other", () => {
    const { prices } = book();
    for (let i = 0; i < 205; i++) priced(prices, `junk-${i}`, 1, 1);
    const samples = prices.metrics()[0]?.samples ?? [];
    expect(samples).toHaveLength(201);
    expect(samples.find((s) => s.labels?.model === "_other")?.value).toBe(5);
  });
});

describe("budgetPeriod", () => {
  it("is the UTC calendar day or month", () => {
    expect(budgetPeriod("daily", Date.parse("2026-05-10T23:59:59.999Z"))).toBe("2026-05-10");
    expect(budgetPeriod("daily", Date.parse("2026-05-11T00:00:00Z"))).toBe("2026-05-11");
    // 20:00 in New York on Jan 31 is already February 1 in UTC.
    expect(budgetPeriod("monthly", Date.parse("2026-01-31T20:00:00-05:00"))).toBe("2026-02");
    expect(budgetPeriod("monthly", Date.parse("2026-12-31T23:59:59Z"))).toBe("2026-12");
  });
});
