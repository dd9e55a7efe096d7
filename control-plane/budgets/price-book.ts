import { LRUCache } from "lru-cache";
import type { Logger } from "../../common/logger.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { cachePrices, DEFAULT_PRICING, modelPrice, samePrice } from "../config/pricing.js";
import type { ModelPrice } from "../config/types.js";
import type { MetricFamily } from "../http/metrics.js";
import type { StoredModelPrice } from "../store/store.js";

/** One log line per unknown model per this long; the metric counts every event. */
const UNKNOWN_LOG_EVERY_MS = 10 * 60_000;
/** Model and provider names come from sidecars: a bounded set of metric labels, the rest under "_other". */
const MAX_LABEL_SETS = 200;
const OTHER_LABEL = "_other";
const MAX_LABEL_CHARS = 100;

export interface PriceBookOptions {
  /** `pricing` of the config: the built-in defaults with the file's entries merged over them. */
  configPricing: Readonly<Record<string, ModelPrice>>;
  /** Prices set at runtime (SetModelPrice), kept in the store. */
  stored: readonly StoredModelPrice[];
  logger: Logger;
  now?: () => number;
}

/**
 * USD per million tokens by model, and what a completion costs. Precedence: built-in
 * defaults, then prices set at runtime (persisted), then the config file's own entries —
 * the file applies on top at every start, so a file entry is what an operator reads in
 * the file after a restart; a runtime change of a model the file prices lasts until then.
 */
export class PriceBook {
  readonly #prices: Record<string, ModelPrice>;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #unknownTotals = new LabelledCounter(["model"]);
  readonly #usageUnknownTotals = new LabelledCounter(["provider", "model"]);
  readonly #lastLogged = new LRUCache<string, { at: number; suppressed: number }>({ max: 1000 });

  constructor(options: PriceBookOptions) {
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#prices = { ...DEFAULT_PRICING };
    for (const p of options.stored) this.#prices[p.model] = priceOf(p);
    for (const [model, p] of Object.entries(fileEntries(options.configPricing))) this.#prices[model] = priceOf(p);
  }

  /** The price `model` is charged at (exact entry, else its family's; see modelPrice). */
  priceOf(model: string): ModelPrice | undefined {
    return modelPrice(this.#prices, model);
  }

  /** Every entry, by model name. */
  list(): StoredModelPrice[] {
    return Object.keys(this.#prices)
      .sort()
      .map((model) => ({ model, ...(this.#prices[model] as ModelPrice) }));
  }

  /** Changes the book in memory; the caller persists it first. */
  set(price: StoredModelPrice): void {
    this.#prices[price.model] = priceOf(price);
  }

  /**
   * Sets cost_usd on a completion event (sidecars send 0: pricing is the control
   * plane's). A model without a price costs 0 only with pricing_unknown set, a metric
   * count and a log line. Other event types are left as they are.
   */
  priceEvent(event: Event): void {
    if (event.payload.case !== "completion") return;
    const c = event.payload.value;
    // The sidecar could not read the provider's usage: the cost below is of an estimate.
    if (c.usageUnknown) this.#usageUnknownTotals.add([event.provider, c.model]);
    const price = this.priceOf(c.model);
    if (price === undefined) {
      c.costUsd = 0;
      c.pricingUnknown = true;
      this.#reportUnknown(c.model, event.orgId);
      return;
    }
    c.pricingUnknown = false;
    // Providers that report only a total get it charged as input: never free, rarely over.
    const onlyTotal = c.promptTokens === 0 && c.completionTokens === 0;
    c.costUsd = completionCost(price, {
      promptTokens: onlyTotal ? c.tokensUsed : c.promptTokens,
      completionTokens: c.completionTokens,
      cacheReadTokens: c.cacheReadTokens ?? 0,
      cacheWriteTokens: c.cacheWriteTokens ?? 0,
      cacheWrite1hTokens: c.cacheWrite1hTokens ?? 0,
    });
  }

  metrics(): MetricFamily[] {
    return [
      {
        name: "aigw_pricing_unknown_total",
        help: "Completions of models without a price (charged 0 and flagged pricing_unknown).",
        type: "counter",
        samples: this.#unknownTotals.samples(),
      },
      {
        name: "aigw_usage_unknown_total",
        help: "Completions whose usage the sidecar could not read (usage_known: false; tokens 0 or estimated), so cost_usd and budgets may undercount them.",
        type: "counter",
        samples: this.#usageUnknownTotals.samples(),
      },
    ];
  }

  #reportUnknown(model: string, orgId: string): void {
    this.#unknownTotals.add([model]);
    const now = this.#now();
    const last = this.#lastLogged.get(model);
    if (last !== undefined && now - last.at < UNKNOWN_LOG_EVERY_MS) {
      last.suppressed++;
      return;
    }
    this.#lastLogged.set(model, { at: now, suppressed: 0 });
    this.#logger.warn(
      { model, org: orgId, suppressedSinceLastLog: last?.suppressed ?? 0 },
      "no price for this model: its completions cost 0 and are flagged pricing_unknown (add it under pricing: or with `aigw pricing set`)",
    );
  }
}

/**
 * A counter by labels whose values come from sidecars: each value cut to 100 characters,
 * at most 200 label sets, later ones counted under "_other" in every label.
 */
class LabelledCounter {
  readonly #totals = new Map<string, { values: string[]; count: number }>();

  constructor(private readonly names: readonly string[]) {}

  add(values: readonly string[]): void {
    let cut = values.map((v) => v.slice(0, MAX_LABEL_CHARS));
    let key = cut.join("\u0000");
    if (!this.#totals.has(key) && this.#totals.size >= MAX_LABEL_SETS) {
      cut = this.names.map(() => OTHER_LABEL);
      key = cut.join("\u0000");
    }
    const entry = this.#totals.get(key);
    if (entry) entry.count++;
    else this.#totals.set(key, { values: cut, count: 1 });
  }

  samples(): { labels: Record<string, string>; value: number }[] {
    return [...this.#totals.values()].map(({ values, count }) => ({
      labels: Object.fromEntries(this.names.map((name, i) => [name, values[i] ?? ""])),
      value: count,
    }));
  }
}

/** A completion's tokens as pricing reads them; the cache counts are parts of promptTokens. */
export interface PricedTokens {
  promptTokens: number;
  completionTokens: number;
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
  /** Part of cacheWriteTokens. */
  cacheWrite1hTokens?: number;
}

/**
 * USD for the tokens at `price` (per million), rounded to a nano-dollar against float
 * noise. Input read from or written to the cache is charged at its own rate and the rest
 * at the input rate; reasoning is part of the completion tokens, charged as output as
 * every provider bills it. Counts that do not add up (more cached than prompt tokens) are
 * charged as reported, never below the cached parts.
 */
export function completionCost(price: ModelPrice, tokens: PricedTokens): number {
  const cache = cachePrices(price);
  const read = tokens.cacheReadTokens ?? 0;
  const written = tokens.cacheWriteTokens ?? 0;
  const written1h = Math.min(tokens.cacheWrite1hTokens ?? 0, written);
  const uncached = Math.max(0, tokens.promptTokens - read - written);
  const usd =
    (uncached * price.inputPerMillion +
      read * cache.cachedInputPerMillion +
      (written - written1h) * cache.cacheWritePerMillion +
      written1h * cache.cacheWrite1hPerMillion +
      tokens.completionTokens * price.outputPerMillion) /
    1_000_000;
  return Math.round(usd * 1e9) / 1e9;
}

/** The entries of config.pricing that the file set (those differing from the built-in defaults). */
function fileEntries(configPricing: Readonly<Record<string, ModelPrice>>): Record<string, ModelPrice> {
  const out: Record<string, ModelPrice> = {};
  for (const [model, p] of Object.entries(configPricing)) {
    const builtIn = DEFAULT_PRICING[model];
    if (builtIn !== undefined && samePrice(builtIn, p)) continue;
    out[model] = p;
  }
  return out;
}

/** The book's copy of a price: the rates only, unset cache rates left unset. */
function priceOf(p: ModelPrice): ModelPrice {
  const price: ModelPrice = { inputPerMillion: p.inputPerMillion, outputPerMillion: p.outputPerMillion };
  if (p.cachedInputPerMillion !== undefined) price.cachedInputPerMillion = p.cachedInputPerMillion;
  if (p.cacheWritePerMillion !== undefined) price.cacheWritePerMillion = p.cacheWritePerMillion;
  if (p.cacheWrite1hPerMillion !== undefined) price.cacheWrite1hPerMillion = p.cacheWrite1hPerMillion;
  return price;
}
