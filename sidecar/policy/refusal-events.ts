import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { type EventOrigin, rateLimitEvent } from "../proxy/events.js";
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
  return rateLimitEvent(origin, {
    requestId: f.requestId,
    source: "gateway",
    limitType: f.limitType,
    limit: f.limit,
    remaining: 0,
    resetAt: f.resetAt.getTime(),
    retryAfter: f.retryAfterSeconds,
    statusCode: 429,
    warning: false,
  });
}
