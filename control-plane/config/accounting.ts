import { DEFAULT_BUDGET_THRESHOLDS } from "./defaults.js";
import type { ConfigReader, Field, NumberRule } from "./reader.js";
import type { BudgetConfig, LimitConfig, ModelPrice } from "./types.js";

const LIMIT_TYPES = ["daily", "monthly"] as const;
const PER_MINUTE: NumberRule = { integer: true, min: 1, max: 1_000_000_000, expected: "a whole number per minute" };
// Shared with the Admin API's SetBudget and SetModelPrice (control-plane/budgets/admin-rpcs.ts).
export const USD_PER_MILLION: NumberRule = { min: 0, max: 100_000, expected: "USD per million tokens" };
export const BUDGET_LIMIT: NumberRule = { above: 0, max: 1_000_000_000, expected: "a spend limit in USD" };
export const BUDGET_THRESHOLD: NumberRule = { integer: true, min: 1, max: 100, expected: "a percentage" };

/** Reports a key the item must have, at the item's line (unless the item is already reported). */
function requireKey(r: ConfigReader, item: Field, keys: Map<string, Field>, key: string, expected: string): void {
  if (!keys.has(key) && r.isValid(item.path))
    r.report(`${item.path}.${key}`, item.line, `is required; expected ${expected}`);
}

export function readBudgets(r: ConfigReader, field: Field | undefined): BudgetConfig[] {
  const budgets: BudgetConfig[] = [];
  const seen = new Map<string, string>();
  for (const item of r.list(field, "a list of budgets") ?? []) {
    const keys = r.section(item, ["org_id", "limit_type", "budget_limit", "thresholds", "enforce"]);
    requireKey(r, item, keys, "org_id", "the organisation id the budget applies to");
    requireKey(r, item, keys, "limit_type", '"daily" or "monthly"');
    requireKey(r, item, keys, "budget_limit", "the spend limit in USD, above 0");
    const orgId = r.string(keys.get("org_id"));
    const limitType = r.oneOf(keys.get("limit_type"), LIMIT_TYPES);
    const budgetLimit = r.number(keys.get("budget_limit"), BUDGET_LIMIT);
    const thresholds = readThresholds(r, keys.get("thresholds"));
    const enforce = r.boolean(keys.get("enforce")) ?? false;
    if (orgId === undefined || limitType === undefined || budgetLimit === undefined) continue;
    const identity = `${orgId}\u0000${limitType}`;
    const first = seen.get(identity);
    if (first) {
      r.failEntry(
        item,
        `repeats the ${limitType} budget of org "${orgId}" in ${first}; expected one budget per org and limit_type`,
      );
      continue;
    }
    seen.set(identity, item.path);
    budgets.push({ orgId, limitType, budgetLimit, thresholds: thresholds ?? [...DEFAULT_BUDGET_THRESHOLDS], enforce });
  }
  return budgets;
}

function readThresholds(r: ConfigReader, field: Field | undefined): number[] | undefined {
  const items = r.list(field, "a list of percentages such as [50, 80, 90, 100]");
  if (!items) return undefined;
  if (field && items.length === 0) {
    r.fail(field, "is empty; expected percentages from 1 to 100 such as [50, 80, 90, 100], or remove it for those");
    return undefined;
  }
  const thresholds: number[] = [];
  let valid = true;
  for (const item of items) {
    const value = r.number(item, BUDGET_THRESHOLD);
    if (value === undefined) {
      valid = false;
      continue;
    }
    const previous = thresholds.at(-1);
    if (previous !== undefined && value <= previous) {
      r.fail(
        item,
        `(${value}) is not above the threshold before it (${previous}); expected ascending percentages without repeats`,
      );
      valid = false;
      continue;
    }
    thresholds.push(value);
  }
  return valid ? thresholds : undefined;
}

/** Config prices by model; the caller merges them over the defaults. */
export function readPricing(r: ConfigReader, field: Field | undefined): Record<string, ModelPrice> {
  const prices: [string, ModelPrice][] = [];
  for (const { key: model, field: modelField } of r.entries(field, "a mapping of model name to { input, output }")) {
    const keys = r.section(modelField, ["input", "output", "cached_input", "cache_write", "cache_write_1h"]);
    requireKey(r, modelField, keys, "input", "USD per million input tokens");
    requireKey(r, modelField, keys, "output", "USD per million output tokens");
    const input = r.number(keys.get("input"), USD_PER_MILLION);
    const output = r.number(keys.get("output"), USD_PER_MILLION);
    const cachedInput = r.number(keys.get("cached_input"), USD_PER_MILLION);
    const cacheWrite = r.number(keys.get("cache_write"), USD_PER_MILLION);
    const cacheWrite1h = r.number(keys.get("cache_write_1h"), USD_PER_MILLION);
    if (input === undefined || output === undefined) continue;
    const price: ModelPrice = { inputPerMillion: input, outputPerMillion: output };
    if (cachedInput !== undefined) price.cachedInputPerMillion = cachedInput;
    if (cacheWrite !== undefined) price.cacheWritePerMillion = cacheWrite;
    if (cacheWrite1h !== undefined) price.cacheWrite1hPerMillion = cacheWrite1h;
    prices.push([model, price]);
  }
  return Object.fromEntries(prices);
}

export function readLimits(r: ConfigReader, field: Field | undefined): LimitConfig[] {
  const limits: LimitConfig[] = [];
  const seen = new Map<string, string>();
  for (const item of r.list(field, "a list of rate limits") ?? []) {
    const keys = r.section(item, ["org_id", "app", "requests_per_minute", "tokens_per_minute"]);
    requireKey(r, item, keys, "org_id", "the organisation id the limit applies to");
    if (!keys.has("requests_per_minute") && !keys.has("tokens_per_minute") && r.isValid(item.path)) {
      r.failEntry(item, "sets no limit; expected requests_per_minute, tokens_per_minute or both");
    }
    const orgId = r.string(keys.get("org_id"));
    const app = r.string(keys.get("app"), { allowEmpty: true }) ?? "";
    const requestsPerMinute = r.number(keys.get("requests_per_minute"), PER_MINUTE);
    const tokensPerMinute = r.number(keys.get("tokens_per_minute"), PER_MINUTE);
    if (orgId === undefined) continue;
    const identity = `${orgId}\u0000${app}`;
    const first = seen.get(identity);
    if (first) {
      r.failEntry(
        item,
        `repeats the limit of org "${orgId}"${app ? ` app "${app}"` : ""} in ${first}; expected one limit per org and app`,
      );
      continue;
    }
    seen.set(identity, item.path);
    const limit: LimitConfig = { orgId, app };
    if (requestsPerMinute !== undefined) limit.requestsPerMinute = requestsPerMinute;
    if (tokensPerMinute !== undefined) limit.tokensPerMinute = tokensPerMinute;
    limits.push(limit);
  }
  return limits;
}
