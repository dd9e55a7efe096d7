import type { Logger } from "../../common/logger.js";
import type { GatewayConfig } from "../config/types.js";
import type { MetricFamily } from "../http/metrics.js";
import type { Store, StoredModelPrice } from "../store/store.js";
import { BudgetLedger, type BudgetStateInit } from "./budget-ledger.js";
import { PriceBook } from "./price-book.js";

export interface BudgetsOptions {
  store: Store;
  config: GatewayConfig;
  logger: Logger;
  /** The clock for budget periods, budget events and log rate limits; tests move it. */
  now?: () => number;
  /** Receives the budgets' state for the sidecars' config snapshot (see BudgetLedger). */
  publish: (states: BudgetStateInit[]) => void;
  refreshEveryMs?: number;
}

/**
 * Pricing and budgets: the price book that gives every completion its cost_usd on the
 * ingest path (control-plane/ingest/pipeline.ts), and the ledger whose accounting the store
 * applies in the transaction that stores the events.
 */
export class Budgets {
  private constructor(
    private readonly store: Store,
    readonly prices: PriceBook,
    readonly ledger: BudgetLedger,
  ) {}

  /** Loads runtime prices, upserts the config's budgets and publishes their state. */
  static async start(options: BudgetsOptions): Promise<Budgets> {
    const { store, config, logger } = options;
    const prices = new PriceBook({
      configPricing: config.pricing,
      stored: await store.listModelPrices(),
      logger,
      ...(options.now ? { now: options.now } : {}),
    });
    const ledger = new BudgetLedger({
      store,
      logger,
      publish: options.publish,
      ...(options.now ? { now: options.now } : {}),
      ...(options.refreshEveryMs ? { refreshEveryMs: options.refreshEveryMs } : {}),
    });
    await ledger.start(config.budgets);
    return new Budgets(store, prices, ledger);
  }

  /** Persists a model's price, then charges it from the next event on. */
  async setModelPrice(price: StoredModelPrice): Promise<void> {
    await this.store.putModelPrice(price);
    this.prices.set(price);
  }

  /** Takes the prices set at runtime again (another replica set one). */
  async reloadPrices(): Promise<void> {
    for (const price of await this.store.listModelPrices()) this.prices.set(price);
  }

  metrics(): MetricFamily[] {
    return this.prices.metrics();
  }

  close(): void {
    this.ledger.close();
  }
}
