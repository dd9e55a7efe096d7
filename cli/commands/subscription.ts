import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, UsageError } from "../command.js";
import { FILTER_FLAGS, filtersFromFlags, hasFilterFlags, subscriptionText } from "../filters.js";
import { parseEventTypes } from "../values.js";

export const subscription: CommandGroup = {
  name: "subscription",
  summary: "the global events.subscribe and events.filters",
  section: "admin",
  verbs: [
    adminVerb({
      name: "get",
      summary: "show the event types subscribed to and the global filters",
      async run(ctx) {
        const res = await ctx.client.getSubscription({});
        ctx.print(AdminService.method.getSubscription.output, res, () => subscriptionText(res));
      },
    }),
    adminVerb({
      name: "set",
      summary: "change them until the control plane restarts (the config file is applied at start)",
      flags: {
        events: { type: "string", value: "T,…", help: "the event types sidecars report" },
        ...FILTER_FLAGS,
      },
      async run(ctx, _args, flags) {
        const events = flags.string("events");
        const subscribe = events === undefined ? [] : parseEventTypes(events);
        if (events !== undefined && subscribe.length === 0) {
          throw new UsageError("--events: give at least one event type");
        }
        if (events === undefined && !hasFilterFlags(flags)) {
          throw new UsageError("nothing to change (give --events, --models, --min-tokens or --severity)");
        }
        const current = hasFilterFlags(flags) ? (await ctx.client.getSubscription({})).filters : undefined;
        const filters = filtersFromFlags(flags, current);
        const res = await ctx.client.updateSubscription({ subscribe, ...(filters ? { filters } : {}) });
        ctx.print(
          AdminService.method.updateSubscription.output,
          res,
          () => `updated the subscription (until the control plane restarts)\n${subscriptionText(res)}`,
        );
      },
    }),
  ],
};
