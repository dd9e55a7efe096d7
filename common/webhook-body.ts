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
  // Built by assignment, not object spread: V8 clones a spread on a slow path, which made
  // rendering ~15 µs a delivery on the control plane's main thread (vs under 1 µs).
  const body: Record<string, unknown> = {
    event: type,
    id: event.id,
    org_id: event.orgId,
    app: event.app,
    provider: event.provider,
  };
  const p = event.payload;
  switch (p.case) {
    case "completion": {
      const v = p.value;
      body.request_id = v.requestId;
      body.model = v.model;
      body.tokens_used = v.tokensUsed;
      body.prompt_tokens = v.promptTokens;
      body.completion_tokens = v.completionTokens;
      // Parts of prompt_tokens / completion_tokens, present only when the provider said
      // them; and usage_known only when false. A call without them renders as before.
      if (v.cacheReadTokens !== undefined) body.cache_read_tokens = v.cacheReadTokens;
      if (v.cacheWriteTokens !== undefined) body.cache_write_tokens = v.cacheWriteTokens;
      if (v.cacheWrite1hTokens !== undefined) body.cache_write_1h_tokens = v.cacheWrite1hTokens;
      if (v.reasoningTokens !== undefined) body.reasoning_tokens = v.reasoningTokens;
      if (v.usageUnknown) body.usage_known = false;
      body.cost_usd = v.costUsd;
      if (v.pricingUnknown) body.pricing_unknown = true;
      body.latency_ms = v.latencyMs;
      if (v.ttftMs !== undefined) body.ttft_ms = v.ttftMs;
      body.stream = v.stream;
      body.status_code = v.statusCode;
      if (v.finishReason) body.finish_reason = v.finishReason;
      if (v.responseJson) body.response = parseJson(v.responseJson);
      break;
    }
    case "error": {
      const v = p.value;
      body.request_id = v.requestId;
      body.error_type = v.errorType;
      body.error_message = v.errorMessage;
      body.status_code = v.statusCode;
      body.retry_after = v.retryAfter ?? null;
      body.severity = v.severity;
      if (v.model) body.model = v.model;
      break;
    }
    case "streaming": {
      const v = p.value;
      body.request_id = v.requestId;
      body.token_index = v.tokenIndex;
      body.content = v.content;
      body.finish_reason = v.finishReason ?? null;
      if (v.model) body.model = v.model;
      break;
    }
    case "budget": {
      const v = p.value;
      body.usage_percent = v.usagePercent;
      body.limit_type = v.limitType;
      body.current_spend = v.currentSpend;
      body.budget_limit = v.budgetLimit;
      body.threshold = v.threshold;
      body.period = v.period;
      break;
    }
    case "rateLimit": {
      const v = p.value;
      body.request_id = v.requestId;
      body.source = v.source;
      body.limit_type = v.limitType;
      body.limit = v.limit === undefined ? null : Number(v.limit);
      body.remaining = v.remaining === undefined ? null : Number(v.remaining);
      body.reset_at = v.resetAt || null;
      body.retry_after = v.retryAfter ?? null;
      body.status_code = v.statusCode;
      body.warning = v.warning;
      break;
    }
    // Operator events (made by the control plane; app and provider are "").
    case "endpointDisabled": {
      const v = p.value;
      body.endpoint = v.endpoint;
      body.reason = v.reason;
      body.detail = v.detail;
      body.status_code = v.statusCode;
      body.last_error = v.lastError;
      body.failing_since = v.failingSince ? timestampDate(v.failingSince).toISOString() : null;
      body.failed_attempts = v.failedAttempts;
      body.pending_deliveries = v.pendingDeliveries;
      break;
    }
    case "endpointRecovered": {
      const v = p.value;
      body.endpoint = v.endpoint;
      body.opened_at = v.openedTime ? timestampDate(v.openedTime).toISOString() : null;
      body.down_ms = Number(v.downMs);
      break;
    }
    case "deliveryExhausted": {
      const v = p.value;
      body.endpoint = v.endpoint;
      body.delivery_id = v.deliveryId;
      body.event_id = v.eventId;
      body.event_type = v.eventType;
      body.attempts = v.attempts;
      body.last_error = v.lastError;
      body.origin_delivery_id = v.originDeliveryId || null;
      break;
    }
    default:
      break;
  }
  body.timestamp = timestamp;
  return body as WebhookBody;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
