import type { RetryConfig } from "../../config/types.js";
import type { AttemptOutcome } from "../../store/store.js";

/**
 * The retry schedule as data (svix-style): which attempt results are retried, when the
 * next attempt is due, and what happens when retries run out. Pure functions, so the
 * numbers are tested without a clock or a network.
 */

/** What one HTTP attempt came to, as a delivery worker reports it. */
export interface AttemptResult {
  /** HTTP status; 0 when no response arrived. */
  statusCode: number;
  latencyMs: number;
  /** "" when the receiver answered; otherwise what went wrong, for last_error. */
  error: string;
  /** The first 1 KiB of the response body, as text. */
  responseBody: string;
  /** From the response's Retry-After, relative to when it arrived. */
  retryAfterMs?: number;
  timedOut: boolean;
  networkError: boolean;
  /**
   * The request was never sent: the URL is invalid or the destination guard refused it
   * (require_https, a private address). Retrying cannot change that, so it fails at once.
   */
  refused: boolean;
}

/** Retry-After is honoured but never parks a delivery for longer than this. */
export const MAX_RETRY_AFTER_MS = 60 * 60 * 1000;

/**
 * Backoff before attempt `attempt + 1`, after `attempt` (1-based) failed:
 * min(max_delay_ms, initial_delay_ms × multiplier^(attempt−1)), then jittered down by up to
 * `jitter` of itself so retries of many deliveries spread out without ever exceeding the cap.
 */
export function backoffDelayMs(retry: RetryConfig, attempt: number, random: () => number = Math.random): number {
  const exponent = Math.max(0, attempt - 1);
  const base = Math.min(retry.maxDelayMs, retry.initialDelayMs * retry.backoffMultiplier ** exponent);
  const jitter = Math.min(1, Math.max(0, retry.jitter));
  return Math.max(0, Math.round(base * (1 - jitter * random())));
}

/** The delay before the next attempt: the backoff, but no earlier than Retry-After (capped at 1 hour). */
export function nextAttemptDelayMs(
  retry: RetryConfig,
  attempt: number,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  const backoff = backoffDelayMs(retry, attempt, random);
  if (retryAfterMs === undefined || !Number.isFinite(retryAfterMs) || retryAfterMs <= 0) return backoff;
  return Math.max(backoff, Math.min(retryAfterMs, MAX_RETRY_AFTER_MS));
}

/**
 * Retry-After (RFC 9110 §10.2.3) as milliseconds from `now`: delay-seconds or an HTTP date.
 * Undefined for anything else, so a garbage header falls back to the backoff.
 */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (text === "") return undefined;
  if (/^\d+$/.test(text)) {
    const seconds = Number(text);
    return Number.isSafeInteger(seconds) ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : MAX_RETRY_AFTER_MS;
  }
  // Only date forms: Date.parse accepts many shapes ("5") that are not HTTP dates.
  if (!/[A-Za-z]{3}/.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

export type AttemptVerdict = "delivered" | "retryable" | "gone" | "fatal";

/**
 * How the policy reads one attempt. Retryable = the listed status codes, timeouts and
 * network errors (DESIGN.md "Semantics"). A 5xx that is NOT listed fails at once: the
 * list is the operator's statement of what is worth retrying, and we keep to it rather than
 * second-guessing it. Every 3xx fails: redirects are never followed (a redirect could point
 * a signed payload anywhere), and 410 Gone disables the endpoint.
 */
export function classifyAttempt(result: AttemptResult, retry: RetryConfig): AttemptVerdict {
  if (result.refused) return "fatal";
  const status = result.statusCode;
  if (status >= 200 && status < 300) return "delivered";
  if (status === 0) return result.timedOut || result.networkError ? "retryable" : "fatal";
  if (status === 410) return "gone";
  if (retry.retryableStatusCodes.includes(status)) return "retryable";
  return "fatal";
}

export interface OutcomeContext {
  /** 1-based number of the attempt just made. */
  attempt: number;
  now: number;
  /** The endpoint's failover target ("" for none). */
  failoverTo: string;
  endpoint: string;
  random?: () => number;
}

/** The delivery's next state after an attempt, as Store.completeAttempt takes it. */
export function decideOutcome(result: AttemptResult, retry: RetryConfig, ctx: OutcomeContext): AttemptOutcome {
  switch (classifyAttempt(result, retry)) {
    case "delivered":
      return { status: "delivered" };
    case "gone":
      return { status: "endpoint_gone", reason: `receiver answered 410 Gone; endpoint ${ctx.endpoint} disabled` };
    case "fatal":
      return { status: "failed" };
    case "retryable":
      if (ctx.attempt >= retry.maxAttempts) return deadLettered(ctx.failoverTo);
      return {
        status: "retry",
        nextAttemptAt: ctx.now + nextAttemptDelayMs(retry, ctx.attempt, result.retryAfterMs, ctx.random),
      };
  }
}

export function deadLettered(failoverTo: string): AttemptOutcome {
  return failoverTo ? { status: "dead_lettered", failoverTo } : { status: "dead_lettered" };
}

/** The last_error text for an attempt: the transport error, or the status the receiver gave. */
export function describeAttempt(result: AttemptResult): string {
  if (result.error) return result.error;
  if (result.statusCode >= 200 && result.statusCode < 300) return "";
  if (result.statusCode >= 300 && result.statusCode < 400) {
    return `receiver answered ${result.statusCode} (redirect not followed)`;
  }
  return `receiver answered ${result.statusCode}`;
}
