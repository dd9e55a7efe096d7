import type { MessageInitShape } from "@bufbuild/protobuf";
import { AdminService, type Endpoint, type EndpointSchema } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, type FlagDefs, UsageError } from "../command.js";
import {
  checkFilterFlags,
  eventTypesText,
  FILTER_FLAGS,
  filtersFromFlags,
  filtersText,
  hasFilterFlags,
} from "../filters.js";
import { count, fields, table, timeText } from "../render.js";
import { parseEventTypes } from "../values.js";

const NAME = [{ name: "NAME" }];

const ENDPOINT_FLAGS: FlagDefs = {
  events: { type: "string", value: "T,…", help: "event types it receives (default: every subscribed type)" },
  "failover-to": { type: "string", value: "NAME", help: "the endpoint that gets what this one cannot take" },
};

export const endpoints: CommandGroup = {
  name: "endpoints",
  summary: "webhook endpoints: receivers, the events they get, filters and failover",
  section: "admin",
  verbs: [
    adminVerb({
      name: "list",
      summary: "list the configured endpoints",
      flags: { org: { type: "string", value: "ORG", help: "this org's endpoints only" } },
      async run(ctx, _args, flags) {
        const res = await ctx.client.listEndpoints({ orgId: flags.string("org") ?? "" });
        const p = ctx.palette;
        ctx.print(AdminService.method.listEndpoints.output, res, () =>
          res.endpoints.length === 0
            ? "no endpoints\n"
            : table(
                ["NAME", "ORG", "URL", "STATE", "EVENTS", "FAILOVER", "KEYS"],
                res.endpoints.map((e) => [
                  e.name,
                  orgText(e),
                  e.url,
                  stateText(e),
                  eventTypesText(e.eventTypes),
                  e.failoverTo || "-",
                  String(e.signingKeyCount),
                ]),
                p,
                (column, cell, padded) =>
                  column === 3
                    ? cell === "enabled"
                      ? p.green(padded)
                      : cell === "paused"
                        ? p.yellow(padded)
                        : p.red(padded)
                    : padded,
              ),
        );
      },
    }),
    adminVerb({
      name: "get",
      summary: "show one endpoint",
      args: NAME,
      details:
        "Names are per org: with an org's token NAME is one of its endpoints. With the operator's, NAME is the\n" +
        "name aigw endpoints list shows (an org's endpoint whose name another endpoint has shows as ORG/NAME),\n" +
        "and ORG/NAME finds any org's endpoint. The other verbs take NAME the same way.",
      async run(ctx, [name = ""]) {
        const res = await ctx.client.getEndpoint({ name });
        ctx.print(AdminService.method.getEndpoint.output, res, () => endpointText(res.endpoint));
      },
    }),
    adminVerb({
      name: "create",
      summary: "create an endpoint (stored; survives restarts)",
      args: NAME,
      flags: {
        url: { type: "string", value: "URL", required: true, help: "where webhooks are POSTed" },
        secret: {
          type: "string",
          value: "S",
          required: true,
          help: "signing secret: whsec_ + base64 (Standard Webhooks), or raw text used as bytes",
        },
        org: {
          type: "string",
          value: "ORG",
          help: "the org it belongs to: only that org's events (default: an operator endpoint, every org's; an org token's own org)",
        },
        app: {
          type: "string",
          value: "APP",
          multiple: true,
          help: "with --org, only this app's events (repeat for several)",
        },
        ...ENDPOINT_FLAGS,
        disabled: { type: "boolean", help: "create it disabled" },
        ...FILTER_FLAGS,
      },
      async run(ctx, [name = ""], flags) {
        const events = flags.string("events");
        const filters = filtersFromFlags(flags);
        const res = await ctx.client.createEndpoint({
          endpoint: {
            name,
            url: flags.require("url"),
            secret: flags.require("secret"),
            enabled: !flags.bool("disabled"),
            eventTypes: events === undefined ? [] : parseEventTypes(events),
            failoverTo: flags.string("failover-to") ?? "",
            orgId: flags.string("org") ?? "",
            apps: flags.list("app"),
            ...(filters ? { filters } : {}),
          },
        });
        ctx.print(
          AdminService.method.createEndpoint.output,
          res,
          // The operator's name for it may be ORG/NAME (another endpoint has NAME).
          () => `created endpoint ${res.endpoint?.name ?? name}\n${endpointText(res.endpoint)}`,
        );
      },
    }),
    adminVerb({
      name: "update",
      summary: "change what the flags name; the rest stays",
      args: NAME,
      flags: {
        url: { type: "string", value: "URL", help: "where webhooks are POSTed" },
        enabled: { type: "string", value: "true|false", help: "enable or disable it" },
        secret: { type: "string", value: "S", help: "replace its signing secret (no overlap: see keys rotate)" },
        app: {
          type: "string",
          value: "APP",
          multiple: true,
          help: "only these apps' events from now on (repeat; --app '' for every app of its org)",
        },
        ...ENDPOINT_FLAGS,
        ...FILTER_FLAGS,
      },
      async run(ctx, [name = ""], flags) {
        const endpoint: MessageInitShape<typeof EndpointSchema> = { name };
        const paths: string[] = [];
        const enabled = flags.string("enabled");
        if (enabled !== undefined && enabled !== "true" && enabled !== "false") {
          throw new UsageError(`--enabled: must be true or false, got "${enabled}"`);
        }
        const events = flags.string("events");
        const eventTypes = events === undefined ? undefined : parseEventTypes(events);
        if (hasFilterFlags(flags)) {
          checkFilterFlags(flags);
          // The API replaces filters whole; the flags change only what they name.
          const current = (await ctx.client.getEndpoint({ name })).endpoint?.filters;
          endpoint.filters = filtersFromFlags(flags, current);
          paths.push("filters");
        }
        const url = flags.string("url");
        if (url !== undefined) {
          endpoint.url = url;
          paths.push("url");
        }
        if (enabled !== undefined) {
          endpoint.enabled = enabled === "true";
          paths.push("enabled");
        }
        const secret = flags.string("secret");
        if (secret !== undefined) {
          endpoint.secret = secret;
          paths.push("secret");
        }
        if (eventTypes !== undefined) {
          endpoint.eventTypes = eventTypes;
          paths.push("event_types");
        }
        if (flags.has("app")) {
          endpoint.apps = flags.list("app").filter((a) => a !== "");
          paths.push("apps");
        }
        const failoverTo = flags.string("failover-to");
        if (failoverTo !== undefined) {
          endpoint.failoverTo = failoverTo;
          paths.push("failover_to");
        }
        // An empty mask means "every field" to the API: never send one from here.
        if (paths.length === 0) {
          throw new UsageError(
            "nothing to change (give --url, --enabled, --secret, --app, --events, --failover-to, --models, --min-tokens or --severity)",
          );
        }
        const res = await ctx.client.updateEndpoint({ endpoint, updateMask: { paths } });
        ctx.print(
          AdminService.method.updateEndpoint.output,
          res,
          () => `updated endpoint ${name} (${paths.join(", ")})\n${endpointText(res.endpoint)}`,
        );
      },
    }),
    adminVerb({
      name: "pause",
      summary: "hold an endpoint's deliveries (no attempts; new events queue) until resume",
      args: NAME,
      async run(ctx, [name = ""]) {
        const res = await ctx.client.pauseEndpoint({ name });
        ctx.print(
          AdminService.method.pauseEndpoint.output,
          res,
          () =>
            `paused endpoint ${name}: ${count(res.heldDeliveries, "pending delivery", "pending deliveries")} held ` +
            `(new events queue too; aigw endpoints resume ${name} sends them in order)\n`,
        );
      },
    }),
    adminVerb({
      name: "resume",
      summary: "send a paused endpoint's held deliveries, in order of due time",
      args: NAME,
      async run(ctx, [name = ""]) {
        const res = await ctx.client.resumeEndpoint({ name });
        ctx.print(AdminService.method.resumeEndpoint.output, res, () =>
          res.endpoint?.enabled === false
            ? `resumed endpoint ${name}, which is disabled: nothing is sent until aigw endpoints enable ${name}\n`
            : `resumed endpoint ${name}: ${count(res.releasedDeliveries, "held delivery goes", "held deliveries go")} out\n`,
        );
      },
    }),
    adminVerb({
      name: "disable",
      summary: "stop deliveries to an endpoint: its pending ones fail without an attempt",
      args: NAME,
      flags: { reason: { type: "string", value: "TEXT", help: "why (shown as its disabled reason)" } },
      async run(ctx, [name = ""], flags) {
        const res = await ctx.client.disableEndpoint({ name, reason: flags.string("reason") ?? "" });
        ctx.print(
          AdminService.method.disableEndpoint.output,
          res,
          () =>
            `disabled endpoint ${name}: ${count(res.failedDeliveries, "pending delivery fails", "pending deliveries fail")} ` +
            `without an attempt (replay them later with aigw deliveries replay --since … --endpoint ${name})\n`,
        );
      },
    }),
    adminVerb({
      name: "enable",
      summary: "enable a disabled (or paused) endpoint again",
      args: NAME,
      async run(ctx, [name = ""]) {
        const res = await ctx.client.enableEndpoint({ name });
        ctx.print(AdminService.method.enableEndpoint.output, res, () => `enabled endpoint ${name}\n`);
      },
    }),
    adminVerb({
      name: "delete",
      summary: "delete an endpoint; its pending deliveries fail",
      args: NAME,
      async run(ctx, [name = ""]) {
        const res = await ctx.client.deleteEndpoint({ name });
        ctx.print(AdminService.method.deleteEndpoint.output, res, () => `deleted endpoint ${name}\n`);
      },
    }),
  ],
};

/** enabled, paused or disabled (with its reason). */
function stateText(e: Endpoint): string {
  if (!e.enabled) return e.disabledReason ? `disabled (${e.disabledReason})` : "disabled";
  return e.paused ? "paused" : "enabled";
}

function endpointText(e: Endpoint | undefined): string {
  if (!e) return "";
  const pairs: [string, string][] = [
    ["name", e.name],
    ["url", e.url],
    ["state", stateText(e)],
    ["org", orgText(e)],
  ];
  if (e.apps.length > 0) pairs.push(["apps", e.apps.join(", ")]);
  if (e.paused && e.pauseTime) pairs.push(["paused since", timeText(e.pauseTime)]);
  if (e.disabledReason) pairs.push(["disabled reason", e.disabledReason]);
  pairs.push(
    ["events", eventTypesText(e.eventTypes)],
    ["failover to", e.failoverTo || "-"],
    ["filters", filtersText(e.filters)],
    ["signing keys", String(e.signingKeyCount)],
    ["created", timeText(e.createTime)],
    ["updated", timeText(e.updateTime)],
  );
  return fields(pairs);
}

/** "-" for an operator endpoint (every org's events). */
function orgText(e: Endpoint): string {
  return e.orgId === "" ? "- (operator)" : e.oneOff ? `${e.orgId} (one-off)` : e.orgId;
}
