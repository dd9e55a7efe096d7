import { AdminService, type Budget } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, type FlagDef, UsageError } from "../command.js";
import { table, usdText } from "../render.js";
import { parseUsd } from "../values.js";

const ORG = [{ name: "ORG" }];
const LIMIT_TYPE: FlagDef = {
  type: "string",
  value: "daily|monthly",
  required: true,
  help: "the period the limit is for (UTC)",
};

export const budgets: CommandGroup = {
  name: "budgets",
  summary: "spend limits per org: thresholds fire budget events, enforcement answers 429",
  section: "admin",
  verbs: [
    adminVerb({
      name: "list",
      summary: "every budget with this period's spend",
      async run(ctx) {
        const res = await ctx.client.listBudgets({});
        ctx.print(AdminService.method.listBudgets.output, res, () => budgetsText(res.budgets));
      },
    }),
    adminVerb({
      name: "set",
      summary: "create or replace an org's daily or monthly budget",
      args: ORG,
      flags: {
        "limit-type": LIMIT_TYPE,
        limit: { type: "string", value: "USD", required: true, help: "the budget, in USD" },
        thresholds: {
          type: "string",
          value: "50,80,90,100",
          help: "percentages that fire a budget event, once per period (default 50,80,90,100)",
        },
        enforce: { type: "boolean", help: "sidecars answer 429 budget_exceeded once it is spent" },
      },
      async run(ctx, [orgId = ""], flags) {
        const thresholds = flags.string("thresholds");
        const res = await ctx.client.setBudget({
          budget: {
            orgId,
            limitType: limitType(flags.require("limit-type")),
            budgetLimit: parseUsd("--limit", flags.require("limit")),
            thresholds: thresholds === undefined ? [] : parseThresholds(thresholds),
            enforce: flags.bool("enforce"),
          },
        });
        ctx.print(
          AdminService.method.setBudget.output,
          res,
          () =>
            `set ${res.budget?.limitType ?? ""} budget of org ${orgId}\n${budgetsText(res.budget ? [res.budget] : [])}`,
        );
      },
    }),
    adminVerb({
      name: "delete",
      summary: "remove an org's daily or monthly budget",
      args: ORG,
      flags: { "limit-type": LIMIT_TYPE },
      async run(ctx, [orgId = ""], flags) {
        const type = limitType(flags.require("limit-type"));
        const res = await ctx.client.deleteBudget({ orgId, limitType: type });
        ctx.print(AdminService.method.deleteBudget.output, res, () => `deleted ${type} budget of org ${orgId}\n`);
      },
    }),
  ],
};

function limitType(text: string): string {
  if (text !== "daily" && text !== "monthly")
    throw new UsageError(`--limit-type: must be daily or monthly, got "${text}"`);
  return text;
}

function parseThresholds(text: string): number[] {
  return text.split(",").map((part) => {
    const t = part.trim();
    if (!/^\d+$/.test(t)) throw new UsageError(`--thresholds: "${t}" is not a whole percentage (e.g. 50,80,90,100)`);
    return Number(t);
  });
}

function budgetsText(budgets: readonly Budget[]): string {
  if (budgets.length === 0) return "no budgets\n";
  return table(
    ["ORG", "TYPE", "PERIOD", "SPEND", "LIMIT", "USED", "THRESHOLDS", "ENFORCE"],
    budgets.map((b) => [
      b.orgId,
      b.limitType,
      b.period,
      `$${usdText(b.currentSpend)}`,
      `$${usdText(b.budgetLimit)}`,
      `${((b.currentSpend / b.budgetLimit) * 100).toFixed(1)}%`,
      b.thresholds.map((t) => (b.firedThresholds.includes(t) ? `${t}✓` : String(t))).join(","),
      b.enforce ? "yes" : "no",
    ]),
  );
}
