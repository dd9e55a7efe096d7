import { AdminService, type GetStatsResponse } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import type { CommandGroup } from "../command.js";
import { type Palette, table } from "../render.js";
import { parseCount } from "../values.js";

export const stats: CommandGroup = {
  name: "stats",
  summary: "delivery analytics per endpoint: outcomes, success rate, latency, failure reasons",
  section: "admin",
  verbs: [
    adminVerb({
      name: "",
      summary: "delivery analytics per endpoint over a window (default the last hour)",
      flags: {
        "window-seconds": { type: "string", value: "N", help: "the window, in seconds (default 3600)" },
        org: { type: "string", value: "ORG", help: "this org's endpoints and events only" },
      },
      async run(ctx, _args, flags) {
        const window = flags.string("window-seconds");
        const windowSeconds = window === undefined ? 0 : parseCount("--window-seconds", window, 1);
        const res = await ctx.client.getStats({ windowSeconds, orgId: flags.string("org") ?? "" });
        ctx.print(AdminService.method.getStats.output, res, () => statsText(res, windowSeconds || 3600, ctx.palette));
      },
    }),
  ],
};

function statsText(res: GetStatsResponse, windowSeconds: number, p: Palette): string {
  let text =
    res.endpoints.length === 0
      ? "no endpoints\n"
      : table(
          ["ENDPOINT", "DELIVERED", "FAILED", "DEAD", "PENDING", "SUCCESS", "P50", "P99", "CIRCUIT"],
          res.endpoints.map((s) => [
            s.endpoint,
            String(s.delivered),
            String(s.failed),
            String(s.deadLettered),
            String(s.pending),
            // Nothing finished in the window: no rate yet (the API's success_rate is then 1).
            s.delivered + s.failed + s.deadLettered === 0n ? "-" : `${(s.successRate * 100).toFixed(1)}%`,
            `${s.latencyP50Ms} ms`,
            `${s.latencyP99Ms} ms`,
            s.circuitOpen ? "open" : "closed",
          ]),
          p,
          (column, cell, padded) => (column === 8 && cell === "open" ? p.red(padded) : padded),
        );
  for (const s of res.endpoints) {
    if (s.failureReasons.length === 0) continue;
    text += `${s.endpoint} failures: ${s.failureReasons.map((r) => `${r.reason} ×${r.count}`).join(", ")}\n`;
  }
  text += `events ingested in the last ${windowSeconds} s: ${res.eventsIngested}\n`;
  return text;
}
