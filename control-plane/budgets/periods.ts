import type { BudgetLimitType } from "../store/store.js";

/**
 * The budget period containing `nowMs`, as a UTC calendar key: "2026-11-27" (daily) or
 * "2026-11" (monthly). UTC so every replica and every restart agrees on where a day ends.
 */
export function budgetPeriod(limitType: BudgetLimitType, nowMs: number): string {
  const iso = new Date(nowMs).toISOString();
  return limitType === "daily" ? iso.slice(0, 10) : iso.slice(0, 7);
}
