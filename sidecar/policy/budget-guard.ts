import type { BudgetState } from "../../gen/aigw/v1/ingest_pb.js";

/** An org's enforced budget that is used up. */
export interface BudgetRefusal {
  /** daily, monthly */
  readonly limitType: string;
  readonly currentSpend: number;
  readonly budgetLimit: number;
  /** "budget exceeded: monthly spend 10.02 of 10.00 USD" */
  readonly message: string;
}

/**
 * Refuses this org's calls while the control plane reports an enforced budget as exceeded.
 * Spend is counted by the control plane; the sidecar only applies its verdict, which
 * arrives with the next config snapshot.
 */
export class BudgetGuard {
  private compiledFrom: readonly BudgetState[] | undefined;
  private refusal: BudgetRefusal | undefined;

  constructor(private readonly orgId: string) {}

  /** Hot path: one identity comparison while the budgets are unchanged. */
  check(budgets: readonly BudgetState[]): BudgetRefusal | undefined {
    if (budgets !== this.compiledFrom) {
      this.compiledFrom = budgets;
      this.refusal = exceededBudget(budgets, this.orgId);
    }
    return this.refusal;
  }
}

function exceededBudget(budgets: readonly BudgetState[], orgId: string): BudgetRefusal | undefined {
  for (const b of budgets) {
    if (b.orgId !== orgId || !b.exceeded || !b.enforce) continue;
    return {
      limitType: b.limitType,
      currentSpend: b.currentSpend,
      budgetLimit: b.budgetLimit,
      message: `budget exceeded: ${b.limitType || "budget"} spend ${b.currentSpend.toFixed(2)} of ${b.budgetLimit.toFixed(2)} USD`,
    };
  }
  return undefined;
}

/** Seconds until the budget's UTC period ends (when a new one starts with no spend); undefined for an unknown type. */
export function secondsToPeriodEnd(limitType: string, now: Date): number | undefined {
  let end: number;
  if (limitType === "daily") {
    end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  } else if (limitType === "monthly") {
    end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  } else {
    return undefined;
  }
  return Math.max(1, Math.ceil((end - now.getTime()) / 1000));
}
