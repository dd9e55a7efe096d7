import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  EventBatchSchema,
  HelloSchema,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import { AsyncQueue } from "../../control-plane/ingest/async-queue.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

const completion = (): Event =>
  create(EventSchema, {
    id: newEventId(),
    provider: "openai",
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 10 } },
  });

/** A hand-driven sidecar stream whose responses are collected as they come. */
function openStream(grpcUrl: string, sidecarId: string) {
  const client = createClient(IngestService, createGrpcTransport({ baseUrl: grpcUrl }));
  const requests = new AsyncQueue<ConnectRequest>();
  const abort = new AbortController();
  const responses: ConnectResponse[] = [];
  let ended: unknown;
  const pump = (async () => {
    for await (const r of client.connect(requests, { signal: abort.signal })) responses.push(r);
  })().catch((err: unknown) => {
    ended = err;
  });
  requests.push(
    create(ConnectRequestSchema, {
      message: { case: "hello", value: create(HelloSchema, { sidecarId, orgId: "org_bp", app: "bp", version: "t" }) },
    }),
  );
  return {
    responses,
    ended: () => ended,
    send(seq: bigint, events: Event[]) {
      requests.push(
        create(ConnectRequestSchema, { message: { case: "batch", value: create(EventBatchSchema, { seq, events }) } }),
      );
    },
    acks: () => responses.flatMap((r) => (r.message.case === "ack" ? [r.message.value] : [])),
    paused: () => responses.flatMap((r) => (r.message.case === "paused" ? [r.message.value] : [])),
    async close() {
      requests.end();
      abort.abort();
      await pump;
    },
  };
}

const metric = async (httpUrl: string, name: string): Promise<number> => {
  const text = await fetch(`${httpUrl}/metrics`).then((r) => r.text());
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
};

// delivery.queue_size against a real control plane and a real receiver: at the bound the
// next batch is held before anything of it is stored (no ack; an IngestPaused says why),
// the pause shows in /metrics, and once the queue drains below 90 % the batch is stored
// and acked. A stream that gives up while held loses nothing: its batch is sent again.
describe("delivery.queue_size backpressure on ingest", () => {
  let fixture: ControlPlaneFixture;
  let receiver: TestReceiver;
  let dead = true;

  beforeAll(async () => {
    receiver = await startTestReceiver({ secret: TEST_SECRET, script: () => (dead ? 503 : 200) });
    fixture = await startControlPlane(`
webhooks:
  primary:
    url: "${receiver.url}"
    secret: "${TEST_SECRET}"
retry:
  max_attempts: 100
  initial_delay_ms: 20
  max_delay_ms: 100
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
delivery:
  queue_size: 10
  circuit_breaker_cooldown_ms: 100
`);
  });
  afterAll(async () => {
    await fixture?.close();
    await receiver?.close();
  });

  it("holds the ack at the bound, says why, stores nothing of the held batch, and acks once drained", async () => {
    const { cp } = fixture;
    const s = openStream(cp.grpcUrl, "sc_bp");
    const dropped = openStream(cp.grpcUrl, "sc_bp_2");
    try {
      s.send(1n, Array.from({ length: 10 }, completion));
      await waitFor("the first batch's ack", () => s.acks().length === 1);
      expect(await cp.store.countPending()).toBe(10);

      const held = Array.from({ length: 3 }, completion);
      s.send(2n, held);
      const paused = await waitFor("an IngestPaused on the stream", () => s.paused()[0]);
      expect(paused).toMatchObject({ pendingDeliveries: 10n, queueSize: 10n, resumeBelow: 9n });
      expect(await metric(cp.httpUrl, "aigw_ingest_paused")).toBe(1);
      expect(await metric(cp.httpUrl, "aigw_ingest_batches_waiting")).toBe(1);

      // A second sidecar's batch waits too; its stream ends while it waits.
      const lost = completion();
      dropped.send(1n, [lost]);
      await waitFor("the second stream told it is paused", () => dropped.paused().length > 0);
      await dropped.close();

      // Held means not stored: only the first batch's events are in the store, for a while.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(s.acks()).toHaveLength(1);
      expect(await cp.store.countEvents()).toBe(10);
      expect(await cp.store.countPending()).toBe(10);

      dead = false;
      await waitFor("the held batch acked after the queue drained", () => s.acks().length === 2, 30_000);
      expect(s.acks()[1]).toMatchObject({ seq: 2n, stored: 3, duplicates: 0 });
      expect(await metric(cp.httpUrl, "aigw_ingest_paused")).toBe(0);
      expect(await metric(cp.httpUrl, "aigw_ingest_pauses_total")).toBe(1);
      // The stream that ended while held stored nothing; its sidecar sends the batch again.
      const stored = (await cp.store.readFeed(undefined, 100)).map((e) => e.event.id);
      expect(stored).not.toContain(lost.id);
      const again = openStream(cp.grpcUrl, "sc_bp_2");
      again.send(1n, [lost]);
      await waitFor("the re-sent batch acked", () => again.acks().length === 1);
      await again.close();

      await waitFor("every event delivered", () => new Set(receiver.accepted().map((r) => r.id)).size === 14);
      expect(receiver.rejected).toEqual([]);
    } finally {
      await s.close();
      await dropped.close();
    }
  });
});
