import { toBinary } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { newDeliveryId, newEventId } from "../../common/ids.js";
import { EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { completion } from "./control-plane.js";

/**
 * Writes `count` events ingested at `ingestedAt` straight into a migrated SQLite store file
 * (open it with openSqliteStore once first), each with one delivery to `endpoint` in
 * `status` and one attempt for a finished delivery: a large history in seconds, for
 * retention tests. Run it while no control plane has the file open.
 */
export function fillOldEvents(
  path: string,
  options: { count: number; ingestedAt: number; endpoint: string; status?: "delivered" | "pending" | "dead_lettered" },
): void {
  const db = new Database(path);
  try {
    const status = options.status ?? "delivered";
    const body = Buffer.from(toBinary(EventSchema, completion("gpt-4", 10)));
    const insertEvent = db.prepare(
      `INSERT INTO events (id, type, org_id, app, request_id, order_key, token_index, time_ms, ingested_at, body)
       VALUES (?, ?, 'org_old', 'old', 'req_old', '', 0, ?, ?, ?)`,
    );
    const insertDelivery = db.prepare(
      `INSERT INTO deliveries (id, event_seq, event_id, event_type, endpoint, status, attempt_count, next_attempt_at,
         due_at, lease_owner, lease_until, created_at, finished_at, last_error, origin_delivery_id, order_key, order_index)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0, ?, ?, '', '', '', 0)`,
    );
    const insertAttempt = db.prepare(
      `INSERT INTO attempts (delivery_id, number, endpoint, started_at, status_code, latency_ms, error, response_body)
       VALUES (?, 1, ?, ?, 200, 3, '', 'ok')`,
    );
    const at = options.ingestedAt;
    db.transaction(() => {
      for (let i = 0; i < options.count; i++) {
        const id = newEventId();
        const seq = Number(insertEvent.run(id, EventType.COMPLETION, at, at, body).lastInsertRowid);
        const deliveryId = newDeliveryId();
        const finished = status === "pending" ? null : at + 5;
        insertDelivery.run(
          deliveryId,
          seq,
          id,
          EventType.COMPLETION,
          options.endpoint,
          status,
          status === "pending" ? 0 : 1,
          at,
          at,
          at,
          finished,
        );
        if (status !== "pending") insertAttempt.run(deliveryId, options.endpoint, at + 1);
      }
    })();
  } finally {
    db.close();
  }
}
