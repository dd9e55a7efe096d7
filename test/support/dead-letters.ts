import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { newEventId, newRequestId } from "../../common/ids.js";
import type { Store } from "../../control-plane/store/store.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";

function completion(): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_replay",
    app: "replay",
    provider: "openai",
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 18 } },
  });
}

/**
 * `count` dead letters of `endpoint` (which must exist), made through the store's own
 * API as a delivery worker would: events stored, each delivery claimed and its one
 * attempt recorded as dead-lettered. For replay tests and benchmarks.
 */
export async function makeDeadLetters(store: Store, endpoint: string, count: number): Promise<void> {
  for (let done = 0; done < count; ) {
    const n = Math.min(2_000, count - done);
    await store.ingest(Array.from({ length: n }, completion), () => [endpoint]);
    const [claim] = await store.claim({
      now: Date.now() + 1_000,
      leaseOwner: "dead-letters",
      leaseMs: 600_000,
      lanes: [{ endpoint, limit: n }],
    });
    const claimed = claim?.deliveries ?? [];
    await Promise.all(
      claimed.map((d) =>
        store.completeAttempt(
          d,
          { startedAt: Date.now(), statusCode: 503, latencyMs: 3, error: "HTTP 503", responseBody: "" },
          { status: "dead_lettered" },
        ),
      ),
    );
    done += claimed.length;
    if (claimed.length === 0) throw new Error(`makeDeadLetters: nothing to claim for ${endpoint}`);
  }
}
