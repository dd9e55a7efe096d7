import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeOfCase } from "../../common/event-types.js";
import type { EventType } from "../../gen/aigw/v1/events_pb.js";

/**
 * The parts of an Event a store keeps in columns beside the protobuf body, so it can
 * filter, order and purge without decoding. Shared by every store implementation.
 */
export interface EventColumns {
  type: EventType;
  orgId: string;
  app: string;
  requestId: string;
  /** request_id for streaming events: their deliveries go out in token_index order. */
  orderKey: string;
  orderIndex: number;
  timeMs: number;
}

export function eventColumns(event: Event): EventColumns {
  const payload = event.payload;
  const requestId = payload.case !== undefined && payload.case !== "budget" ? payload.value.requestId : "";
  const streaming = payload.case === "streaming";
  return {
    type: eventTypeOfCase(payload.case),
    orgId: event.orgId,
    app: event.app,
    requestId,
    orderKey: streaming ? requestId : "",
    orderIndex: streaming ? payload.value.tokenIndex : 0,
    timeMs: event.time ? timestampMs(event.time) : 0,
  };
}
