import type { Event } from "../../gen/aigw/v1/events_pb.js";

/**
 * Where the proxy hands the events it observed (the uplink, in production; an array in
 * tests). Called off the response path.
 */
export interface EventSink {
  /** Must never throw or block: the proxy catches a throw anyway, but a block stalls every request. */
  publish(event: Event): void;
}
