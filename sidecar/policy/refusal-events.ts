import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { newEventId } from "../../common/ids.js";
import type { EventOrigin } from "../proxy/events.js";
import type { LimitType } from "./gateway-limits.js";

export interface GatewayRateLimitFields {
  requestId: string;
  limitType: LimitType;
  /** Per minute, this sidecar's share. */
  limit: number;
  retryAfterSeconds: number;
  /** When the limit admits again. */
  resetAt: Date;
}

/** The `rate_limit` event of a request the gateway's own limit refused (source "gateway"). */
export function gatewayRateLimitEvent(origin: EventOrigin, f: GatewayRateLimitFields): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: origin.orgId,
    app: origin.app,
    provider: origin.provider,
    time: timestampNow(),
    payload: {
      case: "rateLimit",
      value: {
        requestId: f.requestId,
        source: "gateway",
        limitType: f.limitType,
        limit: BigInt(f.limit),
        remaining: 0n,
        resetAt: f.resetAt.toISOString(),
        retryAfter: f.retryAfterSeconds,
        statusCode: 429,
        warning: false,
      },
    },
  });
}
