import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import type { ModelPrice } from "../config/types.js";

import { TEST_EVENT_APP, TEST_EVENT_ORG } from "../../common/event-types.js";

const MODEL = "gpt-4";

/**
 * A synthetic event of `type` with the product page's example values, so a receiver
 * sees exactly the shape real traffic will have. Cost uses the configured price of
 * the model when there is one.
 */
export function syntheticEvent(type: EventType, now: number, pricing: Record<string, ModelPrice>): Event {
  const head = {
    id: newEventId(),
    orgId: TEST_EVENT_ORG,
    app: TEST_EVENT_APP,
    provider: "openai",
    time: timestampFromMs(now),
  };
  const requestId = newRequestId();
  switch (type) {
    case EventType.ERROR:
      return create(EventSchema, {
        ...head,
        payload: {
          case: "error",
          value: {
            requestId,
            errorType: "rate_limit",
            errorMessage: "Rate limit exceeded",
            statusCode: 429,
            retryAfter: 60,
            severity: "warning",
            model: MODEL,
            path: "/v1/chat/completions",
            latencyMs: 180,
          },
        },
      });
    case EventType.STREAMING:
      return create(EventSchema, {
        ...head,
        payload: { case: "streaming", value: { requestId, tokenIndex: 42, content: "Hello", model: MODEL } },
      });
    case EventType.BUDGET:
      return create(EventSchema, {
        ...head,
        payload: {
          case: "budget",
          value: {
            usagePercent: 85,
            limitType: "monthly",
            currentSpend: 8500,
            budgetLimit: 10000,
            threshold: 80,
            period: new Date(now).toISOString().slice(0, 7),
          },
        },
      });
    case EventType.RATE_LIMIT:
      return create(EventSchema, {
        ...head,
        payload: {
          case: "rateLimit",
          value: {
            requestId,
            source: "upstream",
            limitType: "requests",
            limit: 500n,
            remaining: 0n,
            resetAt: new Date(now + 60_000).toISOString(),
            retryAfter: 60,
            statusCode: 429,
          },
        },
      });
    case EventType.ENDPOINT_DISABLED:
      return create(EventSchema, {
        ...head,
        provider: "",
        payload: {
          case: "endpointDisabled",
          value: {
            endpoint: "primary",
            reason: "gone",
            detail: "receiver answered 410 Gone",
            statusCode: 410,
            lastError: "HTTP 410",
            pendingDeliveries: 3,
          },
        },
      });
    case EventType.ENDPOINT_RECOVERED:
      return create(EventSchema, {
        ...head,
        provider: "",
        payload: {
          case: "endpointRecovered",
          value: { endpoint: "primary", openedTime: timestampFromMs(now - 90_000), downMs: 90_000n },
        },
      });
    case EventType.DELIVERY_EXHAUSTED:
      return create(EventSchema, {
        ...head,
        provider: "",
        payload: {
          case: "deliveryExhausted",
          value: {
            deliveryId: "dlv_01JD5ZQ4Y7W3X9K2M8N6P4R2T0",
            endpoint: "primary",
            eventId: "evt_01JD5ZQ4Y7W3X9K2M8N6P4R2T0",
            eventType: "completion",
            attempts: 5,
            lastError: "HTTP 503",
            originDeliveryId: "",
          },
        },
      });
    default: {
      const promptTokens = 450;
      const completionTokens = 800;
      const price = pricing[MODEL];
      const costUsd = price
        ? (promptTokens * price.inputPerMillion + completionTokens * price.outputPerMillion) / 1_000_000
        : 0;
      return create(EventSchema, {
        ...head,
        payload: {
          case: "completion",
          value: {
            requestId,
            model: MODEL,
            tokensUsed: promptTokens + completionTokens,
            promptTokens,
            completionTokens,
            costUsd,
            pricingUnknown: price === undefined,
            latencyMs: 2340,
            stream: false,
            statusCode: 200,
            path: "/v1/chat/completions",
          },
        },
      });
    }
  }
}
