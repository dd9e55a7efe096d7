import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { parseDuration } from "../../common/duration.js";
import { EVENT_TYPE_NAMES } from "../../common/event-types.js";
import { webhookBody } from "../../common/webhook-body.js";
import { adminTransport, CONNECTION_FLAGS } from "../admin.js";
import { type CommandGroup, UsageError } from "../command.js";
import { watchFeedResuming } from "../feed-watcher.js";
import { type Palette, paletteFor } from "../render.js";
import { parseEventTypes } from "../values.js";

export const watch: CommandGroup = {
  name: "watch",
  summary: "the live event feed in a terminal; reconnects and resumes",
  section: "watch",
  verbs: [
    {
      name: "",
      summary: "print events as the control plane stores them, until Ctrl-C",
      details:
        "Lost connections are retried with backoff (0.25 s doubling to 10 s) and resumed after\n" +
        "the last event printed: nothing is missed or printed twice. Notices go to stderr; on\n" +
        "stop, the cursor to resume from (--since CURSOR). Colour and aligned columns on a\n" +
        "terminal only (NO_COLOR turns colour off); --json prints one webhook body per line.",
      flags: {
        events: {
          type: "string",
          value: "T,…",
          help: `these event types only (${EVENT_TYPE_NAMES.join(", ")})`,
        },
        org: { type: "string", value: "ORG", help: "this org's events only" },
        app: { type: "string", value: "APP", help: "this app's events only" },
        since: {
          type: "string",
          value: "DURATION|CURSOR",
          help: "replay stored events first: from 2h (ms, s, m, h, d) ago, or after a cursor (0: all kept)",
        },
        json: { type: "boolean", help: "one JSON webhook body per line" },
        ...CONNECTION_FLAGS,
      },
      async run({ flags, io, label }) {
        const events = flags.string("events");
        const eventTypes = events === undefined ? [] : parseEventTypes(events);
        const since = flags.string("since");
        let cursor: string | undefined;
        let sinceMs: number | undefined;
        if (since !== undefined) {
          // Digits alone are a cursor; a duration has its unit (a bare number would be ambiguous).
          if (/^\d+$/.test(since)) cursor = since;
          else {
            try {
              sinceMs = parseDuration(since, "--since");
            } catch (err) {
              throw new UsageError(`${(err as Error).message}, nor a cursor (digits)`);
            }
          }
        }
        const transport = adminTransport(flags, io, { keepAlive: true });
        const print = flags.bool("json") ? jsonLine : new EventLine(paletteFor(io), io.isTTY === true).format;
        const abort = new AbortController();
        void io.stopped?.then(() => abort.abort());
        const orgId = flags.string("org");
        const app = flags.string("app");
        const last = await watchFeedResuming({
          transport,
          eventTypes,
          ...(orgId ? { orgId } : {}),
          ...(app ? { app } : {}),
          ...(cursor !== undefined ? { cursor } : {}),
          ...(sinceMs !== undefined ? { sinceMs } : {}),
          onEvent: (event) => io.out(`${print(event)}\n`),
          onNotice: (text) => io.err(`aigw ${label}: ${text}\n`),
          signal: abort.signal,
        });
        if (last !== "") io.err(`aigw ${label}: stopped; resume with --since ${last}\n`);
        return 0;
      },
    },
  ],
};

function jsonLine(event: Event): string {
  return JSON.stringify(webhookBody(event));
}

const TYPE_STYLE: Record<string, keyof Omit<Palette, "enabled">> = {
  completion: "green",
  error: "red",
  streaming: "cyan",
  budget: "yellow",
  rate_limit: "magenta",
  "endpoint.disabled": "red",
  "endpoint.recovered": "green",
  "delivery.exhausted": "red",
};

/**
 * One line per event: time, type, org/app, provider, the payload's scalar fields, id.
 * On a terminal the leading columns are padded (to a usual width, or the widest value
 * seen so far) and coloured; piped, fields are separated by one space and nothing else.
 */
class EventLine {
  // "rate_limit", "org_123/checkout" with room, "anthropic" ("endpoint.recovered" widens the first).
  private readonly widths = [10, 20, 9];

  constructor(
    private readonly p: Palette,
    private readonly align: boolean,
  ) {}

  format = (event: Event): string => {
    const { event: type, id, timestamp, org_id, app, provider, ...rest } = webhookBody(event);
    const fields = Object.entries(rest)
      .filter(([, v]) => v !== null && v !== "" && typeof v !== "object")
      .map(([k, v]) => {
        const value = typeof v === "string" && /\s/.test(v) ? JSON.stringify(v) : String(v);
        return `${this.p.dim(`${k}=`)}${value}`;
      })
      .join(" ");
    const lead = [String(type), `${String(org_id)}/${String(app)}`, String(provider)].map((cell, i) => {
      if (!this.align) return cell;
      this.widths[i] = Math.max(this.widths[i] ?? 0, cell.length);
      return cell.padEnd(this.widths[i] ?? 0);
    });
    const style = this.p[TYPE_STYLE[String(type)] ?? "bold"];
    const severity = rest.severity === "critical" ? this.p.bold : (s: string) => s;
    return [
      this.p.dim(String(timestamp)),
      severity(style(lead[0] ?? "")),
      lead[1],
      lead[2],
      fields,
      this.p.dim(String(id)),
    ].join(this.align ? "  " : " ");
  };
}
