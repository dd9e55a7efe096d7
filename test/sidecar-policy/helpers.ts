import { create } from "@bufbuild/protobuf";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { BudgetStateSchema, GatewayLimitSchema } from "../../gen/aigw/v1/ingest_pb.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings } from "../../sidecar/proxy/settings.js";
import type { Harness } from "../sidecar/harness.js";

export const ALL_TYPES: ReadonlySet<EventType> = new Set([EventType.COMPLETION, EventType.ERROR, EventType.RATE_LIMIT]);

/** A mutable settings source, as the sidecar's run() keeps one and swaps it per snapshot. */
export class SettingsSource {
  current: ProxySettings;
  constructor(init: Partial<ProxySettings> = {}) {
    this.current = { ...DEFAULT_PROXY_SETTINGS, wantedEventTypes: ALL_TYPES, ...init };
  }
  /** A new settings object, as a newer config version would compile to. */
  update(change: Partial<ProxySettings>): void {
    this.current = { ...this.current, ...change };
  }
  readonly get = (): ProxySettings => this.current;
}

export function limit(fields: { orgId?: string; app?: string; rpm?: number; tpm?: number }) {
  return create(GatewayLimitSchema, {
    orgId: fields.orgId ?? "org_test",
    app: fields.app ?? "",
    requestsPerMinute: fields.rpm ?? 0,
    tokensPerMinute: fields.tpm ?? 0,
  });
}

export function budget(fields: { orgId?: string; exceeded: boolean; enforce: boolean; limitType?: string }) {
  return create(BudgetStateSchema, {
    orgId: fields.orgId ?? "org_test",
    limitType: fields.limitType ?? "monthly",
    budgetLimit: 10,
    currentSpend: 10.02,
    exceeded: fields.exceeded,
    enforce: fields.enforce,
  });
}

export const CHAT = { model: "gpt-4o", messages: [{ role: "user", content: "Say hello" }] };

/** A chat completion through the proxy with fetch (raw status, headers and body). */
export async function postChat(
  h: Harness,
  headers: Record<string, string> = {},
  body: unknown = CHAT,
  path = "/v1/chat/completions",
): Promise<{ status: number; headers: Headers; json: unknown; elapsedMs: number }> {
  const t0 = performance.now();
  const res = await fetch(`${h.proxy.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer sk-test", ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, json, elapsedMs: performance.now() - t0 };
}

export type PayloadOf<C extends Event["payload"]["case"]> = Extract<Event["payload"], { case: C }>["value"];

/** The payloads of one kind, each with its event (for the envelope: webhook_url, org_id). */
export function eventsOf<C extends NonNullable<Event["payload"]["case"]>>(
  events: readonly Event[],
  kind: C,
): Array<PayloadOf<C> & { event: Event }> {
  const out: object[] = [];
  for (const event of events) {
    if (event.payload.case === kind) out.push({ ...(event.payload.value as object), event });
  }
  return out as never;
}

/** Retries an async check until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
