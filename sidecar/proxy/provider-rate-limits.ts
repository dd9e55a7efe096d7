import { LRUCache } from "lru-cache";
import { type RateLimitFields, retryAfterSeconds } from "./events.js";
import { headerValue } from "./headers.js";

/**
 * The provider's rate limits as its response headers state them, and the memory that
 * turns them into few `rate_limit` events: one when a limit is hit (429, 529), one
 * warning when remaining drops under the configured share, then silence while it stays
 * low.
 */

/** requests and tokens (OpenAI, Anthropic); Anthropic also limits input and output tokens apart. */
export type LimitKind = "requests" | "tokens" | "input_tokens" | "output_tokens";

/** One limit as the response stated it; a field is undefined when absent or unreadable. */
export interface ProviderLimit {
  kind: LimitKind;
  limit: number | undefined;
  remaining: number | undefined;
  /** Epoch milliseconds. */
  resetAt: number | undefined;
}

const OPENAI_PREFIX = "x-ratelimit-";
const ANTHROPIC_PREFIX = "anthropic-ratelimit-";
const OPENAI_KINDS: Readonly<Record<string, LimitKind>> = { requests: "requests", tokens: "tokens" };
const ANTHROPIC_KINDS: Readonly<Record<string, LimitKind>> = {
  requests: "requests",
  tokens: "tokens",
  "input-tokens": "input_tokens",
  "output-tokens": "output_tokens",
};

/**
 * Reads rate-limit headers from a flat [name, value, …] list:
 * - OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}, reset as a duration ("6m0s", "20ms");
 * - Anthropic: anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset},
 *   reset as an RFC 3339 time.
 * Unreadable values are skipped: a provider's odd header never fails a request.
 */
export function readRateLimitHeaders(headers: readonly string[], now: number = Date.now()): ProviderLimit[] {
  let byKind: Map<LimitKind, ProviderLimit> | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    let kind: LimitKind | undefined;
    let field: string;
    let isDuration: boolean;
    if (name.startsWith(OPENAI_PREFIX)) {
      const rest = name.slice(OPENAI_PREFIX.length);
      const dash = rest.indexOf("-");
      if (dash === -1) continue;
      field = rest.slice(0, dash);
      kind = OPENAI_KINDS[rest.slice(dash + 1)];
      isDuration = true;
    } else if (name.startsWith(ANTHROPIC_PREFIX)) {
      const rest = name.slice(ANTHROPIC_PREFIX.length);
      const dash = rest.lastIndexOf("-");
      if (dash === -1) continue;
      field = rest.slice(dash + 1);
      kind = ANTHROPIC_KINDS[rest.slice(0, dash)];
      isDuration = false;
    } else {
      continue;
    }
    if (kind === undefined) continue;
    byKind ??= new Map();
    let limit = byKind.get(kind);
    if (limit === undefined) {
      limit = { kind, limit: undefined, remaining: undefined, resetAt: undefined };
      byKind.set(kind, limit);
    }
    const value = headers[i + 1]!.trim();
    switch (field) {
      case "limit":
        limit.limit = count(value);
        break;
      case "remaining":
        limit.remaining = count(value);
        break;
      case "reset":
        limit.resetAt = isDuration ? afterDuration(value, now) : timeOf(value);
        break;
      default:
    }
  }
  return byKind ? [...byKind.values()] : [];
}

function count(value: string): number | undefined {
  if (!/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}

function timeOf(value: string): number | undefined {
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/y;
const UNIT_MS: Readonly<Record<string, number>> = {
  h: 3_600_000,
  m: 60_000,
  s: 1000,
  ms: 1,
  us: 1e-3,
  µs: 1e-3,
  ns: 1e-6,
};

/** `now` plus a Go-style duration ("6m0s", "1s", "20ms", "1h2m3.5s"); undefined when unreadable. */
export function afterDuration(value: string, now: number): number | undefined {
  if (value === "") return undefined;
  let total = 0;
  DURATION_PART.lastIndex = 0;
  while (DURATION_PART.lastIndex < value.length) {
    const at = DURATION_PART.lastIndex;
    const match = DURATION_PART.exec(value);
    if (match === null || match.index !== at) return undefined;
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
  }
  return Number.isFinite(total) ? now + Math.ceil(total) : undefined;
}

/** What a response says about limits, for `ProviderRateLimits.observe`. */
export interface LimitObservation {
  upstream: string;
  requestId: string;
  status: number;
  limits: readonly ProviderLimit[];
  /** Seconds, from retry-after / retry-after-ms. */
  retryAfter: number | undefined;
  /** Remaining share (0..1) under which a warning goes out. */
  warningShare: number;
  now?: number;
}

interface LowLimit {
  /** When the provider said the limit resets (epoch ms): a new window earns a new warning. */
  resetAt: number | undefined;
}

/** Upstreams × limit kinds is small; the bound only guards against odd configurations. */
const MAX_TRACKED_LIMITS = 256;

/**
 * Per (upstream, limit kind): whether the warning for the current low stretch went out.
 * It re-arms once remaining is back at or above the share, or the reset time it was
 * given has passed.
 */
export class ProviderRateLimits {
  private readonly low = new LRUCache<string, LowLimit>({ max: MAX_TRACKED_LIMITS });

  /** The rate_limit events this response earns (none, usually). */
  observe(o: LimitObservation): RateLimitFields[] {
    const now = o.now ?? Date.now();
    const events: RateLimitFields[] = [];
    const isQuotaHit = o.status === 429;
    const isHit = isQuotaHit || o.status === 529;
    for (const limit of o.limits) {
      if (limit.limit === undefined || limit.limit === 0 || limit.remaining === undefined) continue;
      const key = `${o.upstream}\0${limit.kind}`;
      const share = limit.remaining / limit.limit;
      let state = this.low.get(key);
      if (state && (share >= o.warningShare || (state.resetAt !== undefined && now >= state.resetAt))) {
        this.low.delete(key);
        state = undefined;
      }
      if (share >= o.warningShare || state) continue;
      this.low.set(key, { resetAt: limit.resetAt });
      // A hit reports itself below; a warning on top of it would say the same twice.
      if (isHit) continue;
      events.push({
        requestId: o.requestId,
        source: "upstream",
        limitType: limit.kind,
        limit: limit.limit,
        remaining: limit.remaining,
        resetAt: limit.resetAt,
        retryAfter: undefined,
        statusCode: o.status,
        warning: true,
      });
    }
    if (!isHit) return events;

    const hit = exhaustedLimit(o.limits);
    const resetAt = hit?.resetAt ?? (o.retryAfter !== undefined ? now + o.retryAfter * 1000 : undefined);
    if (isQuotaHit) {
      // Low from now on, also when no header said so: no warning right after the 429.
      const key = `${o.upstream}\0${hit?.kind ?? "requests"}`;
      if (!this.low.has(key)) this.low.set(key, { resetAt });
    }
    events.push({
      requestId: o.requestId,
      source: "upstream",
      limitType: hit?.kind ?? "requests",
      limit: hit?.limit,
      remaining: 0,
      resetAt,
      retryAfter: o.retryAfter,
      statusCode: o.status,
      warning: false,
    });
    return events;
  }
}

/** The limit a 429 ran into: the one with nothing remaining (requests first), else the requests limit. */
function exhaustedLimit(limits: readonly ProviderLimit[]): ProviderLimit | undefined {
  let requests: ProviderLimit | undefined;
  let exhausted: ProviderLimit | undefined;
  for (const limit of limits) {
    if (limit.kind === "requests") requests = limit;
    if (limit.remaining === 0 && (exhausted === undefined || limit.kind === "requests")) exhausted = limit;
  }
  return exhausted ?? requests;
}

const trackers = new WeakMap<object, ProviderRateLimits>();

/**
 * The tracker of one proxy, keyed by its shared context object, so that proxies in one
 * process (tests, several sidecars) keep apart and a closed proxy's state goes with it.
 */
export function providerRateLimitsOf(owner: object): ProviderRateLimits {
  let tracker = trackers.get(owner);
  if (tracker === undefined) {
    tracker = new ProviderRateLimits();
    trackers.set(owner, tracker);
  }
  return tracker;
}

export interface ObservedResponse {
  upstream: string;
  requestId: string;
  status: number;
  /** The response's headers as a flat [name, value, …] list. */
  headers: readonly string[];
  warningShare: number;
  now?: number;
}

/** The rate_limit events one response earns: its status, retry-after and rate-limit headers against the tracker. */
export function rateLimitsOfResponse(tracker: ProviderRateLimits, r: ObservedResponse): RateLimitFields[] {
  const now = r.now ?? Date.now();
  const limits = readRateLimitHeaders(r.headers, now);
  const isHit = r.status === 429 || r.status === 529;
  if (limits.length === 0 && !isHit) return [];
  const retryAfter = isHit
    ? retryAfterSeconds(headerValue(r.headers, "retry-after"), headerValue(r.headers, "retry-after-ms"), now)
    : undefined;
  return tracker.observe({
    upstream: r.upstream,
    requestId: r.requestId,
    status: r.status,
    limits,
    retryAfter,
    warningShare: r.warningShare,
    now,
  });
}
