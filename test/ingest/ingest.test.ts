import { create } from "@bufbuild/protobuf";
import { TimestampSchema, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  EventBatchSchema,
  HelloSchema,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import type { RunningControlPlane } from "../../control-plane/run.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { AsyncQueue } from "../../control-plane/ingest/async-queue.js";

const completion = (id = newEventId()): Event =>
  create(EventSchema, {
    id,
    provider: "openai",
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 10 } },
  });

/** A hand-driven sidecar stream: push requests, read responses in order. */
function openStream(cp: RunningControlPlane, token?: string) {
  const client = createClient(IngestService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
  const requests = new AsyncQueue<ConnectRequest>();
  const abort = new AbortController();
  const responses = client
    .connect(requests, {
      signal: abort.signal,
      ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
    })
    [Symbol.asyncIterator]();
  return {
    send: (m: ConnectRequest["message"]) => requests.push(create(ConnectRequestSchema, { message: m })),
    next: async (): Promise<ConnectResponse> => {
      const r = await responses.next();
      if (r.done) throw new Error("stream ended");
      return r.value;
    },
    /** The next ack, skipping config snapshots. */
    nextAck: async function (this: { next: () => Promise<ConnectResponse> }) {
      for (;;) {
        const r = await this.next();
        if (r.message.case === "ack") return r.message.value;
      }
    },
    close: () => {
      requests.end();
      abort.abort();
    },
  };
}

const hello = (sidecarId = "sc_test"): ConnectRequest["message"] => ({
  case: "hello",
  value: create(HelloSchema, { sidecarId, orgId: "org_i", app: "ingest", version: "test" }),
});
const batch = (seq: bigint, events: Event[]): ConnectRequest["message"] => ({
  case: "batch",
  value: create(EventBatchSchema, { seq, events }),
});

// IngestService.Connect against a real control plane over gRPC: snapshot on hello, acks
// after commit, duplicates skipped, invalid events dropped without poisoning the batch,
// protocol misuse answered with INVALID_ARGUMENT naming the field, tokens enforced.
describe("IngestService.Connect", () => {
  let fixture: ControlPlaneFixture;
  let cp: RunningControlPlane;

  beforeAll(async () => {
    fixture = await startControlPlane(
      `
webhooks:
  errors:
    url: "https://hooks.example.com/errors"
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    events: ["error"]
auth:
  sidecar_tokens: ["sidecar-token-1"]
`,
    );
    cp = fixture.cp;
  });
  afterAll(() => fixture?.close());

  it("sends a config snapshot on hello, acks stored batches, and skips re-sent events", async () => {
    const s = openStream(cp, "sidecar-token-1");
    try {
      s.send(hello());
      const first = await s.next();
      expect(first.message.case).toBe("config");
      if (first.message.case === "config") {
        // Only an error endpoint exists: sidecars need not produce anything else.
        expect(first.message.value.wantedEventTypes).toEqual([EventType.ERROR]);
        expect(first.message.value.version).toBeGreaterThan(0n);
      }
      const a = completion();
      const b = completion();
      s.send(batch(1n, [a, b]));
      const ack1 = await s.nextAck();
      expect(ack1).toMatchObject({ seq: 1n, stored: 2, duplicates: 0 });
      // The ack means stored: the events are readable from the store now.
      const stored = await cp.store.readFeed(undefined, 100);
      expect(stored.map((e) => e.event.id)).toEqual(expect.arrayContaining([a.id, b.id]));
      expect(stored.find((e) => e.event.id === a.id)?.event.orgId).toBe("org_i");

      s.send(batch(2n, [a, completion()]));
      expect(await s.nextAck()).toMatchObject({ seq: 2n, stored: 1, duplicates: 1 });
    } finally {
      s.close();
    }
  });

  it("drops invalid events with a count instead of failing the batch", async () => {
    const s = openStream(cp, "sidecar-token-1");
    try {
      s.send(hello("sc_bad"));
      const good = completion();
      const noPayload = create(EventSchema, { id: newEventId(), time: timestampNow() });
      const badId = completion("not-an-id");
      s.send(batch(1n, [noPayload, good, badId]));
      expect(await s.nextAck()).toMatchObject({ seq: 1n, stored: 1 });
      const metrics = await fetch(`${cp.httpUrl}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/aigw_events_rejected_total 2/);
    } finally {
      s.close();
    }
  });

  it("drops events with a time, token index or name no store column holds, instead of refusing their batch forever", async () => {
    const rejected = async () =>
      Number(
        /^aigw_events_rejected_total (\d+)/m.exec(await fetch(`${cp.httpUrl}/metrics`).then((r) => r.text()))?.[1],
      );
    const before = await rejected();
    const s = openStream(cp, "sidecar-token-1");
    try {
      s.send(hello("sc_range"));
      const good = completion();
      const farFuture = completion();
      farFuture.time = create(TimestampSchema, { seconds: 100_000_000_000_000_000n });
      const badNanos = completion();
      badNanos.time = create(TimestampSchema, { seconds: 1n, nanos: -1 });
      const hugeIndex = create(EventSchema, {
        id: newEventId(),
        provider: "openai",
        time: timestampNow(),
        payload: { case: "streaming", value: { requestId: newRequestId(), tokenIndex: 4_294_967_295, content: "x" } },
      });
      const lastIndex = create(EventSchema, {
        id: newEventId(),
        provider: "openai",
        time: timestampNow(),
        payload: { case: "streaming", value: { requestId: newRequestId(), tokenIndex: 2_147_483_647, content: "x" } },
      });
      const nulApp = completion();
      nulApp.app = "ch\u0000at";
      const nulModel = completion();
      if (nulModel.payload.case === "completion") nulModel.payload.value.model = "gpt\u0000-4";
      const nulRequest = completion();
      if (nulRequest.payload.case === "completion") nulRequest.payload.value.requestId = "req_\u0000";
      const invalid = [farFuture, badNanos, hugeIndex, nulApp, nulModel, nulRequest];
      s.send(batch(1n, [farFuture, good, badNanos, hugeIndex, lastIndex, nulApp, nulModel, nulRequest]));
      // Acked: the batch is never sent again; the valid events are stored, the others counted.
      expect(await s.nextAck()).toMatchObject({ seq: 1n, stored: 2 });
      expect((await rejected()) - before).toBe(invalid.length);
      const stored = (await cp.store.readFeed(undefined, 1000)).map((e) => e.event.id);
      expect(stored).toEqual(expect.arrayContaining([good.id, lastIndex.id]));
      for (const e of invalid) expect(stored).not.toContain(e.id);
    } finally {
      s.close();
    }
  });

  it("answers INVALID_ARGUMENT naming what is wrong: a batch before hello", async () => {
    const s = openStream(cp, "sidecar-token-1");
    s.send(batch(1n, [completion()]));
    const err = await s.next().catch((e: unknown) => e);
    s.close();
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/hello must come before/);
  });

  it("answers INVALID_ARGUMENT naming the field: a hello whose app or org holds control characters", async () => {
    for (const [field, value] of [
      ["app", "ch\u0000at"],
      ["orgId", "org\nx"],
    ] as const) {
      const s = openStream(cp, "sidecar-token-1");
      const h = hello(`sc_ctl_${field}`);
      if (h.case === "hello") h.value[field] = value;
      s.send(h);
      const err = await s.next().catch((e: unknown) => e);
      s.close();
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
      expect((err as ConnectError).rawMessage).toMatch(field === "app" ? /^hello\.app: / : /^hello\.org_id: /);
    }
  });

  it("refuses a stream without the sidecar token", async () => {
    const s = openStream(cp, "wrong-token");
    s.send(hello());
    const err = await s.next().catch((e: unknown) => e);
    s.close();
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
  });
});
