import type { ServerResponse } from "node:http";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { errorEvent, type EventOrigin } from "../proxy/events.js";
import type { ProxySettings } from "../proxy/settings.js";
import { type BudgetRefusal, BudgetGuard, secondsToPeriodEnd } from "./budget-guard.js";
import { GatewayLimiter, type LimitRefusal } from "./gateway-limits.js";
import { type ErrorFormat, sendProviderError } from "./provider-errors.js";
import { gatewayRateLimitEvent } from "./refusal-events.js";

export type Refusal = { kind: "budget"; budget: BudgetRefusal } | { kind: "limit"; limit: LimitRefusal };

/**
 * What the control plane decided about this sidecar's org and app, applied before a call
 * is forwarded: an exceeded, enforced budget refuses every observed call; gateway limits
 * refuse past their per-minute share. O(1) per request, no awaits.
 */
export class GatewayPolicy {
  private readonly budgets: BudgetGuard;
  private readonly limiter: GatewayLimiter;

  constructor(orgId: string, app: string) {
    this.budgets = new BudgetGuard(orgId);
    this.limiter = new GatewayLimiter(orgId, app);
  }

  /** Admits (and counts) an observed call, or says why not. */
  admit(settings: ProxySettings, now: number): Refusal | undefined {
    const budget = this.budgets.check(settings.budgets);
    if (budget) return { kind: "budget", budget };
    const limit = this.limiter.admit(settings.limits, now);
    return limit ? { kind: "limit", limit } : undefined;
  }

  /** Whether calls' token usage must be recorded (some tokens-per-minute limit applies). */
  metersTokens(settings: ProxySettings, now: number): boolean {
    return this.limiter.metersTokens(settings.limits, now);
  }

  recordTokens(tokens: number, now: number): void {
    this.limiter.recordTokens(tokens, now);
  }
}

/** The refused request, for its answer and its events. */
export interface RefusedRequest {
  res: ServerResponse;
  format: ErrorFormat;
  requestId: string;
  origin: EventOrigin;
  path: string;
  model: string;
  latencyMs: number;
  /** x-aigw-webhook-url: its events are built whatever the subscriptions, and carry it. */
  webhookUrl: string | undefined;
  wanted: ReadonlySet<EventType>;
  publish: (event: Event) => void;
}

/** Answers 429 in the provider's format and publishes the refusal's events. Never calls upstream. */
export function answerRefusal(refusal: Refusal, r: RefusedRequest, now: Date = new Date()): void {
  const events: Event[] = [];
  const wantsError = r.webhookUrl !== undefined || r.wanted.has(EventType.ERROR);
  if (refusal.kind === "budget") {
    const budget = refusal.budget;
    const retryAfter = secondsToPeriodEnd(budget.limitType, now);
    const message = `aigw: ${budget.message}`;
    sendProviderError(
      r.res,
      429,
      r.format,
      {
        message,
        openAiType: "insufficient_quota",
        code: "budget_exceeded",
        param: null,
        anthropicType: "rate_limit_error",
      },
      r.requestId,
      // Retrying before the period ends (or the budget is raised) cannot succeed; the openai
      // and anthropic SDKs honour x-should-retry.
      [...(retryAfter !== undefined ? ["retry-after", String(retryAfter)] : []), "x-should-retry", "false"],
    );
    if (wantsError) {
      events.push(
        errorEvent(r.origin, {
          requestId: r.requestId,
          errorClass: { errorType: "budget_exceeded", severity: "critical" },
          errorMessage: budget.message,
          statusCode: 429,
          retryAfter,
          model: r.model,
          path: r.path,
          latencyMs: r.latencyMs,
        }),
      );
    }
  } else {
    const limit = refusal.limit;
    const retryAfter = Math.ceil(limit.retryAfterMs / 1000);
    const scope = limit.app === "" ? `org ${r.origin.orgId}` : `app ${limit.app} of org ${r.origin.orgId}`;
    const message = `aigw: rate limit reached for ${scope} on ${limit.limitType} per minute: limit ${limit.limit}. Please try again in ${retryAfter}s.`;
    sendProviderError(
      r.res,
      429,
      r.format,
      {
        message,
        openAiType: limit.limitType,
        code: "rate_limit_exceeded",
        param: null,
        anthropicType: "rate_limit_error",
      },
      r.requestId,
      ["retry-after", String(retryAfter)],
    );
    // One rate_limit event when the limit is hit, not one per request while it stays hit;
    // a request with its own webhook URL always gets its own.
    const wantsRateLimit = r.webhookUrl !== undefined || (limit.firstRefusal && r.wanted.has(EventType.RATE_LIMIT));
    if (wantsRateLimit) {
      events.push(
        gatewayRateLimitEvent(r.origin, {
          requestId: r.requestId,
          limitType: limit.limitType,
          limit: limit.limit,
          retryAfterSeconds: retryAfter,
          resetAt: new Date(now.getTime() + limit.retryAfterMs),
        }),
      );
    }
    if (wantsError) {
      events.push(
        errorEvent(r.origin, {
          requestId: r.requestId,
          errorClass: { errorType: "rate_limit", severity: "warning" },
          errorMessage: message.slice("aigw: ".length),
          statusCode: 429,
          retryAfter,
          model: r.model,
          path: r.path,
          latencyMs: r.latencyMs,
        }),
      );
    }
  }
  for (const event of events) {
    if (r.webhookUrl !== undefined) event.webhookUrl = r.webhookUrl;
    r.publish(event);
  }
}
