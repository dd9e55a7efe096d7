import type {
  CompletionEvent,
  ErrorEvent,
  Event,
  RateLimitEvent,
  StreamingEvent,
} from "../../gen/aigw/v1/events_pb.js";
import { newEventId } from "../../common/ids.js";
import type { Usage } from "../providers/adapter.js";

/** Who the events are about: the sidecar's org and app, and the upstream's name. */
export interface EventOrigin {
  orgId: string;
  app: string;
  provider: string;
}

export type ErrorType =
  | "rate_limit"
  | "timeout"
  | "upstream_error"
  | "invalid_request"
  | "authentication"
  | "network"
  | "budget_exceeded";

export type Severity = "warning" | "error" | "critical";

export interface ErrorClass {
  errorType: ErrorType;
  severity: Severity;
}

/**
 * The error class of an upstream HTTP status.
 * - 429: the caller's own quota; retrying later works → warning.
 * - 529 (Anthropic "overloaded"): DESIGN.md counts it with 429 as a rate limit, but it is
 *   the provider's capacity, not the caller's quota, so it is reported as error, not warning.
 * - Other 5xx are the provider's fault and stay "error" however often they repeat;
 *   "critical" is kept for aigw not reaching the provider at all (network).
 */
export function classifyStatus(status: number): ErrorClass {
  if (status === 429) return { errorType: "rate_limit", severity: "warning" };
  if (status === 529) return { errorType: "rate_limit", severity: "error" };
  if (status === 401 || status === 403) return { errorType: "authentication", severity: "error" };
  if (status === 408 || status === 504) return { errorType: "timeout", severity: "error" };
  if (status >= 500) return { errorType: "upstream_error", severity: "error" };
  return { errorType: "invalid_request", severity: "warning" };
}

export const NETWORK_ERROR: ErrorClass = { errorType: "network", severity: "critical" };
export const TIMEOUT_ERROR: ErrorClass = { errorType: "timeout", severity: "error" };

const MAX_UINT32 = 0xffff_ffff;

/**
 * Seconds to wait, from OpenAI's `retry-after-ms` (preferred: finer) or the standard
 * `retry-after` (delta-seconds or an HTTP date, RFC 9110 10.2.3). Undefined when absent
 * or unreadable.
 */
export function retryAfterSeconds(
  retryAfter: string | undefined,
  retryAfterMs: string | undefined,
  now: number = Date.now(),
): number | undefined {
  if (retryAfterMs !== undefined) {
    const ms = Number(retryAfterMs.trim());
    if (retryAfterMs.trim() !== "" && Number.isFinite(ms) && ms >= 0) return clampSeconds(Math.ceil(ms / 1000));
  }
  if (retryAfter === undefined) return undefined;
  const text = retryAfter.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return clampSeconds(Math.ceil(Number(text)));
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return clampSeconds(Math.max(0, Math.ceil((date - now) / 1000)));
}

function clampSeconds(seconds: number): number {
  return Math.min(seconds, MAX_UINT32);
}

/** A token count as the event's uint32 holds it: a provider's absurd number is capped, never a crash. */
function tokens(count: number | undefined): number {
  if (count === undefined || !Number.isFinite(count) || count < 0) return 0;
  return Math.min(Math.floor(count), MAX_UINT32);
}

function millis(ms: number): number {
  return Math.min(Math.max(0, Math.round(ms)), MAX_UINT32);
}

export interface CompletionFields {
  requestId: string;
  model: string;
  usage: Usage | undefined;
  /** Whether `usage` is the provider's final usage, not partial or estimated (usage_known). */
  usageKnown: boolean;
  latencyMs: number;
  /** Streams only. */
  ttftMs: number | undefined;
  stream: boolean;
  statusCode: number;
  path: string;
  /** Set when the stream ended early: "client_disconnected", "upstream_disconnected". */
  finishReason: string | undefined;
}

export function completionEvent(origin: EventOrigin, f: CompletionFields): Event {
  const usage = f.usage;
  const value: CompletionEvent = {
    $typeName: "aigw.v1.CompletionEvent",
    requestId: f.requestId,
    model: f.model,
    tokensUsed: tokens(usage?.totalTokens),
    promptTokens: tokens(usage?.promptTokens),
    completionTokens: tokens(usage?.completionTokens),
    costUsd: 0,
    latencyMs: millis(f.latencyMs),
    stream: f.stream,
    statusCode: f.statusCode,
    path: f.path,
    responseJson: "",
    pricingUnknown: false,
    finishReason: f.finishReason ?? "",
    async: false,
    usageUnknown: !f.usageKnown,
  };
  if (f.ttftMs !== undefined) value.ttftMs = millis(f.ttftMs);
  if (usage?.cacheReadTokens !== undefined) value.cacheReadTokens = tokens(usage.cacheReadTokens);
  if (usage?.cacheWriteTokens !== undefined) value.cacheWriteTokens = tokens(usage.cacheWriteTokens);
  if (usage?.cacheWrite1hTokens !== undefined) value.cacheWrite1hTokens = tokens(usage.cacheWrite1hTokens);
  if (usage?.reasoningTokens !== undefined) value.reasoningTokens = tokens(usage.reasoningTokens);
  return eventOf(origin, { case: "completion", value });
}

export interface ErrorFields {
  requestId: string;
  errorClass: ErrorClass;
  errorMessage: string;
  /** The upstream's status; 0 when no response came (network, timeout). */
  statusCode: number;
  retryAfter: number | undefined;
  model: string;
  path: string;
  latencyMs: number;
}

export function errorEvent(origin: EventOrigin, f: ErrorFields): Event {
  const value: ErrorEvent = {
    $typeName: "aigw.v1.ErrorEvent",
    requestId: f.requestId,
    errorType: f.errorClass.errorType,
    errorMessage: f.errorMessage,
    statusCode: f.statusCode,
    severity: f.errorClass.severity,
    model: f.model,
    path: f.path,
    latencyMs: millis(f.latencyMs),
  };
  if (f.retryAfter !== undefined) value.retryAfter = f.retryAfter;
  return eventOf(origin, { case: "error", value });
}

/**
 * The error class of an error the provider sent inside a stream (the HTTP status was
 * already 200), from its error type: Anthropic's `event: error` types, and OpenAI's.
 */
export function classifyStreamError(errorType: string | undefined): ErrorClass {
  switch (errorType) {
    case "overloaded_error":
      return classifyStatus(529);
    case "rate_limit_error":
    case "rate_limit_exceeded":
      return classifyStatus(429);
    case "authentication_error":
    case "permission_error":
      return classifyStatus(401);
    case "timeout_error":
      return TIMEOUT_ERROR;
    case "invalid_request_error":
    case "request_too_large":
    case "not_found_error":
      return classifyStatus(400);
    default:
      return classifyStatus(500);
  }
}

export interface StreamingFields {
  requestId: string;
  /** Index of the (first) content chunk this event carries, 0-based per request. */
  tokenIndex: number;
  content: string;
  /** Only on a request's last streaming event. */
  finishReason: string | undefined;
  model: string;
}

export function streamingEvent(origin: EventOrigin, f: StreamingFields): Event {
  const value: StreamingEvent = {
    $typeName: "aigw.v1.StreamingEvent",
    requestId: f.requestId,
    tokenIndex: Math.min(f.tokenIndex, MAX_UINT32),
    content: f.content,
    model: f.model,
  };
  if (f.finishReason !== undefined) value.finishReason = f.finishReason;
  return eventOf(origin, { case: "streaming", value });
}

export interface RateLimitFields {
  requestId: string;
  source: "upstream" | "gateway";
  /** requests, tokens (Anthropic also input_tokens, output_tokens). */
  limitType: string;
  limit: number | undefined;
  remaining: number | undefined;
  /** Epoch milliseconds. */
  resetAt: number | undefined;
  retryAfter: number | undefined;
  statusCode: number;
  warning: boolean;
}

export function rateLimitEvent(origin: EventOrigin, f: RateLimitFields): Event {
  const value: RateLimitEvent = {
    $typeName: "aigw.v1.RateLimitEvent",
    requestId: f.requestId,
    source: f.source,
    limitType: f.limitType,
    resetAt: rfc3339(f.resetAt),
    statusCode: f.statusCode,
    warning: f.warning,
  };
  if (f.limit !== undefined) value.limit = BigInt(f.limit);
  if (f.remaining !== undefined) value.remaining = BigInt(f.remaining);
  if (f.retryAfter !== undefined) value.retryAfter = clampSeconds(f.retryAfter);
  return eventOf(origin, { case: "rateLimit", value });
}

/** RFC 3339 (UTC, milliseconds), "" for no time or one outside what Date can show. */
function rfc3339(epochMs: number | undefined): string {
  if (epochMs === undefined || !Number.isFinite(epochMs) || Math.abs(epochMs) > 8.64e15) return "";
  return new Date(epochMs).toISOString();
}

/**
 * The envelope every event of a proxied request shares: a fresh id, the origin, now. Events
 * are built as the plain objects `create(EventSchema, …)` returns (every proto3 field set,
 * optional ones only when given), without its walk over the descriptors: one or more per
 * request, on the proxy's thread.
 */
function eventOf(origin: EventOrigin, payload: Event["payload"]): Event {
  const now = Date.now();
  return {
    $typeName: "aigw.v1.Event",
    id: newEventId(now),
    orgId: origin.orgId,
    app: origin.app,
    provider: origin.provider,
    time: {
      $typeName: "google.protobuf.Timestamp",
      seconds: BigInt(Math.floor(now / 1000)),
      nanos: (now % 1000) * 1_000_000,
    },
    webhookUrl: "",
    payload,
  };
}
