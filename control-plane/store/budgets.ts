import { newEventId } from "../../common/ids.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";

/** Budgets, spend and model prices. Spend is counted by ingest, in its transaction (see EventStore). */
export interface BudgetStore {
  /** Every budget with its spend and fired thresholds in the period `periodOf` names. */
  listBudgets(periodOf: (limitType: BudgetLimitType) => string): Promise<BudgetRecord[]>;
  /** Creates or replaces the budget of (orgId, limitType); its spend and fired thresholds stay. */
  putBudget(budget: BudgetSpec): Promise<void>;
  /** False when absent. Spend history stays (it is the org's, not the budget's). */
  deleteBudget(orgId: string, limitType: BudgetLimitType): Promise<boolean>;
  /** Prices set at runtime (SetModelPrice), by model. */
  listModelPrices(): Promise<StoredModelPrice[]>;
  putModelPrice(price: StoredModelPrice): Promise<void>;
}

export type BudgetLimitType = "daily" | "monthly";

export interface BudgetSpec {
  orgId: string;
  limitType: BudgetLimitType;
  /** USD, above 0. */
  budgetLimit: number;
  /** Percentages, ascending, 1..100. */
  thresholds: number[];
  enforce: boolean;
}

export interface BudgetRecord extends BudgetSpec {
  period: string;
  currentSpend: number;
  /** Ascending. */
  firedThresholds: number[];
}

export interface SpendTotal {
  orgId: string;
  limitType: BudgetLimitType;
  period: string;
  spend: number;
}

/** A budget threshold reached for the first time in a period. */
export interface BudgetCrossing {
  budget: BudgetSpec;
  period: string;
  currentSpend: number;
  threshold: number;
  /** The id the budget event must have (recorded with the threshold). */
  eventId: string;
}

/** What ingest needs to count spend; its rules live in control-plane/budgets. */
export interface SpendAccounting {
  /** The period key of each limit type for this batch (one clock reading per batch). */
  periodOf(limitType: BudgetLimitType): string;
  /** USD an event adds to its org's spend; 0 for none. */
  costOf(event: Event): number;
  /** Thresholds (percent) the spend has reached, fired or not. */
  reached(budget: BudgetSpec, spend: number): number[];
  budgetEvent(crossing: BudgetCrossing): Event;
}

export interface StoredModelPrice {
  model: string;
  inputPerMillion: number;
  outputPerMillion: number;
  /** Unset: the default rule of control-plane/config/pricing.ts (cachePrices). */
  cachedInputPerMillion?: number;
  cacheWritePerMillion?: number;
  cacheWrite1hPerMillion?: number;
}

/** The limit types spend is counted for; one spend row per org, type and period. */
export const LIMIT_TYPES: readonly BudgetLimitType[] = ["daily", "monthly"];

/** The key of one spend row, as text (maps of spend per batch). */
export function spendKey(orgId: string, limitType: BudgetLimitType, period: string): string {
  return `${orgId}\u0000${limitType}\u0000${period}`;
}

/** An event's cost as accounting counts it: only a positive, finite cost of an org. */
export function countableCost(accounting: SpendAccounting, event: Event): number {
  const cost = accounting.costOf(event);
  return cost > 0 && Number.isFinite(cost) && event.orgId !== "" ? cost : 0;
}

/** What a SpendTracker reads of the store: the spend, budgets and fired thresholds before the batch. */
export interface SpendState {
  spend(orgId: string, limitType: BudgetLimitType, period: string): number;
  budget(orgId: string, limitType: BudgetLimitType): BudgetSpec | undefined;
  fired(orgId: string, limitType: BudgetLimitType, period: string): readonly number[];
}

/**
 * Spend accounting, the rule every backend applies in its ingest transaction: each new
 * event (in order) adds its cost to its org's spend per limit type and period; a budget
 * threshold the spend reaches for the first time in that period fires once, right after
 * the event that reached it, as a budget event. The backend writes what the tracker
 * decides: the spend totals, the fired thresholds and the budget events (with their
 * deliveries), all in the transaction that stores the events. It must keep the spend rows
 * it read from changing under it until it commits (a lock with several writers).
 */
export class SpendTracker {
  readonly #accounting: SpendAccounting;
  readonly #state: SpendState;
  readonly #spend = new Map<string, SpendTotal>();
  readonly #added = new Map<string, SpendTotal>();
  readonly #fired = new Map<string, Set<number>>();
  readonly crossings: BudgetCrossing[] = [];

  constructor(accounting: SpendAccounting, state: SpendState) {
    this.#accounting = accounting;
    this.#state = state;
  }

  /** The keys an event would count under (empty when it costs nothing). */
  static keysOf(
    accounting: SpendAccounting,
    event: Event,
  ): { orgId: string; limitType: BudgetLimitType; period: string }[] {
    if (countableCost(accounting, event) === 0) return [];
    return LIMIT_TYPES.map((limitType) => ({ orgId: event.orgId, limitType, period: accounting.periodOf(limitType) }));
  }

  /** Counts a newly stored event; returns the thresholds it made fire (usually none), in order. */
  add(event: Event): BudgetCrossing[] {
    const cost = countableCost(this.#accounting, event);
    if (cost === 0) return [];
    const out: BudgetCrossing[] = [];
    for (const limitType of LIMIT_TYPES) {
      const period = this.#accounting.periodOf(limitType);
      const key = spendKey(event.orgId, limitType, period);
      let total = this.#spend.get(key);
      if (total === undefined) {
        total = { orgId: event.orgId, limitType, period, spend: this.#state.spend(event.orgId, limitType, period) };
        this.#spend.set(key, total);
      }
      total.spend += cost;
      const added = this.#added.get(key) ?? { orgId: event.orgId, limitType, period, spend: 0 };
      added.spend += cost;
      this.#added.set(key, added);
      const budget = this.#state.budget(event.orgId, limitType);
      if (budget === undefined) continue;
      let fired = this.#fired.get(key);
      if (fired === undefined) {
        fired = new Set(this.#state.fired(event.orgId, limitType, period));
        this.#fired.set(key, fired);
      }
      for (const threshold of this.#accounting.reached(budget, total.spend)) {
        if (fired.has(threshold)) continue;
        fired.add(threshold);
        const crossing = { budget, period, currentSpend: total.spend, threshold, eventId: newEventId() };
        out.push(crossing);
        this.crossings.push(crossing);
      }
    }
    return out;
  }

  /** Spend after the batch, of every key it changed. */
  totals(): SpendTotal[] {
    return [...this.#spend.values()].map((t) => ({ ...t }));
  }

  /** The budget event of a crossing this tracker decided. */
  budgetEvent(crossing: BudgetCrossing): Event {
    return this.#accounting.budgetEvent(crossing);
  }

  /** Cost the batch added, per key (what an UPDATE … spend = spend + cost writes). */
  added(): SpendTotal[] {
    return [...this.#added.values()].map((t) => ({ ...t }));
  }
}

/** The store's own guard; the Admin API validates first and names the request's fields. */
export function checkBudgetSpec(budget: BudgetSpec): void {
  const what = `budget of org "${budget.orgId}"`;
  if (budget.orgId === "") throw new TypeError("budget: orgId must not be empty");
  if (!LIMIT_TYPES.includes(budget.limitType)) {
    throw new RangeError(`${what}: limitType must be daily or monthly, got "${String(budget.limitType)}"`);
  }
  if (!Number.isFinite(budget.budgetLimit) || budget.budgetLimit <= 0) {
    throw new RangeError(`${what}: budgetLimit must be a finite number above 0, got ${budget.budgetLimit}`);
  }
  budget.thresholds.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 1 || t > 100 || (i > 0 && t <= (budget.thresholds[i - 1] ?? 0))) {
      throw new RangeError(`${what}: thresholds[${i}] (${t}) must be a whole percentage 1..100 above the one before`);
    }
  });
}

export function checkModelPrice(price: StoredModelPrice): void {
  if (price.model === "") throw new TypeError("model price: model must not be empty");
  for (const [name, value] of [
    ["inputPerMillion", price.inputPerMillion],
    ["outputPerMillion", price.outputPerMillion],
    ["cachedInputPerMillion", price.cachedInputPerMillion ?? 0],
    ["cacheWritePerMillion", price.cacheWritePerMillion ?? 0],
    ["cacheWrite1hPerMillion", price.cacheWrite1hPerMillion ?? 0],
  ] as const) {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(`model price of "${price.model}": ${name} must be a finite number ≥ 0, got ${value}`);
    }
  }
}

/** A model_prices row as both stores read it (cache prices NULL when unset). */
export interface ModelPriceRow {
  model: string;
  input_per_million: number;
  output_per_million: number;
  cached_input_per_million: number | null;
  cache_write_per_million: number | null;
  cache_write_1h_per_million: number | null;
}

export function modelPriceOfRow(row: ModelPriceRow): StoredModelPrice {
  const price: StoredModelPrice = {
    model: row.model,
    inputPerMillion: row.input_per_million,
    outputPerMillion: row.output_per_million,
  };
  if (row.cached_input_per_million !== null) price.cachedInputPerMillion = row.cached_input_per_million;
  if (row.cache_write_per_million !== null) price.cacheWritePerMillion = row.cache_write_per_million;
  if (row.cache_write_1h_per_million !== null) price.cacheWrite1hPerMillion = row.cache_write_1h_per_million;
  return price;
}

/** A price as the insert's parameters, unset cache prices as NULL. */
export function modelPriceColumns(price: StoredModelPrice) {
  return {
    model: price.model,
    inputPerMillion: price.inputPerMillion,
    outputPerMillion: price.outputPerMillion,
    cachedInputPerMillion: price.cachedInputPerMillion ?? null,
    cacheWritePerMillion: price.cacheWritePerMillion ?? null,
    cacheWrite1hPerMillion: price.cacheWrite1hPerMillion ?? null,
  };
}
