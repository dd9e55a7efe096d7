import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { FeedService } from "../gen/aigw/v1/feed_pb.js";
import type { EventType } from "../gen/aigw/v1/events_pb.js";
import { eventTypeFromName, EVENT_TYPE_NAMES } from "../common/event-types.js";
import { webhookBody } from "../common/webhook-body.js";

export interface WatchOptions {
  admin: string;
  token?: string;
  events: string[];
  json: boolean;
  out: (line: string) => void;
  signal?: AbortSignal;
}

/** `aigw watch`: the live feed in a terminal, resuming from the last cursor after a cut. */
export async function watchFeed(options: WatchOptions): Promise<void> {
  const types: EventType[] = [];
  for (const name of options.events) {
    const t = eventTypeFromName(name);
    if (t === undefined)
      throw new Error(`--events: unknown event type "${name}" (expected ${EVENT_TYPE_NAMES.join(", ")})`);
    types.push(t);
  }
  const client = createClient(FeedService, createConnectTransport({ baseUrl: options.admin, httpVersion: "1.1" }));
  const headers: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
  const stream = client.watch(
    { eventTypes: types },
    { headers, ...(options.signal ? { signal: options.signal } : {}) },
  );
  for await (const res of stream) {
    if (!res.event) continue;
    const body = webhookBody(res.event);
    options.out(options.json ? JSON.stringify(body) : formatLine(body));
  }
}

function formatLine(body: Record<string, unknown>): string {
  const { event, id, timestamp, org_id, app, provider, ...rest } = body;
  const fields = Object.entries(rest)
    .filter(([, v]) => v !== null && v !== "" && typeof v !== "object")
    .map(([k, v]) => `${k}=${typeof v === "string" && /\s/.test(v) ? JSON.stringify(v) : String(v)}`)
    .join(" ");
  return `${String(timestamp)} ${String(event).padEnd(10)} ${String(org_id)}/${String(app)} ${String(provider)} ${fields} ${String(id)}`;
}
