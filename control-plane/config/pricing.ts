import type { ModelPrice } from "./types.js";

function price(inputPerMillion: number, outputPerMillion: number, cachedInputPerMillion?: number): ModelPrice {
  return cachedInputPerMillion === undefined
    ? { inputPerMillion, outputPerMillion }
    : { inputPerMillion, outputPerMillion, cachedInputPerMillion };
}

/**
 * Anthropic's prompt-caching rates, the same multiples of the input price for every model:
 * cache reads 0.1×, five-minute cache writes 1.25×, one-hour cache writes 2×.
 */
function claude(inputPerMillion: number, outputPerMillion: number): ModelPrice {
  return {
    inputPerMillion,
    outputPerMillion,
    cachedInputPerMillion: inputPerMillion / 10,
    cacheWritePerMillion: inputPerMillion * CACHE_WRITE_MULTIPLIER,
    cacheWrite1hPerMillion: inputPerMillion * CACHE_WRITE_1H_MULTIPLIER,
  };
}

/** Anthropic's price of a five-minute / one-hour cache write, as a multiple of the input price. */
export const CACHE_WRITE_MULTIPLIER = 1.25;
export const CACHE_WRITE_1H_MULTIPLIER = 2;

/**
 * Providers' published list prices, USD per million tokens (standard tier, no batch
 * discounts), with their prompt-caching rates. Config `pricing:` entries replace these per
 * model; keys are the model names without a date suffix (see {@link modelPrice}).
 */
export const DEFAULT_PRICING: Readonly<Record<string, Readonly<ModelPrice>>> = Object.freeze({
  // OpenAI: cached input per model; no cache writes are charged.
  "gpt-5": price(1.25, 10, 0.125),
  "gpt-5-mini": price(0.25, 2, 0.025),
  "gpt-5-nano": price(0.05, 0.4, 0.005),
  "gpt-4.1": price(2, 8, 0.5),
  "gpt-4.1-mini": price(0.4, 1.6, 0.1),
  "gpt-4.1-nano": price(0.1, 0.4, 0.025),
  "gpt-4o": price(2.5, 10, 1.25),
  "gpt-4o-mini": price(0.15, 0.6, 0.075),
  "gpt-4-turbo": price(10, 30),
  "gpt-4": price(30, 60),
  "gpt-3.5-turbo": price(0.5, 1.5),
  o1: price(15, 60, 7.5),
  "o1-mini": price(1.1, 4.4, 0.55),
  o3: price(2, 8, 0.5),
  "o3-mini": price(1.1, 4.4, 0.55),
  "o4-mini": price(1.1, 4.4, 0.275),
  "text-embedding-3-small": price(0.02, 0),
  "text-embedding-3-large": price(0.13, 0),
  "text-embedding-ada-002": price(0.1, 0),
  // Anthropic
  "claude-opus-4-5": claude(5, 25),
  "claude-opus-4-1": claude(15, 75),
  "claude-opus-4": claude(15, 75),
  "claude-sonnet-4-5": claude(3, 15),
  "claude-sonnet-4": claude(3, 15),
  "claude-haiku-4-5": claude(1, 5),
  "claude-3-7-sonnet": claude(3, 15),
  "claude-3-5-sonnet": claude(3, 15),
  "claude-3-5-haiku": claude(0.8, 4),
  "claude-3-opus": claude(15, 75),
  // Published rounded: $0.03 reads and $0.30 writes rather than 0.1× and 1.25× of $0.25.
  "claude-3-haiku": { ...claude(0.25, 1.25), cachedInputPerMillion: 0.03, cacheWritePerMillion: 0.3 },
});

/** Every rate of a price, the unset cache rates filled in. */
export interface CachePrices {
  cachedInputPerMillion: number;
  cacheWritePerMillion: number;
  cacheWrite1hPerMillion: number;
}

/**
 * The cache rates of a price. Unset, cached input costs what input costs (no discount is
 * assumed, so a budget never undercounts), and cache writes cost Anthropic's multiples of
 * the input price: only Anthropic's API reports cache writes, and it charges every model
 * that way.
 */
export function cachePrices(price: ModelPrice): CachePrices {
  const input = price.inputPerMillion;
  return {
    cachedInputPerMillion: price.cachedInputPerMillion ?? input,
    cacheWritePerMillion: price.cacheWritePerMillion ?? input * CACHE_WRITE_MULTIPLIER,
    cacheWrite1hPerMillion: price.cacheWrite1hPerMillion ?? input * CACHE_WRITE_1H_MULTIPLIER,
  };
}

/** Whether two prices are the same in every rate they set. */
export function samePrice(a: ModelPrice, b: ModelPrice): boolean {
  return (
    a.inputPerMillion === b.inputPerMillion &&
    a.outputPerMillion === b.outputPerMillion &&
    a.cachedInputPerMillion === b.cachedInputPerMillion &&
    a.cacheWritePerMillion === b.cacheWritePerMillion &&
    a.cacheWrite1hPerMillion === b.cacheWrite1hPerMillion
  );
}

/**
 * The price of `model`: an exact entry, else the longest entry that prefixes it at a "-",
 * so dated snapshots ("gpt-4o-2024-08-06", "claude-sonnet-4-20250514", "claude-3-5-sonnet-latest")
 * cost what their family costs, while "gpt-4o" never falls back to "gpt-4". Undefined when
 * nothing matches: unknown models are reported, never silently free.
 */
export function modelPrice(pricing: Readonly<Record<string, ModelPrice>>, model: string): ModelPrice | undefined {
  if (Object.hasOwn(pricing, model)) return pricing[model];
  let best: string | undefined;
  for (const name of Object.keys(pricing)) {
    if (model.startsWith(`${name}-`) && (best === undefined || name.length > best.length)) best = name;
  }
  return best === undefined ? undefined : pricing[best];
}
