import type { ModelPrice } from "./types.js";

function price(inputPerMillion: number, outputPerMillion: number): ModelPrice {
  return { inputPerMillion, outputPerMillion };
}

/**
 * Providers' published list prices, USD per million tokens (standard tier, no caching or
 * batch discounts). Config `pricing:` entries replace these per model; keys are the model
 * names without a date suffix (see {@link modelPrice}).
 */
export const DEFAULT_PRICING: Readonly<Record<string, Readonly<ModelPrice>>> = Object.freeze({
  // OpenAI
  "gpt-5": price(1.25, 10),
  "gpt-5-mini": price(0.25, 2),
  "gpt-5-nano": price(0.05, 0.4),
  "gpt-4.1": price(2, 8),
  "gpt-4.1-mini": price(0.4, 1.6),
  "gpt-4.1-nano": price(0.1, 0.4),
  "gpt-4o": price(2.5, 10),
  "gpt-4o-mini": price(0.15, 0.6),
  "gpt-4-turbo": price(10, 30),
  "gpt-4": price(30, 60),
  "gpt-3.5-turbo": price(0.5, 1.5),
  o1: price(15, 60),
  "o1-mini": price(1.1, 4.4),
  o3: price(2, 8),
  "o3-mini": price(1.1, 4.4),
  "o4-mini": price(1.1, 4.4),
  "text-embedding-3-small": price(0.02, 0),
  "text-embedding-3-large": price(0.13, 0),
  "text-embedding-ada-002": price(0.1, 0),
  // Anthropic
  "claude-opus-4-5": price(5, 25),
  "claude-opus-4-1": price(15, 75),
  "claude-opus-4": price(15, 75),
  "claude-sonnet-4-5": price(3, 15),
  "claude-sonnet-4": price(3, 15),
  "claude-haiku-4-5": price(1, 5),
  "claude-3-7-sonnet": price(3, 15),
  "claude-3-5-sonnet": price(3, 15),
  "claude-3-5-haiku": price(0.8, 4),
  "claude-3-opus": price(15, 75),
  "claude-3-haiku": price(0.25, 1.25),
});

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
