import { type DescMessage, type MessageInitShape, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { describeRpcError } from "../common/rpc-errors.js";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  AdminService,
  type Budget,
  type Delivery,
  DeliveryStatus,
  type Endpoint,
  type EndpointSchema,
  type EventFilters,
  type EventFiltersSchema,
  type GetDeliveryResponse,
  type GetStatsResponse,
  type ListDeliveriesRequestSchema,
} from "../gen/aigw/v1/admin_pb.js";
import { EventType } from "../gen/aigw/v1/events_pb.js";
import { EVENT_TYPE_NAMES, eventTypeFromName, eventTypeName } from "../common/event-types.js";

export interface AdminIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
}

export const DEFAULT_ADMIN_URL = "http://127.0.0.1:7080";

export const ADMIN_USAGE = `Admin commands (over the control plane's Admin API):
  aigw endpoints list
  aigw endpoints get NAME
  aigw endpoints create NAME --url URL --secret S [--events completion,error] [--failover-to NAME] [--disabled]
                        [--models M,...] [--min-tokens N] [--severity warning,error,critical]
  aigw endpoints update NAME [--url URL] [--enabled true|false] [--secret S] [--events T,...] [--failover-to NAME]
                        [--models M,...] [--min-tokens N] [--severity S,...]   (filters: "" / 0 clears one)
  aigw endpoints delete NAME
  aigw keys rotate ENDPOINT [--secret S] [--overlap-seconds N]
  aigw keys rotate --org ORG [--secret S] [--overlap-seconds N]   (the key of the org's x-aigw-webhook-url endpoints)
  aigw subscription get
  aigw subscription set [--events completion,error] [--models M,...] [--min-tokens N] [--severity S,...]
                        (global events.subscribe and events.filters, until the control plane restarts)
  aigw deliveries list [--endpoint E] [--status pending|delivered|failed|dead_lettered] [--event ID] [--limit N] [--page-token T]
  aigw deliveries show ID
  aigw deliveries replay ID
  aigw deliveries replay --dead-lettered [--endpoint E]
  aigw stats [--window-seconds N]
  aigw send-test [--endpoint E] [--event completion|error|streaming|budget|rate_limit]
  aigw budgets list
  aigw budgets set ORG --limit-type daily|monthly --limit USD [--thresholds 50,80,90,100] [--enforce]
  aigw budgets delete ORG --limit-type daily|monthly
  aigw pricing list
  aigw pricing set MODEL --input USD --output USD [--cached-input USD] [--cache-write USD] [--cache-write-1h USD]
                        (per million tokens; unset: cached input = input, cache writes 1.25× / 2× input)

Global flags:
  --admin URL   the control plane's HTTP address (env AIGW_ADMIN_URL; default ${DEFAULT_ADMIN_URL})
  --token T     admin bearer token (env AIGW_ADMIN_TOKEN)
  --json        print the response as JSON
`;

/** A mistake in the command line: usage is printed and the exit code is 2. */
class UsageError extends Error {
  override readonly name = "UsageError";
}

type FlagKind = "string" | "boolean";
type FlagSpec = Record<string, FlagKind>;
type Flags = Map<string, string | true>;

const GLOBAL_FLAGS: FlagSpec = { admin: "string", token: "string", json: "boolean" };
/** Endpoint and subscription filters (helpers in "filters" at the end of this file). */
const FILTER_FLAGS: FlagSpec = { models: "string", "min-tokens": "string", severity: "string" };

interface Parsed {
  positionals: string[];
  flags: Flags;
}

type AdminClient = Client<typeof AdminService>;

interface Command {
  /** Positional arguments after the verb, by name, for usage errors. */
  args: string[];
  /** How many of `args` must be given; default all. */
  minArgs?: number;
  flags: FlagSpec;
  run(ctx: CommandContext, args: string[], flags: Flags): Promise<void>;
}

interface CommandContext {
  client: AdminClient;
  io: AdminIo;
  json: boolean;
  /** Prints the response: as proto JSON with --json, else with `human`. */
  print<D extends DescMessage>(schema: D, message: MessageShape<D>, human: () => string): void;
}

const STATUS_NAMES: Record<string, DeliveryStatus> = {
  pending: DeliveryStatus.PENDING,
  delivered: DeliveryStatus.DELIVERED,
  failed: DeliveryStatus.FAILED,
  dead_lettered: DeliveryStatus.DEAD_LETTERED,
};

const COMMANDS: Record<string, Record<string, Command> | Command> = {
  endpoints: {
    list: {
      args: [],
      flags: {},
      async run(ctx) {
        const res = await ctx.client.listEndpoints({});
        ctx.print(AdminService.method.listEndpoints.output, res, () =>
          res.endpoints.length === 0
            ? "no endpoints\n"
            : table(
                ["NAME", "URL", "ENABLED", "EVENTS", "FAILOVER", "KEYS"],
                res.endpoints.map((e) => [
                  e.name,
                  e.url,
                  e.enabled ? "yes" : e.disabledReason ? `no (${e.disabledReason})` : "no",
                  eventTypesText(e.eventTypes),
                  e.failoverTo || "-",
                  String(e.signingKeyCount),
                ]),
              ),
        );
      },
    },
    get: {
      args: ["NAME"],
      flags: {},
      async run(ctx, [name = ""]) {
        const res = await ctx.client.getEndpoint({ name });
        ctx.print(AdminService.method.getEndpoint.output, res, () => endpointText(res.endpoint));
      },
    },
    create: {
      args: ["NAME"],
      flags: {
        url: "string",
        secret: "string",
        events: "string",
        "failover-to": "string",
        disabled: "boolean",
        ...FILTER_FLAGS,
      },
      async run(ctx, [name = ""], flags) {
        const url = requireFlag(flags, "url");
        const secret = requireFlag(flags, "secret");
        const events = flags.get("events");
        const filters = filtersFromFlags(flags);
        const res = await ctx.client.createEndpoint({
          endpoint: {
            name,
            url,
            secret,
            enabled: !flags.has("disabled"),
            eventTypes: typeof events === "string" ? parseEventTypes(events) : [],
            failoverTo: stringFlag(flags, "failover-to") ?? "",
            ...(filters ? { filters } : {}),
          },
        });
        ctx.print(
          AdminService.method.createEndpoint.output,
          res,
          () => `created endpoint ${name}\n${endpointText(res.endpoint)}`,
        );
      },
    },
    update: {
      args: ["NAME"],
      flags: {
        url: "string",
        enabled: "string",
        secret: "string",
        events: "string",
        "failover-to": "string",
        ...FILTER_FLAGS,
      },
      async run(ctx, [name = ""], flags) {
        const endpoint: MessageInitShape<typeof EndpointSchema> = { name };
        const paths: string[] = [];
        if (hasFilterFlags(flags)) {
          // The API replaces filters whole; the flags change only what they name.
          const current = (await ctx.client.getEndpoint({ name })).endpoint?.filters;
          endpoint.filters = filtersFromFlags(flags, current);
          paths.push("filters");
        }
        const url = stringFlag(flags, "url");
        if (url !== undefined) {
          endpoint.url = url;
          paths.push("url");
        }
        const enabled = stringFlag(flags, "enabled");
        if (enabled !== undefined) {
          if (enabled !== "true" && enabled !== "false") throw new UsageError("--enabled: must be true or false");
          endpoint.enabled = enabled === "true";
          paths.push("enabled");
        }
        const secret = stringFlag(flags, "secret");
        if (secret !== undefined) {
          endpoint.secret = secret;
          paths.push("secret");
        }
        const events = stringFlag(flags, "events");
        if (events !== undefined) {
          endpoint.eventTypes = parseEventTypes(events);
          paths.push("event_types");
        }
        const failoverTo = stringFlag(flags, "failover-to");
        if (failoverTo !== undefined) {
          endpoint.failoverTo = failoverTo;
          paths.push("failover_to");
        }
        // An empty mask means "every field" to the API: never send one from here.
        if (paths.length === 0) {
          throw new UsageError(
            "endpoints update: nothing to change (give --url, --enabled, --secret, --events, --failover-to, --models, --min-tokens or --severity)",
          );
        }
        const res = await ctx.client.updateEndpoint({ endpoint, updateMask: { paths } });
        ctx.print(
          AdminService.method.updateEndpoint.output,
          res,
          () => `updated endpoint ${name} (${paths.join(", ")})\n${endpointText(res.endpoint)}`,
        );
      },
    },
    delete: {
      args: ["NAME"],
      flags: {},
      async run(ctx, [name = ""]) {
        const res = await ctx.client.deleteEndpoint({ name });
        ctx.print(AdminService.method.deleteEndpoint.output, res, () => `deleted endpoint ${name}\n`);
      },
    },
  },
  keys: {
    rotate: {
      args: ["ENDPOINT"],
      minArgs: 0,
      flags: { secret: "string", "overlap-seconds": "string", org: "string" },
      async run(ctx, [endpoint = ""], flags) {
        const overlap = stringFlag(flags, "overlap-seconds");
        const orgId = stringFlag(flags, "org") ?? "";
        if ((endpoint === "") === (orgId === "")) throw new UsageError("keys rotate: give an ENDPOINT or --org ORG");
        const res = await ctx.client.rotateSigningKey({
          endpoint,
          orgId,
          secret: stringFlag(flags, "secret") ?? "",
          overlapSeconds: overlap === undefined ? 0 : parseCount("--overlap-seconds", overlap, 1),
        });
        ctx.print(
          AdminService.method.rotateSigningKey.output,
          res,
          () =>
            `new signing secret for ${endpoint || `org ${orgId}`} (shown only this once):\n${res.secret}\n` +
            `previous keys stop signing at ${timeText(res.previousKeysExpireTime)}\n`,
        );
      },
    },
  },
  // ---- global subscription (helpers in "filters" at the end of this file) ----
  subscription: {
    get: {
      args: [],
      flags: {},
      async run(ctx) {
        const res = await ctx.client.getSubscription({});
        ctx.print(AdminService.method.getSubscription.output, res, () => subscriptionText(res));
      },
    },
    set: {
      args: [],
      flags: { events: "string", ...FILTER_FLAGS },
      async run(ctx, _args, flags) {
        const events = stringFlag(flags, "events");
        if (events !== undefined && parseEventTypes(events).length === 0) {
          throw new UsageError("--events: give at least one event type");
        }
        if (events === undefined && !hasFilterFlags(flags)) {
          throw new UsageError(
            "subscription set: nothing to change (give --events, --models, --min-tokens or --severity)",
          );
        }
        const current = hasFilterFlags(flags) ? (await ctx.client.getSubscription({})).filters : undefined;
        const filters = filtersFromFlags(flags, current);
        const res = await ctx.client.updateSubscription({
          subscribe: events === undefined ? [] : parseEventTypes(events),
          ...(filters ? { filters } : {}),
        });
        ctx.print(
          AdminService.method.updateSubscription.output,
          res,
          () => `updated the subscription (until the control plane restarts)\n${subscriptionText(res)}`,
        );
      },
    },
  },
  deliveries: {
    list: {
      args: [],
      flags: { endpoint: "string", status: "string", event: "string", limit: "string", "page-token": "string" },
      async run(ctx, _args, flags) {
        const req: MessageInitShape<typeof ListDeliveriesRequestSchema> = {};
        const endpoint = stringFlag(flags, "endpoint");
        if (endpoint !== undefined) req.endpoint = endpoint;
        const status = stringFlag(flags, "status");
        if (status !== undefined) {
          const value = STATUS_NAMES[status];
          if (value === undefined) {
            throw new UsageError(`--status: must be one of ${Object.keys(STATUS_NAMES).join(", ")}`);
          }
          req.status = value;
        }
        const event = stringFlag(flags, "event");
        if (event !== undefined) req.eventId = event;
        const limit = stringFlag(flags, "limit");
        if (limit !== undefined) req.pageSize = parseCount("--limit", limit, 1);
        const pageToken = stringFlag(flags, "page-token");
        if (pageToken !== undefined) req.pageToken = pageToken;
        const res = await ctx.client.listDeliveries(req);
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
                );
          if (res.nextPageToken !== "") text += `more: --page-token ${res.nextPageToken}\n`;
          return text;
        });
      },
    },
    show: {
      args: ["ID"],
      flags: {},
      async run(ctx, [id = ""]) {
        const res = await ctx.client.getDelivery({ id });
        ctx.print(AdminService.method.getDelivery.output, res, () => deliveryDetailText(res));
      },
    },
    replay: {
      args: ["ID"],
      minArgs: 0,
      flags: { "dead-lettered": "boolean", endpoint: "string" },
      async run(ctx, args, flags) {
        if (flags.has("dead-lettered")) {
          if (args.length > 0) throw new UsageError("deliveries replay: give an ID or --dead-lettered, not both");
          const endpoint = stringFlag(flags, "endpoint") ?? "";
          const res = await ctx.client.replayDeliveries({ endpoint });
          ctx.print(
            AdminService.method.replayDeliveries.output,
            res,
            () =>
              `replayed ${res.replayed} dead-lettered deliver${res.replayed === 1 ? "y" : "ies"}` +
              `${endpoint ? ` of ${endpoint}` : ""}\n`,
          );
          return;
        }
        if (flags.has("endpoint")) throw new UsageError("deliveries replay: --endpoint goes with --dead-lettered");
        const [id] = args;
        if (id === undefined) throw new UsageError("deliveries replay: missing ID (or --dead-lettered)");
        const res = await ctx.client.replayDelivery({ id });
        ctx.print(
          AdminService.method.replayDelivery.output,
          res,
          () => `replayed ${id} as ${res.delivery?.id ?? "?"} to ${res.delivery?.endpoint ?? "?"}\n`,
        );
      },
    },
  },
  stats: {
    args: [],
    flags: { "window-seconds": "string" },
    async run(ctx, _args, flags) {
      const window = stringFlag(flags, "window-seconds");
      const windowSeconds = window === undefined ? 0 : parseCount("--window-seconds", window, 1);
      const res = await ctx.client.getStats({ windowSeconds });
      ctx.print(AdminService.method.getStats.output, res, () => statsText(res, windowSeconds || 3600));
    },
  },
  // ---- budgets and pricing (formatting at the end of this file) ----
  budgets: {
    list: {
      args: [],
      flags: {},
      async run(ctx) {
        const res = await ctx.client.listBudgets({});
        ctx.print(AdminService.method.listBudgets.output, res, () => budgetsText(res.budgets));
      },
    },
    set: {
      args: ["ORG"],
      flags: { "limit-type": "string", limit: "string", thresholds: "string", enforce: "boolean" },
      async run(ctx, [orgId = ""], flags) {
        const thresholds = stringFlag(flags, "thresholds");
        const res = await ctx.client.setBudget({
          budget: {
            orgId,
            limitType: requireFlag(flags, "limit-type"),
            budgetLimit: parseUsd("--limit", requireFlag(flags, "limit")),
            thresholds: thresholds === undefined ? [] : parseThresholds(thresholds),
            enforce: flags.has("enforce"),
          },
        });
        ctx.print(
          AdminService.method.setBudget.output,
          res,
          () =>
            `set ${res.budget?.limitType ?? ""} budget of org ${orgId}\n${budgetsText(res.budget ? [res.budget] : [])}`,
        );
      },
    },
    delete: {
      args: ["ORG"],
      flags: { "limit-type": "string" },
      async run(ctx, [orgId = ""], flags) {
        const limitType = requireFlag(flags, "limit-type");
        const res = await ctx.client.deleteBudget({ orgId, limitType });
        ctx.print(AdminService.method.deleteBudget.output, res, () => `deleted ${limitType} budget of org ${orgId}\n`);
      },
    },
  },
  pricing: {
    list: {
      args: [],
      flags: {},
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
              ) + "(-: unset; cached input then costs input, cache writes 1.25× and 2× input)\n",
        );
      },
    },
    set: {
      args: ["MODEL"],
      flags: {
        input: "string",
        output: "string",
        "cached-input": "string",
        "cache-write": "string",
        "cache-write-1h": "string",
      },
      async run(ctx, [model = ""], flags) {
        const optional = (name: string) => {
          const text = stringFlag(flags, name);
          return text === undefined ? undefined : parseUsd(`--${name}`, text);
        };
        const cachedInput = optional("cached-input");
        const cacheWrite = optional("cache-write");
        const cacheWrite1h = optional("cache-write-1h");
        const res = await ctx.client.setModelPrice({
          price: {
            model,
            inputPerMillion: parseUsd("--input", requireFlag(flags, "input")),
            outputPerMillion: parseUsd("--output", requireFlag(flags, "output")),
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
    },
  },
  "send-test": {
    args: [],
    flags: { endpoint: "string", event: "string" },
    async run(ctx, _args, flags) {
      const event = stringFlag(flags, "event");
      const eventType = event === undefined ? EventType.COMPLETION : parseEventTypes(event, "--event")[0];
      if (eventType === undefined || (event ?? "").includes(",")) throw new UsageError("--event: give one event type");
      const res = await ctx.client.sendTestEvent({ endpoint: stringFlag(flags, "endpoint") ?? "", eventType });
      ctx.print(
        AdminService.method.sendTestEvent.output,
        res,
        () =>
          `sent test ${eventTypeName(eventType)} event ${res.event?.id ?? "?"}\n` +
          `deliveries: ${res.deliveryIds.join(", ") || "none"}\n`,
      );
    },
  },
};

/**
 * Runs one admin verb (`argv` without the program name, e.g. ["endpoints", "list"]).
 * Returns the exit code: 0 done, 1 the API refused or failed, 2 a bad command line.
 */
export async function runAdminCommand(argv: string[], io: AdminIo): Promise<number> {
  try {
    const [group = "", ...rest] = argv;
    const entry = COMMANDS[group];
    if (entry === undefined) throw new UsageError(group === "" ? "missing command" : `unknown command "${group}"`);
    let command: Command;
    let tail: string[];
    let label: string;
    if (isCommand(entry)) {
      command = entry;
      tail = rest;
      label = group;
    } else {
      const [verb = "", ...more] = rest;
      const found = entry[verb];
      if (found === undefined || verb.startsWith("-")) {
        throw new UsageError(
          `${group}: ${verb === "" || verb.startsWith("-") ? "missing" : `unknown verb "${verb}", expected`} one of ${Object.keys(entry).join(", ")}`,
        );
      }
      command = found;
      tail = more;
      label = `${group} ${verb}`;
    }
    const parsed = parseArgs(tail, { ...GLOBAL_FLAGS, ...command.flags });
    if (parsed.positionals.length < (command.minArgs ?? command.args.length)) {
      throw new UsageError(`${label}: missing ${command.args.slice(parsed.positionals.length).join(" ")}`);
    }
    if (parsed.positionals.length > command.args.length) {
      throw new UsageError(`${label}: unexpected argument "${parsed.positionals[command.args.length]}"`);
    }
    const json = parsed.flags.has("json");
    const client = adminClient(
      stringFlag(parsed.flags, "admin") ?? io.env["AIGW_ADMIN_URL"] ?? DEFAULT_ADMIN_URL,
      stringFlag(parsed.flags, "token") ?? io.env["AIGW_ADMIN_TOKEN"],
    );
    const ctx: CommandContext = {
      client,
      io,
      json,
      print(schema, message, human) {
        io.out(json ? `${JSON.stringify(toJson(schema, message), null, 2)}\n` : human());
      },
    };
    await command.run(ctx, parsed.positionals, parsed.flags);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`aigw: ${err.message}\n\n${ADMIN_USAGE}`);
      return 2;
    }
    const ce = ConnectError.from(err);
    io.err(`aigw: ${describeRpcError(ce)}\n`);
    return 1;
  }
}

function isCommand(entry: Record<string, Command> | Command): entry is Command {
  return typeof (entry as Command).run === "function";
}

function adminClient(baseUrl: string, token: string | undefined): AdminClient {
  try {
    const u = new URL(baseUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    throw new UsageError(`--admin: "${baseUrl}" is not an http(s) URL`);
  }
  const interceptors: Interceptor[] = [];
  if (token !== undefined && token !== "") {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    interceptors,
    defaultTimeoutMs: 30_000,
    // One call per process: no keep-alive socket left to hold the process open.
    nodeOptions: { agent: false },
  });
  return createClient(AdminService, transport);
}

/** `--flag value`, `--flag=value`, and `--` ending the flags. */
function parseArgs(args: readonly string[], spec: FlagSpec): Parsed {
  const positionals: string[] = [];
  const flags: Flags = new Map();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--")) {
      if (arg.startsWith("-") && arg !== "-") throw new UsageError(`unknown flag "${arg}"`);
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const kind = spec[name];
    if (kind === undefined) throw new UsageError(`unknown flag "--${name}"`);
    if (kind === "boolean") {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      flags.set(name, true);
      continue;
    }
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      value = args[i + 1];
      i++;
    }
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    flags.set(name, value);
  }
  return { positionals, flags };
}

function stringFlag(flags: Flags, name: string): string | undefined {
  const v = flags.get(name);
  return typeof v === "string" ? v : undefined;
}

function requireFlag(flags: Flags, name: string): string {
  const v = stringFlag(flags, name);
  if (v === undefined) throw new UsageError(`--${name} is required`);
  return v;
}

function parseCount(flag: string, text: string, min: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > 0xffffffff) {
    throw new UsageError(`${flag}: must be a whole number ≥ ${min}, got "${text}"`);
  }
  return n;
}

function parseEventTypes(list: string, flag = "--events"): EventType[] {
  const names = list
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  return names.map((name) => {
    const type = eventTypeFromName(name);
    if (type === undefined) {
      throw new UsageError(`${flag}: unknown event type "${name}" (one of ${EVENT_TYPE_NAMES.join(", ")})`);
    }
    return type;
  });
}

// ---- human output ---------------------------------------------------------------------------

/** Columns padded to the widest cell; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  return all
    .map((r) =>
      r
        .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}

function fields(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length)) + 1;
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}\n`).join("");
}

function timeText(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString() : "-";
}

function eventTypesText(types: readonly EventType[]): string {
  return types.length === 0 ? "all subscribed" : types.map((t) => eventTypeName(t) ?? String(t)).join(",");
}

function statusText(status: DeliveryStatus): string {
  for (const [name, value] of Object.entries(STATUS_NAMES)) if (value === status) return name;
  return "unspecified";
}

function endpointText(e: Endpoint | undefined): string {
  if (!e) return "";
  const pairs: [string, string][] = [
    ["name", e.name],
    ["url", e.url],
    ["enabled", String(e.enabled)],
  ];
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

function deliveryDetailText(res: GetDeliveryResponse): string {
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
        )
          .split("\n")
          .map((line) => (line === "" ? line : `  ${line}`))
          .join("\n");
  text += `\nbody:\n${prettyJson(res.body)}\n`;
  return text;
}

function statsText(res: GetStatsResponse, windowSeconds: number): string {
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
            `${(s.successRate * 100).toFixed(1)}%`,
            `${s.latencyP50Ms} ms`,
            `${s.latencyP99Ms} ms`,
            s.circuitOpen ? "open" : "closed",
          ]),
        );
  for (const s of res.endpoints) {
    if (s.failureReasons.length === 0) continue;
    text += `${s.endpoint} failures: ${s.failureReasons.map((r) => `${r.reason} ×${r.count}`).join(", ")}\n`;
  }
  text += `events ingested in the last ${windowSeconds} s: ${res.eventsIngested}\n`;
  return text;
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  if (flat === "") return "-";
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function prettyJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// ---- budgets and pricing: arguments and output ----------------------------------------------

function parseUsd(flag: string, text: string): number {
  if (!/^\d+(\.\d+)?$/.test(text))
    throw new UsageError(`${flag}: must be an amount in USD such as 100 or 0.15, got "${text}"`);
  return Number(text);
}

function parseThresholds(text: string): number[] {
  return text.split(",").map((part) => {
    const t = part.trim();
    if (!/^\d+$/.test(t)) throw new UsageError(`--thresholds: "${t}" is not a whole percentage (e.g. 50,80,90,100)`);
    return Number(t);
  });
}

/** Dollars with cents, and the sub-cent digits small amounts need (0.000123). */
function usdText(usd: number): string {
  const fixed = usd.toFixed(6).replace(/0+$/, "");
  const [whole = "0", cents = ""] = fixed.split(".");
  return `${whole}.${cents.padEnd(2, "0")}`;
}

function optionalUsdText(usd: number | undefined): string {
  return usd === undefined ? "-" : usdText(usd);
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

// ---- filters --------------------------------------------------------------------------------

function hasFilterFlags(flags: Flags): boolean {
  return Object.keys(FILTER_FLAGS).some((f) => flags.has(f));
}

function commaList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** The filter flags over `base` (the current filters); undefined when none is given. */
function filtersFromFlags(flags: Flags, base?: EventFilters): MessageInitShape<typeof EventFiltersSchema> | undefined {
  if (!hasFilterFlags(flags)) return undefined;
  const models = stringFlag(flags, "models");
  const minTokens = stringFlag(flags, "min-tokens");
  const severity = stringFlag(flags, "severity");
  return {
    completionModels: models !== undefined ? commaList(models) : [...(base?.completionModels ?? [])],
    completionMinTokens:
      minTokens !== undefined ? parseCount("--min-tokens", minTokens, 0) : (base?.completionMinTokens ?? 0),
    errorSeverities: severity !== undefined ? commaList(severity) : [...(base?.errorSeverities ?? [])],
  };
}

function filtersText(f: EventFilters | undefined): string {
  const parts: string[] = [];
  if (f?.completionModels.length) parts.push(`models ${f.completionModels.join(",")}`);
  if (f?.completionMinTokens) parts.push(`min tokens ${f.completionMinTokens}`);
  if (f?.errorSeverities.length) parts.push(`severity ${f.errorSeverities.join(",")}`);
  return parts.length === 0 ? "none" : parts.join("; ");
}

function subscriptionText(s: { subscribe: EventType[]; filters?: EventFilters | undefined }): string {
  return fields([
    ["events", s.subscribe.length === 0 ? "none" : s.subscribe.map((t) => eventTypeName(t) ?? String(t)).join(",")],
    ["filters", filtersText(s.filters)],
  ]);
}
