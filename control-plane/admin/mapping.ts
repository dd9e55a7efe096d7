import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type Attempt,
  AttemptSchema,
  type Delivery,
  DeliverySchema,
  DeliveryStatus,
  type Endpoint,
  EndpointSchema,
  type EndpointStats,
  EndpointStatsSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import type {
  AttemptRecord,
  DeliveryRecord,
  DeliveryStatus as StoreDeliveryStatus,
  EndpointRecord,
  EndpointStatsRecord,
} from "../store/store.js";

import type { Principal } from "../auth/principal.js";
import { filtersMessage } from "../routing/filters.js";
import { shownName } from "./endpoint-names.js";

// uint64 fields are bigint: protobuf-es 2 ignores `jstype = JS_NUMBER` in admin.proto.

/**
 * Store records → Admin API messages, for the caller (endpoint names as it sees them:
 * endpoint-names.ts). Secrets never cross: Endpoint.secret stays empty.
 */

export function endpointMessage(record: EndpointRecord, to: Principal): Endpoint {
  return create(EndpointSchema, {
    name: shownName(record.name, to),
    url: record.url,
    enabled: record.enabled,
    eventTypes: [...record.eventTypes],
    failoverTo: shownName(record.failoverTo, to),
    createTime: timestampFromMs(record.createdAt),
    updateTime: timestampFromMs(record.updatedAt),
    disabledReason: record.disabledReason,
    signingKeyCount: record.signingKeyCount,
    filters: filtersMessage(record.filters),
    orgId: record.orgId,
    apps: [...record.apps],
    oneOff: record.oneOff,
    paused: record.paused,
    ...(record.pausedAt !== null ? { pauseTime: timestampFromMs(record.pausedAt) } : {}),
  });
}

const STATUS_TO_PROTO: Record<StoreDeliveryStatus, DeliveryStatus> = {
  pending: DeliveryStatus.PENDING,
  delivered: DeliveryStatus.DELIVERED,
  failed: DeliveryStatus.FAILED,
  dead_lettered: DeliveryStatus.DEAD_LETTERED,
};

export function deliveryStatusMessage(status: StoreDeliveryStatus): DeliveryStatus {
  return STATUS_TO_PROTO[status];
}

/** undefined for UNSPECIFIED and for numbers outside the enum (a newer client's value). */
export function deliveryStatusRecord(status: DeliveryStatus): StoreDeliveryStatus | undefined {
  for (const [name, value] of Object.entries(STATUS_TO_PROTO)) {
    if (value === status) return name as StoreDeliveryStatus;
  }
  return undefined;
}

export function attemptMessage(record: AttemptRecord): Attempt {
  return create(AttemptSchema, {
    number: record.number,
    startTime: timestampFromMs(record.startedAt),
    statusCode: record.statusCode,
    latencyMs: record.latencyMs,
    error: record.error,
    responseBody: record.responseBody,
  });
}

export function deliveryMessage(
  record: DeliveryRecord,
  to: Principal,
  attempts: readonly AttemptRecord[] = [],
): Delivery {
  return create(DeliverySchema, {
    id: record.id,
    eventId: record.eventId,
    eventType: record.eventType,
    endpoint: shownName(record.endpoint, to),
    status: deliveryStatusMessage(record.status),
    attemptCount: record.attemptCount,
    createTime: timestampFromMs(record.createdAt),
    // A finished delivery has no next attempt, whatever the row still holds.
    ...(record.status === "pending" ? { nextAttemptTime: timestampFromMs(record.nextAttemptAt) } : {}),
    ...(record.finishedAt !== null ? { finishTime: timestampFromMs(record.finishedAt) } : {}),
    lastError: record.lastError,
    originDeliveryId: record.originDeliveryId,
    attempts: attempts.map(attemptMessage),
    ...(record.eventLatencyMs !== undefined ? { eventLatencyMs: record.eventLatencyMs } : {}),
  });
}

export function endpointStatsMessage(record: EndpointStatsRecord, circuitOpen: boolean, to: Principal): EndpointStats {
  const finished = record.delivered + record.failed + record.deadLettered;
  return create(EndpointStatsSchema, {
    endpoint: shownName(record.endpoint, to),
    delivered: BigInt(record.delivered),
    failed: BigInt(record.failed),
    deadLettered: BigInt(record.deadLettered),
    pending: BigInt(record.pending),
    successRate: finished === 0 ? 1 : record.delivered / finished,
    latencyP50Ms: Math.round(record.latencyP50Ms),
    latencyP99Ms: Math.round(record.latencyP99Ms),
    circuitOpen,
    failureReasons: record.failureReasons.map((r) => ({ reason: r.reason, count: BigInt(r.count) })),
  });
}
