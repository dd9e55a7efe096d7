import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import type { CommandGroup } from "../command.js";
import { table, usdText } from "../render.js";
import { parseUsd } from "../values.js";

export const pricing: CommandGroup = {
  name: "pricing",
  summary: "model prices (USD per million tokens) that cost_usd and budgets use",
  section: "admin",
  verbs: [
    adminVerb({
      name: "list",
      summary: "every known price: built-in, from the config, and set at runtime",
      async run(ctx) {
        const res = await ctx.client.listPricing({});
        ctx.print(AdminService.method.listPricing.output, res, () =>
          res.prices.length === 0
            ? "no prices\n"
            : table(
                ["MODEL", "INPUT $/1M", "OUTPUT $/1M"],
                res.prices.map((p) => [p.model, usdText(p.inputPerMillion), usdText(p.outputPerMillion)]),
                ctx.palette,
              ),
        );
      },
    }),
    adminVerb({
      name: "set",
      summary: "set a model's price (per million tokens)",
      args: [{ name: "MODEL" }],
      flags: {
        input: { type: "string", value: "USD", required: true, help: "USD per million input (prompt) tokens" },
        output: { type: "string", value: "USD", required: true, help: "USD per million output (completion) tokens" },
      },
      async run(ctx, [model = ""], flags) {
        const res = await ctx.client.setModelPrice({
          price: {
            model,
            inputPerMillion: parseUsd("--input", flags.require("input")),
            outputPerMillion: parseUsd("--output", flags.require("output")),
          },
        });
        const p = res.price;
        ctx.print(
          AdminService.method.setModelPrice.output,
          res,
          () =>
            `set price of ${model}: input $${usdText(p?.inputPerMillion ?? 0)}, output $${usdText(p?.outputPerMillion ?? 0)} per million tokens\n`,
        );
      },
    }),
  ],
};
