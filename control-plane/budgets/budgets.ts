import type { Logger } from "../../common/logger.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type { GatewayConfig } from "../config/types.js";
import type { MetricFamily } from "../http/metrics.js";
import type { IngestResult, Store, StoredEvent, StoredModelPrice } from "../store/store.js";
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
 * Pricing and budgets on the ingest path: every completion gets its cost_usd here, and
 * the store counts it against the org's budgets in the transaction that stores it.
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

  /**
   * Prices the completions among `events` and stores them. With `countSpend` (real
   * traffic; not test events) their cost also counts against budgets, and budget events
   * for thresholds crossed come back in `generated`.
   */
  async ingest(
    events: Event[],
    route: (event: Event) => readonly string[],
    options: { countSpend: boolean },
  ): Promise<IngestResult> {
    for (const event of events) this.prices.priceEvent(event);
    const accounting = options.countSpend ? this.ledger.accounting(costOf) : undefined;
    const result = await this.store.ingest(events, route, accounting);
    this.ledger.observe(result);
    return result;
  }

  /** Persists a model's price, then charges it from the next event on. */
  async setModelPrice(price: StoredModelPrice): Promise<void> {
    await this.store.putModelPrice(price);
    this.prices.set(price);
  }

  metrics(): MetricFamily[] {
    return this.prices.metrics();
  }

  close(): void {
    this.ledger.close();
  }
}

function costOf(event: Event): number {
  return event.payload.case === "completion" ? event.payload.value.costUsd : 0;
}

/** What an ingest stored and generated, in seq order: what the live feed gets. */
export function storedAndGenerated(result: IngestResult): StoredEvent[] {
  if (!result.generated?.length) return result.stored;
  return [...result.stored, ...result.generated].sort((a, b) => a.seq - b.seq);
}
