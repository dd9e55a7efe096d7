import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { invalidArgument } from "../../common/rpc-errors.js";
import { BUDGET_LIMIT, BUDGET_THRESHOLD, USD_PER_MILLION } from "../config/accounting.js";
import { numberProblem } from "../config/reader.js";
import {
  type Budget,
  BudgetSchema,
  type DeleteBudgetRequest,
  type DeleteBudgetResponse,
  DeleteBudgetResponseSchema,
  type ListBudgetsResponse,
  ListBudgetsResponseSchema,
  type ListPricingResponse,
  ListPricingResponseSchema,
  ModelPriceSchema,
  type SetBudgetRequest,
  type SetBudgetResponse,
  SetBudgetResponseSchema,
  type SetModelPriceRequest,
  type SetModelPriceResponse,
  SetModelPriceResponseSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import { DEFAULT_BUDGET_THRESHOLDS } from "../config/defaults.js";
import type { BudgetLimitType, BudgetRecord, BudgetSpec, StoredModelPrice } from "../store/store.js";
import type { Budgets } from "./budgets.js";
import { LIMIT_TYPES } from "../store/budgets.js";

/**
 * The budget and pricing RPCs of AdminService. Requests are validated here and a bad one
 * is INVALID_ARGUMENT naming the field ("budget.thresholds[2]: …"); AdminServiceImpl maps
 * everything else.
 */
export class BudgetAdminRpcs {
  constructor(private readonly budgets: Budgets) {}

  async listBudgets(): Promise<ListBudgetsResponse> {
    const records = await this.budgets.ledger.list();
    return create(ListBudgetsResponseSchema, { budgets: records.map(budgetMessage) });
  }

  async setBudget(req: SetBudgetRequest): Promise<SetBudgetResponse> {
    const spec = budgetSpec(req.budget);
    const record = await this.budgets.ledger.set(spec);
    return create(SetBudgetResponseSchema, { budget: budgetMessage(record) });
  }

  async deleteBudget(req: DeleteBudgetRequest): Promise<DeleteBudgetResponse> {
    if (req.orgId === "") invalid("org_id", "required");
    const limitType = limitTypeOf(req.limitType, "limit_type");
    if (!(await this.budgets.ledger.delete(req.orgId, limitType))) {
      throw new ConnectError(`no ${limitType} budget for org "${req.orgId}"`, Code.NotFound);
    }
    return create(DeleteBudgetResponseSchema, {});
  }

  async listPricing(): Promise<ListPricingResponse> {
    return create(ListPricingResponseSchema, {
      prices: this.budgets.prices.list().map((p) => create(ModelPriceSchema, p)),
    });
  }

  async setModelPrice(req: SetModelPriceRequest): Promise<SetModelPriceResponse> {
    const p = req.price;
    if (p === undefined) invalid("price", "required");
    if (p.model.trim() === "") invalid("price.model", "required");
    const price: StoredModelPrice = {
      model: p.model,
      inputPerMillion: usdPerMillion(p.inputPerMillion, "price.input_per_million"),
      outputPerMillion: usdPerMillion(p.outputPerMillion, "price.output_per_million"),
    };
    // Unset cache prices follow from the input price (config/pricing.ts cachePrices).
    if (p.cachedInputPerMillion !== undefined)
      price.cachedInputPerMillion = usdPerMillion(p.cachedInputPerMillion, "price.cached_input_per_million");
    if (p.cacheWritePerMillion !== undefined)
      price.cacheWritePerMillion = usdPerMillion(p.cacheWritePerMillion, "price.cache_write_per_million");
    if (p.cacheWrite1hPerMillion !== undefined)
      price.cacheWrite1hPerMillion = usdPerMillion(p.cacheWrite1hPerMillion, "price.cache_write_1h_per_million");
    await this.budgets.setModelPrice(price);
    return create(SetModelPriceResponseSchema, { price: create(ModelPriceSchema, price) });
  }
}

function budgetSpec(b: Budget | undefined): BudgetSpec {
  if (b === undefined) invalid("budget", "required");
  if (b.orgId === "") invalid("budget.org_id", "required");
  const limitType = limitTypeOf(b.limitType, "budget.limit_type");
  invalidIf(numberProblem(b.budgetLimit, BUDGET_LIMIT), "budget.budget_limit");
  b.thresholds.forEach((t, i) => {
    invalidIf(numberProblem(t, BUDGET_THRESHOLD), `budget.thresholds[${i}]`);
    const previous = b.thresholds[i - 1];
    if (previous !== undefined && t <= previous) {
      invalid(
        `budget.thresholds[${i}]`,
        `(${t}) must be above the threshold before it (${previous}); ascending, no repeats`,
      );
    }
  });
  return {
    orgId: b.orgId,
    limitType,
    budgetLimit: b.budgetLimit,
    thresholds: b.thresholds.length > 0 ? [...b.thresholds] : [...DEFAULT_BUDGET_THRESHOLDS],
    enforce: b.enforce,
  };
}

function limitTypeOf(value: string, field: string): BudgetLimitType {
  if (value === "") invalid(field, `required: ${LIMIT_TYPES.join(" or ")}`);
  if (!(LIMIT_TYPES as readonly string[]).includes(value)) {
    invalid(field, `"${value}" is not ${LIMIT_TYPES.join(" or ")}`);
  }
  return value as BudgetLimitType;
}

function usdPerMillion(value: number, field: string): number {
  invalidIf(numberProblem(value, USD_PER_MILLION), field);
  return value;
}

function budgetMessage(r: BudgetRecord): Budget {
  return create(BudgetSchema, {
    orgId: r.orgId,
    limitType: r.limitType,
    budgetLimit: r.budgetLimit,
    thresholds: r.thresholds,
    enforce: r.enforce,
    period: r.period,
    currentSpend: r.currentSpend,
    firedThresholds: r.firedThresholds,
  });
}

function invalid(field: string, problem: string): never {
  throw invalidArgument(field, problem);
}

function invalidIf(problem: string | undefined, field: string): void {
  if (problem !== undefined) invalid(field, problem);
}
