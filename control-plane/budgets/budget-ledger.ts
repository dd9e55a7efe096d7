import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "../../common/logger.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import type { BudgetStateSchema } from "../../gen/aigw/v1/ingest_pb.js";
import type {
  BudgetCrossing,
  BudgetLimitType,
  BudgetRecord,
  BudgetSpec,
  IngestResult,
  SpendAccounting,
  Store,
} from "../store/store.js";
import { budgetPeriod } from "./periods.js";

export type BudgetStateInit = MessageInitShape<typeof BudgetStateSchema>;

/** Float sums of many small costs land a hair under a round limit; a nano-dollar is nothing. */
const SPEND_EPSILON_USD = 1e-9;
const DEFAULT_REFRESH_MS = 60_000;

export interface BudgetLedgerOptions {
  store: Store;
  logger: Logger;
  /** The clock that decides periods and stamps budget events; tests move it. */
  now?: () => number;
  /**
   * Receives every budget's state for the sidecars' config snapshot when a budget
   * changes or one's `exceeded` flips (not on every spend change: current_spend in the
   * snapshot is the spend at the last such change, so it may be stale; `exceeded` is not).
   */
  publish: (states: BudgetStateInit[]) => void;
  /** How often the cache is reloaded from the store (other replicas' spend, a new period). */
  refreshEveryMs?: number;
}

/** Thresholds (percent) of `budget` that `spend` has reached. */
export function reachedThresholds(budget: BudgetSpec, spend: number): number[] {
  return budget.thresholds.filter((t) => spend >= (budget.budgetLimit * t) / 100 - SPEND_EPSILON_USD);
}

export function isExceeded(budget: { budgetLimit: number; currentSpend: number }): boolean {
  return budget.currentSpend >= budget.budgetLimit - SPEND_EPSILON_USD;
}

/**
 * Budgets per org and UTC period. The counting is the store's (spend, fired thresholds and
 * budget events commit with the events that caused them: see SpendAccounting); this keeps
 * a cache of each budget's spend for the sidecars' enforcement state, and the rules the
 * store applies: which thresholds a spend reaches and what a budget event says.
 */
export class BudgetLedger {
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #publish: (states: BudgetStateInit[]) => void;
  readonly #refreshEveryMs: number;
  #budgets = new Map<string, BudgetRecord>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: BudgetLedgerOptions) {
    this.#store = options.store;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#publish = options.publish;
    this.#refreshEveryMs = options.refreshEveryMs ?? DEFAULT_REFRESH_MS;
  }

  /** Upserts the config file's budgets, loads state, publishes it, and starts the refresh timer. */
  async start(configBudgets: readonly BudgetSpec[]): Promise<void> {
    for (const [i, b] of configBudgets.entries()) {
      try {
        await this.#store.putBudget(b);
      } catch (err) {
        throw new Error(`budgets[${i}] (org "${b.orgId}", ${b.limitType}): ${(err as Error).message}`, { cause: err });
      }
    }
    await this.reload({ publish: true });
    this.#timer = setInterval(() => {
      this.reload().catch((err: unknown) => this.#logger.error({ err }, "reloading budgets failed"));
    }, this.#refreshEveryMs);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  periodOf(limitType: BudgetLimitType): string {
    return budgetPeriod(limitType, this.#now());
  }

  /** The rules for one ingest batch: one clock reading, so a batch never spans two periods. */
  accounting(costOf: (event: Event) => number): SpendAccounting {
    const now = this.#now();
    const periods = { daily: budgetPeriod("daily", now), monthly: budgetPeriod("monthly", now) };
    return {
      periodOf: (limitType) => periods[limitType],
      costOf,
      reached: reachedThresholds,
      budgetEvent: (crossing) => budgetEvent(crossing, now),
    };
  }

  /** Takes in the spend an ingest committed; publishes when some budget's `exceeded` flipped. */
  observe(result: IngestResult): void {
    // A new period (or spend in one the cache does not hold): read it all again. The
    // store is read now, after the batch committed, so the reload includes its spend.
    const now = this.#now();
    const stale =
      [...this.#budgets.values()].some((b) => b.period !== budgetPeriod(b.limitType, now)) ||
      (result.spend ?? []).some((s) => {
        const b = this.#budgets.get(keyOf(s.orgId, s.limitType));
        return b !== undefined && b.period !== s.period;
      });
    if (stale) {
      this.reload().catch((err: unknown) => this.#logger.error({ err }, "reloading budgets failed"));
      return;
    }
    let flipped = false;
    for (const s of result.spend ?? []) {
      const budget = this.#budgets.get(keyOf(s.orgId, s.limitType));
      if (budget === undefined) continue;
      const was = isExceeded(budget);
      budget.currentSpend = s.spend;
      if (isExceeded(budget) !== was) flipped = true;
    }
    for (const stored of result.generated ?? []) {
      const p = stored.event.payload;
      if (p.case !== "budget") continue;
      const budget = this.#budgets.get(keyOf(stored.event.orgId, p.value.limitType as BudgetLimitType));
      if (budget?.period === p.value.period && !budget.firedThresholds.includes(p.value.threshold)) {
        budget.firedThresholds = [...budget.firedThresholds, p.value.threshold].sort((a, b) => a - b);
      }
    }
    if (flipped) this.#publishStates();
  }

  /** Every budget with its current period, spend and fired thresholds, read from the store. */
  async list(): Promise<BudgetRecord[]> {
    await this.reload();
    return [...this.#budgets.values()].map((b) => ({ ...b, firedThresholds: [...b.firedThresholds] }));
  }

  async set(spec: BudgetSpec): Promise<BudgetRecord> {
    await this.#store.putBudget(spec);
    await this.reload({ publish: true });
    const record = this.#budgets.get(keyOf(spec.orgId, spec.limitType));
    if (record === undefined) throw new Error(`budget of org "${spec.orgId}" (${spec.limitType}) vanished after set`);
    this.#logger.info({ org: spec.orgId, limitType: spec.limitType, limit: spec.budgetLimit }, "budget set");
    return { ...record };
  }

  async delete(orgId: string, limitType: BudgetLimitType): Promise<boolean> {
    const deleted = await this.#store.deleteBudget(orgId, limitType);
    if (deleted) {
      await this.reload({ publish: true });
      this.#logger.info({ org: orgId, limitType }, "budget deleted");
    }
    return deleted;
  }

  /** The sidecars' view: every budget's limit, last known spend, exceeded and enforce. */
  states(): BudgetStateInit[] {
    return [...this.#budgets.values()].map((b) => ({
      orgId: b.orgId,
      limitType: b.limitType,
      budgetLimit: b.budgetLimit,
      currentSpend: b.currentSpend,
      exceeded: isExceeded(b),
      enforce: b.enforce,
    }));
  }

  /**
   * Replaces the cache with the store's state; publishes when asked, or when a budget
   * appeared, went, changed, entered a new period or flipped `exceeded`.
   */
  async reload(options: { publish?: boolean } = {}): Promise<void> {
    const now = this.#now();
    const records = await this.#store.listBudgets((limitType) => budgetPeriod(limitType, now));
    const next = new Map(records.map((r) => [keyOf(r.orgId, r.limitType), r]));
    const changed = options.publish === true || differs(this.#budgets, next);
    this.#budgets = next;
    if (changed) this.#publishStates();
  }

  #publishStates(): void {
    this.#publish(this.states());
  }
}

/** The budget event for a threshold crossed (the product page's payload plus threshold and period). */
export function budgetEvent(crossing: BudgetCrossing, now: number): Event {
  const { budget, currentSpend } = crossing;
  return create(EventSchema, {
    id: crossing.eventId,
    orgId: budget.orgId,
    app: "",
    provider: "",
    time: timestampFromMs(now),
    payload: {
      case: "budget",
      value: {
        usagePercent: Math.round((currentSpend / budget.budgetLimit) * 10_000) / 100,
        limitType: budget.limitType,
        currentSpend: Math.round(currentSpend * 1e6) / 1e6,
        budgetLimit: budget.budgetLimit,
        threshold: crossing.threshold,
        period: crossing.period,
      },
    },
  });
}

function keyOf(orgId: string, limitType: BudgetLimitType): string {
  return `${orgId}\u0000${limitType}`;
}

function differs(before: ReadonlyMap<string, BudgetRecord>, after: ReadonlyMap<string, BudgetRecord>): boolean {
  if (before.size !== after.size) return true;
  for (const [key, b] of after) {
    const a = before.get(key);
    if (
      a === undefined ||
      a.period !== b.period ||
      a.budgetLimit !== b.budgetLimit ||
      a.enforce !== b.enforce ||
      a.thresholds.join() !== b.thresholds.join() ||
      isExceeded(a) !== isExceeded(b)
    ) {
      return true;
    }
  }
  return false;
}
