import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  AdminService,
  type Delivery,
  DeliveryStatus,
  type GetDeliveryResponse,
  type ListDeliveriesRequestSchema,
  type ReplayDeliveriesRequestSchema,
  ReplayDeliveriesResponseSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import { eventTypeName } from "../../common/event-types.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { parseDuration } from "../../common/duration.js";
import { type AdminContext, adminVerb } from "../admin.js";
import { type CommandGroup, type Flags, UsageError } from "../command.js";
import { count, fields, oneLine, type Palette, prettyJson, table, timeText } from "../render.js";
import { commaList, parseCount } from "../values.js";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from "../../control-plane/store/page-token.js";

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
        limit: {
          type: "string",
          value: "N",
          help: `at most N (a page; default ${DEFAULT_PAGE_SIZE}, at most ${MAX_PAGE_SIZE})`,
        },
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
        if (limit !== undefined) req.pageSize = parseCount("--limit", limit, 1, MAX_PAGE_SIZE);
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
      summary: "send deliveries again as new ones: one by ID, or those that failed in a time window",
      args: [{ name: "ID", optional: true }],
      synopsis: [
        "ID",
        "--since D|TIME [--until D|TIME] [--endpoint E] [--status failed,dead_lettered]",
        "--dead-lettered [--endpoint E]",
      ],
      details:
        "A window replays the failed and dead-lettered deliveries that finished in it (--status\n" +
        "narrows that), in batches that never hold up deliveries. D is a duration back from now\n" +
        "(90s, 15m, 2h, 7d), TIME an RFC 3339 time (2026-11-29T13:00:00Z). Running it twice\n" +
        "queues nothing the second time: a delivery already replayed, or whose event is\n" +
        "pending again for its endpoint, is skipped. A progress bar shows on a terminal.\n" +
        "--dead-lettered [--endpoint E] replays every dead letter, whenever it finished.",
      flags: {
        since: { type: "string", value: "D|TIME", help: "window start: a duration ago (2h) or an RFC 3339 time" },
        until: { type: "string", value: "D|TIME", help: "window end (default: now)" },
        status: {
          type: "string",
          value: "failed,dead_lettered",
          help: "with --since: these statuses only (default both)",
        },
        "dead-lettered": { type: "boolean", help: "replay every dead-lettered delivery, whenever it finished" },
        endpoint: { type: "string", value: "E", help: "with --since or --dead-lettered: of this endpoint only" },
      },
      async run(ctx, args, flags) {
        const windowed = flags.has("since");
        if (windowed || flags.bool("dead-lettered")) {
          if (args.length > 0) throw new UsageError("give an ID or a window (--since / --dead-lettered), not both");
          if (windowed && flags.bool("dead-lettered")) {
            throw new UsageError(
              "--dead-lettered replays every dead letter; for a window use --since with --status dead_lettered",
            );
          }
          await replayWindow(ctx, flags, windowed);
          return;
        }
        for (const flag of ["endpoint", "until", "status"]) {
          if (flags.has(flag)) throw new UsageError(`--${flag} goes with --since (or --endpoint with --dead-lettered)`);
        }
        const [id] = args;
        if (id === undefined) throw new UsageError("missing ID (or --since D, or --dead-lettered)");
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

/** Deliveries looked at per call: each call is a few bounded store transactions. */
const REPLAY_PAGE = 2_000;

async function replayWindow(ctx: AdminContext, flags: Flags, windowed: boolean): Promise<void> {
  const now = Date.now();
  // The window ends now unless --until says otherwise, fixed for every page of this run.
  const req: MessageInitShape<typeof ReplayDeliveriesRequestSchema> = {
    pageSize: REPLAY_PAGE,
    until: timestampFromMs(now),
  };
  const endpoint = flags.string("endpoint");
  if (endpoint !== undefined) req.endpoint = endpoint;
  let sinceMs: number | undefined;
  if (windowed) {
    sinceMs = parseTimeFlag("--since", flags.require("since"), now);
    req.since = timestampFromMs(sinceMs);
    const until = flags.string("until");
    if (until !== undefined) {
      const untilMs = parseTimeFlag("--until", until, now);
      if (untilMs <= sinceMs) throw new UsageError(`--until: must be after --since, got "${until}"`);
      req.until = timestampFromMs(untilMs);
    }
    const status = flags.string("status");
    if (status !== undefined) {
      req.statuses = commaList(status).map((name) => {
        if (name !== "failed" && name !== "dead_lettered") {
          throw new UsageError(`--status: must be failed, dead_lettered or both (comma-separated), got "${name}"`);
        }
        return STATUS_NAMES[name] as DeliveryStatus;
      });
      if (req.statuses.length === 0)
        throw new UsageError(`--status: must name failed and/or dead_lettered, got "${status}"`);
    }
  }
  const progress = ctx.io.isTTY && !ctx.json ? new ProgressBar(ctx.io.err) : undefined;
  let replayed = 0;
  let skipped = 0;
  let total = 0;
  try {
    for (let first = true; ; first = false) {
      const res = await ctx.client.replayDeliveries(req);
      if (first) total = res.total;
      replayed += res.replayed;
      skipped += res.skipped;
      progress?.update(replayed + skipped, total, replayed);
      if (res.nextPageToken === "") break;
      req.pageToken = res.nextPageToken;
    }
  } finally {
    progress?.done();
  }
  const out = create(ReplayDeliveriesResponseSchema, { replayed, skipped, total });
  const of = endpoint ? ` of ${endpoint}` : "";
  ctx.print(AdminService.method.replayDeliveries.output, out, () =>
    windowed
      ? `replayed ${count(replayed, "delivery", "deliveries")}${of} that finished since ` +
        `${new Date(sinceMs ?? 0).toISOString()}` +
        (skipped > 0 ? ` (${skipped} skipped: already replayed or pending again, or endpoint disabled or gone)` : "") +
        "\n"
      : `replayed ${count(replayed, "dead-lettered delivery", "dead-lettered deliveries")}${of}\n`,
  );
}

/** A duration back from `now` ("2h") or an RFC 3339 time; a usage error names the flag. */
export function parseTimeFlag(flag: string, text: string, now: number): number {
  if (/^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$/.test(text)) {
    try {
      return now - parseDuration(text, flag);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  // RFC 3339 (a date alone means its midnight UTC).
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/.test(text.trim())) {
    const ms = Date.parse(text.trim().replace(" ", "T"));
    if (Number.isFinite(ms)) {
      if (ms > now) throw new UsageError(`${flag}: "${text}" is in the future`);
      return ms;
    }
  }
  throw new UsageError(
    `${flag}: "${text}" is neither a duration (90s, 15m, 2h, 7d) nor an RFC 3339 time (2026-11-29T13:00:00Z)`,
  );
}

/** "[#####.....] 1,234 / 5,000 (1,200 replayed)" redrawn in place on stderr (a terminal only). */
class ProgressBar {
  private lastDrawn = 0;
  private drawn = false;

  constructor(private readonly write: (s: string) => void) {}

  update(done: number, total: number, replayed: number): void {
    const now = performance.now();
    if (this.drawn && now - this.lastDrawn < 100 && done < total) return;
    this.lastDrawn = now;
    this.drawn = true;
    const width = 30;
    const share = total > 0 ? Math.min(1, done / total) : 1;
    const filled = Math.round(share * width);
    const n = (x: number) => x.toLocaleString("en-US");
    this.write(
      `\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${n(done)} / ${n(Math.max(total, done))} looked at, ${n(replayed)} replayed\u001b[K`,
    );
  }

  done(): void {
    if (this.drawn) this.write("\n");
  }
}

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
