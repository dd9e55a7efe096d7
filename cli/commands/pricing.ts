import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import type { CommandGroup } from "../command.js";
import { table, usdText } from "../render.js";
import { parseUsd } from "../values.js";

const optionalUsdText = (usd: number | undefined): string => (usd === undefined ? "-" : usdText(usd));

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
                ["MODEL", "INPUT $/1M", "CACHED INPUT", "CACHE WRITE", "CACHE WRITE 1H", "OUTPUT $/1M"],
                res.prices.map((p) => [
                  p.model,
                  usdText(p.inputPerMillion),
                  optionalUsdText(p.cachedInputPerMillion),
                  optionalUsdText(p.cacheWritePerMillion),
                  optionalUsdText(p.cacheWrite1hPerMillion),
                  usdText(p.outputPerMillion),
                ]),
                ctx.palette,
              ) + "(-: unset; cached input then costs input, cache writes 1.25× and 2× input)\n",
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
        "cached-input": {
          type: "string",
          value: "USD",
          help: "USD per million input tokens read from the provider's cache (unset: the input price)",
        },
        "cache-write": {
          type: "string",
          value: "USD",
          help: "USD per million input tokens written to a five-minute cache (unset: 1.25 × input)",
        },
        "cache-write-1h": {
          type: "string",
          value: "USD",
          help: "USD per million input tokens written to a one-hour cache (unset: 2 × input)",
        },
      },
      async run(ctx, [model = ""], flags) {
        const optional = (name: string) => {
          const text = flags.string(name);
          return text === undefined ? undefined : parseUsd(`--${name}`, text);
        };
        const cachedInput = optional("cached-input");
        const cacheWrite = optional("cache-write");
        const cacheWrite1h = optional("cache-write-1h");
        const res = await ctx.client.setModelPrice({
          price: {
            model,
            inputPerMillion: parseUsd("--input", flags.require("input")),
            outputPerMillion: parseUsd("--output", flags.require("output")),
            ...(cachedInput !== undefined ? { cachedInputPerMillion: cachedInput } : {}),
            ...(cacheWrite !== undefined ? { cacheWritePerMillion: cacheWrite } : {}),
            ...(cacheWrite1h !== undefined ? { cacheWrite1hPerMillion: cacheWrite1h } : {}),
          },
        });
        const p = res.price;
        const cache = [
          p?.cachedInputPerMillion !== undefined ? `, cached input $${usdText(p.cachedInputPerMillion)}` : "",
          p?.cacheWritePerMillion !== undefined ? `, cache write $${usdText(p.cacheWritePerMillion)}` : "",
          p?.cacheWrite1hPerMillion !== undefined ? `, 1-hour cache write $${usdText(p.cacheWrite1hPerMillion)}` : "",
        ].join("");
        ctx.print(
          AdminService.method.setModelPrice.output,
          res,
          () =>
            `set price of ${model}: input $${usdText(p?.inputPerMillion ?? 0)}${cache}, output $${usdText(p?.outputPerMillion ?? 0)} per million tokens\n`,
        );
      },
    }),
  ],
};
