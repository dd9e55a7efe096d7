import type Database from "better-sqlite3";
import type { Event } from "../../../gen/aigw/v1/events_pb.js";
import {
  type BudgetLimitType,
  type BudgetRecord,
  type BudgetSpec,
  checkBudgetSpec,
  checkModelPrice,
  type ModelPriceRow,
  modelPriceColumns,
  modelPriceOfRow,
  type SpendAccounting,
  type SpendState,
  type SpendTotal,
  SpendTracker,
  type StoredModelPrice,
} from "../budgets.js";
import type { StoredEvent } from "../events.js";

interface BudgetRow {
  org_id: string;
  limit_type: BudgetLimitType;
  budget_limit: number;
  thresholds: string;
  enforce: number;
}

/** What one ingest transaction's accounting produced. */
export interface SpendBatch {
  tracker: SpendTracker;
  generated: StoredEvent[];
  deliveries: number;
}

/**
 * The SQLite side of budgets and pricing (schema v2): the SQL; the rules are ../budgets.ts.
 * Every method runs synchronously in the caller's transaction: SqliteStore wraps them, so
 * spend, fired thresholds and budget events commit together with the events that caused
 * them, or not at all.
 */
export class SqliteBudgetTables {
  readonly #s;

  constructor(db: Database.Database) {
    this.#s = {
      addSpend: db.prepare(
        `INSERT INTO budget_spend (org_id, limit_type, period, spend, updated_at)
         VALUES (@orgId, @limitType, @period, @spend, @now)
         ON CONFLICT (org_id, limit_type, period) DO UPDATE SET spend = spend + excluded.spend, updated_at = excluded.updated_at`,
      ) as Database.Statement<[Record<string, unknown>]>,
      spendOf: db
        .prepare(
          "SELECT spend FROM budget_spend WHERE org_id = @orgId AND limit_type = @limitType AND period = @period",
        )
        .pluck() as Database.Statement<[Record<string, unknown>], number>,
      budget: db.prepare(
        "SELECT * FROM budgets WHERE org_id = @orgId AND limit_type = @limitType",
      ) as Database.Statement<[Record<string, unknown>], BudgetRow>,
      budgets: db.prepare("SELECT * FROM budgets ORDER BY org_id, limit_type") as Database.Statement<[], BudgetRow>,
      putBudget: db.prepare(
        `INSERT INTO budgets (org_id, limit_type, budget_limit, thresholds, enforce, created_at, updated_at)
         VALUES (@orgId, @limitType, @budgetLimit, @thresholds, @enforce, @now, @now)
         ON CONFLICT (org_id, limit_type) DO UPDATE SET budget_limit = excluded.budget_limit,
           thresholds = excluded.thresholds, enforce = excluded.enforce, updated_at = excluded.updated_at`,
      ) as Database.Statement<[Record<string, unknown>]>,
      deleteBudget: db.prepare(
        "DELETE FROM budgets WHERE org_id = @orgId AND limit_type = @limitType",
      ) as Database.Statement<[Record<string, unknown>]>,
      fire: db.prepare(
        `INSERT INTO budget_thresholds_fired (org_id, limit_type, period, threshold, event_id, fired_at)
         VALUES (@orgId, @limitType, @period, @threshold, @eventId, @now)
         ON CONFLICT DO NOTHING`,
      ) as Database.Statement<[Record<string, unknown>]>,
      fired: db
        .prepare(
          `SELECT threshold FROM budget_thresholds_fired
           WHERE org_id = @orgId AND limit_type = @limitType AND period = @period ORDER BY threshold`,
        )
        .pluck() as Database.Statement<[Record<string, unknown>], number>,
      prices: db.prepare("SELECT * FROM model_prices ORDER BY model") as Database.Statement<[], ModelPriceRow>,
      putPrice: db.prepare(
        `INSERT INTO model_prices (model, input_per_million, output_per_million, cached_input_per_million,
           cache_write_per_million, cache_write_1h_per_million, updated_at)
         VALUES (@model, @inputPerMillion, @outputPerMillion, @cachedInputPerMillion, @cacheWritePerMillion,
           @cacheWrite1hPerMillion, @now)
         ON CONFLICT (model) DO UPDATE SET input_per_million = excluded.input_per_million,
           output_per_million = excluded.output_per_million,
           cached_input_per_million = excluded.cached_input_per_million,
           cache_write_per_million = excluded.cache_write_per_million,
           cache_write_1h_per_million = excluded.cache_write_1h_per_million, updated_at = excluded.updated_at`,
      ) as Database.Statement<[Record<string, unknown>]>,
    };
  }

  /** A batch's accounting, reading the spend, budgets and fired thresholds inside the transaction. */
  newBatch(accounting: SpendAccounting): SpendBatch {
    const state: SpendState = {
      spend: (orgId, limitType, period) => this.#s.spendOf.get({ orgId, limitType, period }) ?? 0,
      budget: (orgId, limitType) => {
        const row = this.#s.budget.get({ orgId, limitType });
        return row && toBudgetSpec(row);
      },
      fired: (orgId, limitType, period) => this.#s.fired.all({ orgId, limitType, period }),
    };
    return { tracker: new SpendTracker(accounting, state), generated: [], deliveries: 0 };
  }

  /**
   * Counts a newly stored event's cost and stores a budget event (through `storeEvent`,
   * which routes it) for each threshold it makes reachable for the first time.
   */
  account(
    event: Event,
    batch: SpendBatch,
    now: number,
    storeEvent: (event: Event) => { stored: StoredEvent; deliveries: number },
  ): void {
    for (const crossing of batch.tracker.add(event)) {
      const { budget, period, threshold, eventId } = crossing;
      this.#s.fire.run({ orgId: budget.orgId, limitType: budget.limitType, period, threshold, eventId, now });
      const made = storeEvent(batch.tracker.budgetEvent(crossing));
      batch.generated.push(made.stored);
      batch.deliveries += made.deliveries;
    }
  }

  /** Writes the batch's spend (once per key); returns the spend after it. */
  finish(batch: SpendBatch, now: number): SpendTotal[] {
    for (const added of batch.tracker.added()) this.#s.addSpend.run({ ...added, now });
    return batch.tracker.totals();
  }

  listBudgets(periodOf: (limitType: BudgetLimitType) => string): BudgetRecord[] {
    return this.#s.budgets.all().map((row) => {
      const spec = toBudgetSpec(row);
      const key = { orgId: spec.orgId, limitType: spec.limitType, period: periodOf(spec.limitType) };
      return {
        ...spec,
        period: key.period,
        currentSpend: this.#s.spendOf.get(key) ?? 0,
        firedThresholds: this.#s.fired.all(key),
      };
    });
  }

  putBudget(budget: BudgetSpec, now: number): void {
    checkBudgetSpec(budget);
    this.#s.putBudget.run({
      orgId: budget.orgId,
      limitType: budget.limitType,
      budgetLimit: budget.budgetLimit,
      thresholds: JSON.stringify(budget.thresholds),
      enforce: budget.enforce ? 1 : 0,
      now,
    });
  }

  deleteBudget(orgId: string, limitType: BudgetLimitType): boolean {
    return this.#s.deleteBudget.run({ orgId, limitType }).changes > 0;
  }

  listModelPrices(): StoredModelPrice[] {
    return this.#s.prices.all().map(modelPriceOfRow);
  }

  putModelPrice(price: StoredModelPrice, now: number): void {
    checkModelPrice(price);
    this.#s.putPrice.run({ ...modelPriceColumns(price), now });
  }
}

function toBudgetSpec(row: BudgetRow): BudgetSpec {
  return {
    orgId: row.org_id,
    limitType: row.limit_type,
    budgetLimit: row.budget_limit,
    thresholds: JSON.parse(row.thresholds) as number[],
    enforce: row.enforce === 1,
  };
}
