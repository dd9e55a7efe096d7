import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { EVENT_TYPE_NAMES, eventTypeName } from "../../common/event-types.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, UsageError } from "../command.js";
import { parseEventTypes } from "../values.js";

export const sendTest: CommandGroup = {
  name: "send-test",
  summary: "send a test event through the real delivery path",
  section: "admin",
  verbs: [
    adminVerb({
      name: "",
      summary: "store a test event and deliver it like any other (signed, retried)",
      flags: {
        endpoint: { type: "string", value: "E", help: "to this endpoint only (default: every endpoint that wants it)" },
        event: {
          type: "string",
          value: EVENT_TYPE_NAMES.join("|"),
          help: "the event type (default completion)",
        },
      },
      async run(ctx, _args, flags) {
        const event = flags.string("event");
        const eventType = event === undefined ? EventType.COMPLETION : parseEventTypes(event, "--event")[0];
        if (eventType === undefined || (event ?? "").includes(",")) {
          throw new UsageError(`--event: give one event type, got "${event}"`);
        }
        const res = await ctx.client.sendTestEvent({ endpoint: flags.string("endpoint") ?? "", eventType });
        ctx.print(
          AdminService.method.sendTestEvent.output,
          res,
          () =>
            `sent test ${eventTypeName(eventType)} event ${res.event?.id ?? "?"}\n` +
            `deliveries: ${res.deliveryIds.join(", ") || "none"}\n`,
        );
      },
    }),
  ],
};
