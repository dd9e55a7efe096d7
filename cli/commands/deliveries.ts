import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  AdminService,
  type Delivery,
  DeliveryStatus,
  type GetDeliveryResponse,
  type ListDeliveriesRequestSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import { eventTypeName } from "../../common/event-types.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, UsageError } from "../command.js";
import { count, fields, oneLine, type Palette, prettyJson, table, timeText } from "../render.js";
import { parseCount } from "../values.js";

const STATUS_NAMES: Record<string, DeliveryStatus> = {
  pending: DeliveryStatus.PENDING,
  delivered: DeliveryStatus.DELIVERED,
  failed: DeliveryStatus.FAILED,
  dead_lettered: DeliveryStatus.DEAD_LETTERED,
};

export const deliveries: CommandGroup = {
  name: "deliveries",
  summary: "webhook deliveries: list, inspect (every attempt) and replay",
  section: "admin",
  verbs: [
    adminVerb({
      name: "list",
      summary: "list deliveries, newest first",
      flags: {
        endpoint: { type: "string", value: "E", help: "of this endpoint only" },
        status: {
          type: "string",
          value: Object.keys(STATUS_NAMES).join("|"),
          help: "in this status only",
        },
        event: { type: "string", value: "ID", help: "of this event only" },
        org: { type: "string", value: "ORG", help: "to this org's endpoints only" },
        limit: { type: "string", value: "N", help: "at most N (a page)" },
        "page-token": { type: "string", value: "T", help: "the next page, from a previous list" },
      },
      async run(ctx, _args, flags) {
        const req: MessageInitShape<typeof ListDeliveriesRequestSchema> = {};
        const endpoint = flags.string("endpoint");
        if (endpoint !== undefined) req.endpoint = endpoint;
        const status = flags.string("status");
        if (status !== undefined) {
          const value = STATUS_NAMES[status];
          if (value === undefined) {
            throw new UsageError(`--status: must be one of ${Object.keys(STATUS_NAMES).join(", ")}, got "${status}"`);
          }
          req.status = value;
        }
        const event = flags.string("event");
        if (event !== undefined) req.eventId = event;
        const org = flags.string("org");
        if (org !== undefined) req.orgId = org;
        const limit = flags.string("limit");
        if (limit !== undefined) req.pageSize = parseCount("--limit", limit, 1);
        const pageToken = flags.string("page-token");
        if (pageToken !== undefined) req.pageToken = pageToken;
        const res = await ctx.client.listDeliveries(req);
        const p = ctx.palette;
        ctx.print(AdminService.method.listDeliveries.output, res, () => {
          let text =
            res.deliveries.length === 0
              ? "no deliveries\n"
              : table(
                  ["ID", "ENDPOINT", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST ERROR"],
                  res.deliveries.map((d) => [
                    d.id,
                    d.endpoint,
                    d.eventId,
                    eventTypeName(d.eventType) ?? "unknown",
                    statusText(d.status),
                    String(d.attemptCount),
                    d.lastError,
                  ]),
                  p,
                  (column, cell, padded) => (column === 4 ? paintStatus(p, cell, padded) : padded),
                );
          if (res.nextPageToken !== "") text += `more: --page-token ${res.nextPageToken}\n`;
          return text;
        });
      },
    }),
    adminVerb({
      name: "show",
      summary: "one delivery with every attempt and the webhook body",
      args: [{ name: "ID" }],
      async run(ctx, [id = ""]) {
        const res = await ctx.client.getDelivery({ id });
        ctx.print(AdminService.method.getDelivery.output, res, () => deliveryDetailText(res, ctx.palette));
      },
    }),
    adminVerb({
      name: "replay",
      summary: "send a delivery again as a new delivery, or every dead-lettered one",
      args: [{ name: "ID", optional: true }],
      synopsis: ["ID", "--dead-lettered [--endpoint E]"],
      flags: {
        "dead-lettered": { type: "boolean", help: "replay every dead-lettered delivery" },
        endpoint: { type: "string", value: "E", help: "with --dead-lettered: of this endpoint only" },
      },
      async run(ctx, args, flags) {
        if (flags.bool("dead-lettered")) {
          if (args.length > 0) throw new UsageError("give an ID or --dead-lettered, not both");
          const endpoint = flags.string("endpoint") ?? "";
          const res = await ctx.client.replayDeliveries({ endpoint });
          ctx.print(
            AdminService.method.replayDeliveries.output,
            res,
            () =>
              `replayed ${count(res.replayed, "dead-lettered delivery", "dead-lettered deliveries")}` +
              `${endpoint ? ` of ${endpoint}` : ""}\n`,
          );
          return;
        }
        if (flags.has("endpoint")) throw new UsageError("--endpoint goes with --dead-lettered");
        const [id] = args;
        if (id === undefined) throw new UsageError("missing ID (or --dead-lettered)");
        const res = await ctx.client.replayDelivery({ id });
        ctx.print(
          AdminService.method.replayDelivery.output,
          res,
          () => `replayed ${id} as ${res.delivery?.id ?? "?"} to ${res.delivery?.endpoint ?? "?"}\n`,
        );
      },
    }),
  ],
};

function statusText(status: DeliveryStatus): string {
  for (const [name, value] of Object.entries(STATUS_NAMES)) if (value === status) return name;
  return "unspecified";
}

function paintStatus(p: Palette, status: string, padded: string): string {
  if (status === "delivered") return p.green(padded);
  if (status === "dead_lettered" || status === "failed") return p.red(padded);
  return p.yellow(padded);
}

function deliveryText(d: Delivery): string {
  const pairs: [string, string][] = [
    ["id", d.id],
    ["event", `${d.eventId} (${eventTypeName(d.eventType) ?? "unknown"})`],
    ["endpoint", d.endpoint],
    ["status", statusText(d.status)],
    ["attempts", String(d.attemptCount)],
    ["created", timeText(d.createTime)],
  ];
  if (d.nextAttemptTime) pairs.push(["next attempt", timeText(d.nextAttemptTime)]);
  if (d.finishTime) pairs.push(["finished", timeText(d.finishTime)]);
  if (d.lastError) pairs.push(["last error", d.lastError]);
  if (d.originDeliveryId) pairs.push(["origin", d.originDeliveryId]);
  return fields(pairs);
}

function deliveryDetailText(res: GetDeliveryResponse, p: Palette): string {
  const d = res.delivery;
  if (!d) return "";
  let text = deliveryText(d);
  text += "\nattempts:\n";
  text +=
    d.attempts.length === 0
      ? "  none yet\n"
      : table(
          ["#", "STARTED", "STATUS", "LATENCY", "ERROR", "RESPONSE"],
          d.attempts.map((a) => [
            String(a.number),
            timeText(a.startTime),
            a.statusCode === 0 ? "-" : String(a.statusCode),
            `${a.latencyMs} ms`,
            a.error || "-",
            oneLine(a.responseBody, 60),
          ]),
          p,
        )
          .split("\n")
          .map((line) => (line === "" ? line : `  ${line}`))
          .join("\n");
  text += `\nbody:\n${prettyJson(res.body)}\n`;
  return text;
}
