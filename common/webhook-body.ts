import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Event } from "../gen/aigw/v1/events_pb.js";
import { eventTypeName, eventTypeOfCase } from "./event-types.js";

export type WebhookBody = Record<string, unknown> & { event: string; id: string; timestamp: string };

/**
 * The JSON body of a webhook for an event: the product page's payload for its type plus
 * id, org_id, app and provider (DESIGN.md "Webhook request"). Field order is stable so
 * the signed bytes of a replay are the bytes of the first attempt.
 */
export function webhookBody(event: Event): WebhookBody {
  const timestamp = (event.time ? timestampDate(event.time) : new Date(0)).toISOString();
  const type = eventTypeName(eventTypeOfCase(event.payload.case)) ?? "unknown";
  const head = { event: type, id: event.id, org_id: event.orgId, app: event.app, provider: event.provider };
  const p = event.payload;
  switch (p.case) {
    case "completion": {
      const v = p.value;
      return {
        ...head,
        request_id: v.requestId,
        model: v.model,
        tokens_used: v.tokensUsed,
        prompt_tokens: v.promptTokens,
        completion_tokens: v.completionTokens,
        cost_usd: v.costUsd,
        ...(v.pricingUnknown ? { pricing_unknown: true } : {}),
        latency_ms: v.latencyMs,
        ...(v.ttftMs !== undefined ? { ttft_ms: v.ttftMs } : {}),
        stream: v.stream,
        status_code: v.statusCode,
        ...(v.finishReason ? { finish_reason: v.finishReason } : {}),
        ...(v.responseJson ? { response: parseJson(v.responseJson) } : {}),
        timestamp,
      };
    }
    case "error": {
      const v = p.value;
      return {
        ...head,
        request_id: v.requestId,
        error_type: v.errorType,
        error_message: v.errorMessage,
        status_code: v.statusCode,
        retry_after: v.retryAfter ?? null,
        severity: v.severity,
        ...(v.model ? { model: v.model } : {}),
        timestamp,
      };
    }
    case "streaming": {
      const v = p.value;
      return {
        ...head,
        request_id: v.requestId,
        token_index: v.tokenIndex,
        content: v.content,
        finish_reason: v.finishReason ?? null,
        ...(v.model ? { model: v.model } : {}),
        timestamp,
      };
    }
    case "budget": {
      const v = p.value;
      return {
        ...head,
        usage_percent: v.usagePercent,
        limit_type: v.limitType,
        current_spend: v.currentSpend,
        budget_limit: v.budgetLimit,
        threshold: v.threshold,
        period: v.period,
        timestamp,
      };
    }
    case "rateLimit": {
      const v = p.value;
      return {
        ...head,
        request_id: v.requestId,
        source: v.source,
        limit_type: v.limitType,
        limit: v.limit === undefined ? null : Number(v.limit),
        remaining: v.remaining === undefined ? null : Number(v.remaining),
        reset_at: v.resetAt || null,
        retry_after: v.retryAfter ?? null,
        status_code: v.statusCode,
        warning: v.warning,
        timestamp,
      };
    }
    default:
      return { ...head, timestamp };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
