import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { newEventId, newRequestId } from "../../common/ids.js";
import { budgetEvent, reachedThresholds } from "../../control-plane/budgets/budget-ledger.js";
import type { BudgetLimitType, SpendAccounting, Store } from "../../control-plane/store/store.js";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";

/** A completion that costs `costUsd` (as the control plane priced it). */
export function pricedCompletion(orgId: string, costUsd: number): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId,
    app: "chat",
    provider: "openai",
    time: timestampFromMs(Date.now()),
    payload: { case: "completion", value: { requestId: newRequestId(), model: "gpt-4o", tokensUsed: 10, costUsd } },
  });
}

/** The real rules with fixed periods, so a test chooses which period a batch counts in. */
export function accountingFor(periods: Record<BudgetLimitType, string>): SpendAccounting {
  return {
    periodOf: (limitType) => periods[limitType],
    costOf: (e) => (e.payload.case === "completion" ? e.payload.value.costUsd : 0),
    reached: reachedThresholds,
    budgetEvent: (crossing) => budgetEvent(crossing, Date.now()),
  };
}

const MARCH = { daily: "2026-03-31", monthly: "2026-03" };
const APRIL = { daily: "2026-04-01", monthly: "2026-04" };

/**
 * Budgets and pricing in the Store conformance suite (called from test/store/conformance.ts
 * inside its describe, with the store its beforeEach opened).
 */
export function describeBudgetStoreConformance(current: () => Store): void {
  describe("budgets and pricing", () => {
    it("counts each new event's cost once per org, limit type and period, with or without a budget", async () => {
      const store = current();
      const a = pricedCompletion("org_a", 0.25);
      const first = await store.ingest([a, pricedCompletion("org_b", 1), a], () => [], accountingFor(MARCH));
      expect(first.duplicates).toBe(1);
      expect(first.spend).toEqual(
        expect.arrayContaining([
          { orgId: "org_a", limitType: "daily", period: "2026-03-31", spend: 0.25 },
          { orgId: "org_a", limitType: "monthly", period: "2026-03", spend: 0.25 },
          { orgId: "org_b", limitType: "monthly", period: "2026-03", spend: 1 },
        ]),
      );
      // A re-sent event adds nothing; a budget set later starts from the period's real spend.
      const again = await store.ingest([a], () => [], accountingFor(MARCH));
      expect(again.spend).toEqual([]);
      await store.putBudget({
        orgId: "org_a",
        limitType: "monthly",
        budgetLimit: 10,
        thresholds: [50],
        enforce: false,
      });
      const [budget] = await store.listBudgets((t) => MARCH[t]);
      expect(budget).toMatchObject({ orgId: "org_a", period: "2026-03", currentSpend: 0.25, firedThresholds: [] });
      // Without accounting (test events) nothing is counted, and nothing is generated.
      const plain = await store.ingest([pricedCompletion("org_a", 5)], () => []);
      expect(plain.spend).toBeUndefined();
      expect(plain.generated).toBeUndefined();
      expect((await store.listBudgets((t) => MARCH[t]))[0]?.currentSpend).toBe(0.25);
      const zero = await store.ingest([pricedCompletion("org_a", 0)], () => [], accountingFor(MARCH));
      expect(zero.spend).toEqual([]);
    });

    it("fires each threshold once per period, storing and routing its budget event in the same transaction", async () => {
      const store = current();
      await store.putBudget({
        orgId: "org_a",
        limitType: "monthly",
        budgetLimit: 1,
        thresholds: [50, 80, 90, 100],
        enforce: true,
      });
      const route = (e: Event) => (e.payload.case === "budget" ? ["budget-hook"] : []);
      const events = [0.3, 0.3, 0.3, 0.3].map((usd) => pricedCompletion("org_a", usd));
      const result = await store.ingest(events, route, accountingFor(MARCH));
      const fired = (result.generated ?? []).map((s) => s.event.payload.value);
      expect(fired).toEqual([
        expect.objectContaining({ threshold: 50, period: "2026-03", limitType: "monthly", budgetLimit: 1 }),
        expect.objectContaining({ threshold: 80 }),
        expect.objectContaining({ threshold: 90 }),
        expect.objectContaining({ threshold: 100, usagePercent: 120, currentSpend: 1.2 }),
      ]);
      expect(result.stored).toHaveLength(4);
      expect(result.deliveries).toBe(4);
      // The budget events are stored events with their deliveries, in seq order after their cause.
      const generated = result.generated ?? [];
      for (const g of generated) {
        expect(g.event.orgId).toBe("org_a");
        expect((await store.listDeliveries({ eventId: g.event.id, pageSize: 10 })).deliveries).toMatchObject([
          { endpoint: "budget-hook", eventType: EventType.BUDGET, status: "pending" },
        ]);
      }
      expect(generated[0]!.seq).toBeGreaterThan(result.stored[1]!.seq);
      expect(generated[0]!.seq).toBeLessThan(result.stored[2]!.seq);
      const all = await store.readFeed(undefined, 100);
      expect(all.filter((s) => s.event.payload.case === "budget")).toHaveLength(4);

      // More spend in the same period fires nothing again.
      const more = await store.ingest([pricedCompletion("org_a", 1)], route, accountingFor(MARCH));
      expect(more.generated).toEqual([]);
      const [march] = await store.listBudgets((t) => MARCH[t]);
      expect(march).toMatchObject({ firedThresholds: [50, 80, 90, 100], enforce: true });
      expect(march?.currentSpend).toBeCloseTo(2.2, 9);

      // A new period counts from 0 and fires again.
      const april = await store.ingest([pricedCompletion("org_a", 0.5)], route, accountingFor(APRIL));
      expect((april.generated ?? []).map((s) => s.event.payload.value)).toEqual([
        expect.objectContaining({ threshold: 50, period: "2026-04", currentSpend: 0.5 }),
      ]);
      expect((await store.listBudgets((t) => APRIL[t]))[0]).toMatchObject({ currentSpend: 0.5, firedThresholds: [50] });
    });

    it("creates, replaces and deletes budgets; validates them", async () => {
      const store = current();
      expect(await store.listBudgets((t) => MARCH[t])).toEqual([]);
      await store.putBudget({ orgId: "org_b", limitType: "daily", budgetLimit: 5, thresholds: [100], enforce: false });
      await store.putBudget({ orgId: "org_a", limitType: "monthly", budgetLimit: 5, thresholds: [50], enforce: false });
      await store.putBudget({
        orgId: "org_a",
        limitType: "monthly",
        budgetLimit: 7,
        thresholds: [10, 20],
        enforce: true,
      });
      expect(await store.listBudgets((t) => MARCH[t])).toEqual([
        {
          orgId: "org_a",
          limitType: "monthly",
          budgetLimit: 7,
          thresholds: [10, 20],
          enforce: true,
          period: "2026-03",
          currentSpend: 0,
          firedThresholds: [],
        },
        {
          orgId: "org_b",
          limitType: "daily",
          budgetLimit: 5,
          thresholds: [100],
          enforce: false,
          period: "2026-03-31",
          currentSpend: 0,
          firedThresholds: [],
        },
      ]);
      expect(await store.deleteBudget("org_a", "monthly")).toBe(true);
      expect(await store.deleteBudget("org_a", "monthly")).toBe(false);
      expect(await store.deleteBudget("org_b", "monthly")).toBe(false);
      expect((await store.listBudgets((t) => MARCH[t])).map((b) => b.orgId)).toEqual(["org_b"]);

      const spec = { orgId: "org_c", limitType: "monthly" as const, budgetLimit: 1, thresholds: [50], enforce: false };
      await expect(store.putBudget({ ...spec, budgetLimit: 0 })).rejects.toThrow(/budgetLimit/);
      await expect(store.putBudget({ ...spec, thresholds: [50, 50] })).rejects.toThrow(/thresholds\[1\]/);
      await expect(store.putBudget({ ...spec, limitType: "weekly" as BudgetLimitType })).rejects.toThrow(/limitType/);
      await expect(store.putBudget({ ...spec, orgId: "" })).rejects.toThrow(/orgId/);
    });

    it("keeps model prices set at runtime", async () => {
      const store = current();
      expect(await store.listModelPrices()).toEqual([]);
      await store.putModelPrice({ model: "my-model", inputPerMillion: 1.5, outputPerMillion: 3 });
      await store.putModelPrice({ model: "a-model", inputPerMillion: 0, outputPerMillion: 0 });
      await store.putModelPrice({ model: "my-model", inputPerMillion: 2, outputPerMillion: 4 });
      expect(await store.listModelPrices()).toEqual([
        { model: "a-model", inputPerMillion: 0, outputPerMillion: 0 },
        { model: "my-model", inputPerMillion: 2, outputPerMillion: 4 },
      ]);
      await expect(store.putModelPrice({ model: "x", inputPerMillion: -1, outputPerMillion: 0 })).rejects.toThrow(
        /inputPerMillion/,
      );
      await expect(store.putModelPrice({ model: "", inputPerMillion: 1, outputPerMillion: 1 })).rejects.toThrow(
        /model/,
      );
    });

    it("keeps a model's cache prices, and unset ones unset (the default rule applies to them)", async () => {
      const store = current();
      const claude = {
        model: "claude-x",
        inputPerMillion: 3,
        outputPerMillion: 15,
        cachedInputPerMillion: 0.3,
        cacheWritePerMillion: 3.75,
        cacheWrite1hPerMillion: 6,
      };
      await store.putModelPrice(claude);
      await store.putModelPrice({ model: "gpt-x", inputPerMillion: 2, outputPerMillion: 8, cachedInputPerMillion: 0 });
      expect(await store.listModelPrices()).toEqual([
        claude,
        { model: "gpt-x", inputPerMillion: 2, outputPerMillion: 8, cachedInputPerMillion: 0 },
      ]);
      // Replacing a price replaces every rate: one not given again is unset again.
      await store.putModelPrice({ model: "claude-x", inputPerMillion: 3, outputPerMillion: 15 });
      expect((await store.listModelPrices())[0]).toEqual({
        model: "claude-x",
        inputPerMillion: 3,
        outputPerMillion: 15,
      });
      await expect(
        store.putModelPrice({ model: "x", inputPerMillion: 1, outputPerMillion: 1, cacheWritePerMillion: Number.NaN }),
      ).rejects.toThrow(/cacheWritePerMillion/);
    });
  });
}
