import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  ConnectResponseSchema,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { grpcTarget } from "../../common/grpc.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import { AsyncQueue } from "../../control-plane/ingest/async-queue.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { waitFor } from "../support/wait.js";

// Bad input on the ingest stream from real gRPC clients (@grpc/grpc-js, @connectrpc/connect-node)
// and raw HTTP/2 frames: each refusal is a clear status naming what is wrong, nothing of it is
// stored, and the control plane goes on serving. Out-of-order and repeated sequence numbers,
// unknown event types and unknown messages are not errors: the good events are stored once.

const completion = (): Event =>
  create(EventSchema, {
    id: newEventId(),
    provider: "openai",
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 10 } },
  });

const hello = (sidecarId: string): ConnectRequest =>
  create(ConnectRequestSchema, {
    message: { case: "hello", value: { sidecarId, orgId: "org_bad", app: "bad", version: "t" } },
  });
const batch = (seq: bigint, events: Event[]): ConnectRequest =>
  create(ConnectRequestSchema, { message: { case: "batch", value: { seq, events } } });

/** An Event carrying a payload field this build does not know (as a newer sidecar would send). */
function eventOfUnknownType(): Event {
  const known = toBinary(
    EventSchema,
    create(EventSchema, { id: newEventId(), provider: "openai", time: timestampNow() }),
  );
  // Field 99 (tag varint 0x9a 0x06), length-delimited: a 3-byte message { 1: "x" }.
  const unknownField = [0x9a, 0x06, 0x03, 0x0a, 0x01, 0x78];
  return fromBinary(EventSchema, Uint8Array.from([...known, ...unknownField]));
}

/** A ConnectRequest with only a message field this build does not know. */
function requestOfUnknownKind(): ConnectRequest {
  return fromBinary(ConnectRequestSchema, Uint8Array.from([(9 << 3) | 2, 0x00]));
}

type Outcome = { acks: bigint[]; error?: ConnectError | grpc.ServiceError };

/** A stream over @connectrpc/connect-node: sends `requests`, collects acks until the server ends it (or `acks` arrive). */
async function viaConnect(grpcUrl: string, requests: ConnectRequest[], expectAcks?: number): Promise<Outcome> {
  const client = createClient(IngestService, createGrpcTransport({ baseUrl: grpcUrl }));
  const queue = new AsyncQueue<ConnectRequest>();
  for (const r of requests) queue.push(r);
  const abort = new AbortController();
  const acks: bigint[] = [];
  try {
    for await (const res of client.connect(queue, { signal: abort.signal })) {
      if (res.message.case === "ack") acks.push(res.message.value.seq);
      if (expectAcks !== undefined && acks.length >= expectAcks) break;
    }
    return { acks };
  } catch (err) {
    return { acks, error: ConnectError.from(err) };
  } finally {
    queue.end();
    abort.abort();
  }
}

/** The same over @grpc/grpc-js; `raw` sends each item's bytes as the frame's message, whatever they are. */
function viaGrpcJs(grpcUrl: string, requests: (ConnectRequest | Buffer)[], expectAcks?: number): Promise<Outcome> {
  const Client = grpc.makeGenericClientConstructor(
    {
      connect: {
        path: "/aigw.v1.IngestService/Connect",
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: ConnectRequest | Buffer) =>
          Buffer.isBuffer(m) ? m : Buffer.from(toBinary(ConnectRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(ConnectRequestSchema, b),
        responseSerialize: (m: ConnectResponse) => Buffer.from(toBinary(ConnectResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(ConnectResponseSchema, b),
      },
    },
    "IngestService",
  );
  const client = new Client(grpcTarget(grpcUrl), grpc.credentials.createInsecure());
  const call = (
    client as unknown as { connect(): grpc.ClientDuplexStream<ConnectRequest | Buffer, ConnectResponse> }
  ).connect();
  const acks: bigint[] = [];
  return new Promise<Outcome>((resolve) => {
    const finish = (outcome: Outcome) => {
      call.removeAllListeners();
      call.on("error", () => {});
      call.cancel();
      client.close();
      resolve(outcome);
    };
    call.on("data", (res: ConnectResponse) => {
      if (res.message.case === "ack") acks.push(res.message.value.seq);
      if (expectAcks !== undefined && acks.length >= expectAcks) finish({ acks });
    });
    call.on("error", (error: grpc.ServiceError) => finish({ acks, error }));
    call.on("end", () => finish({ acks }));
    for (const r of requests) call.write(r);
  });
}

/** One gRPC request with a hand-made body: frames that no client library would write. */
function rawFrames(grpcUrl: string, body: Buffer): Promise<{ status: number; message: string }> {
  const session = http2.connect(grpcUrl);
  return new Promise((resolve, reject) => {
    const req = session.request({
      ":method": "POST",
      ":path": "/aigw.v1.IngestService/Connect",
      "content-type": "application/grpc",
      te: "trailers",
    });
    let trailers: http2.IncomingHttpHeaders = {};
    req.on("trailers", (t) => {
      trailers = t;
    });
    req.on("response", (h) => {
      if (h["grpc-status"] !== undefined) trailers = h;
    });
    req.resume();
    req.on("end", () => {
      session.close();
      resolve({
        status: Number(trailers["grpc-status"]),
        message: decodeURIComponent(String(trailers["grpc-message"] ?? "")),
      });
    });
    req.on("error", (err) => {
      session.close();
      reject(err);
    });
    req.end(body);
  });
}

function frame(payload: Uint8Array, flags = 0, declaredLength = payload.length): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(flags, 0);
  header.writeUInt32BE(declaredLength, 1);
  return Buffer.concat([header, payload]);
}

describe("ingest: bad input from real gRPC clients and raw frames", () => {
  let fixture: ControlPlaneFixture;
  let url: string;

  beforeAll(async () => {
    fixture = await startControlPlane(`
webhooks:
  sink:
    url: "https://hooks.example.com/sink"
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    enabled: false
`);
    url = fixture.cp.grpcUrl;
  });
  afterAll(() => fixture?.close());

  const refusals: {
    name: string;
    send: () => Promise<{ code: number; message: string }>;
    code: Code;
    message: RegExp;
  }[] = [
    {
      name: "a frame that is not a protobuf message (grpc-js)",
      send: async () => {
        const { error } = await viaGrpcJs(url, [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])]);
        return { code: error?.code ?? -1, message: (error as grpc.ServiceError).details };
      },
      code: Code.InvalidArgument,
      message: /ConnectRequest: a frame is not a valid message \(parse binary: illegal tag/,
    },
    {
      name: "a frame flagged compressed on a stream without grpc-encoding (raw HTTP/2)",
      send: async () => {
        const r = await rawFrames(url, frame(toBinary(ConnectRequestSchema, hello("sc_raw")), 1));
        return { code: r.status, message: r.message };
      },
      code: Code.InvalidArgument,
      message: /compressed envelope.*no grpc-encoding/,
    },
    {
      name: "a frame header claiming 1 GiB (raw HTTP/2): refused before anything is set aside for it",
      send: async () => {
        const r = await rawFrames(url, frame(Buffer.from("0123456789"), 0, 1 << 30));
        return { code: r.status, message: r.message };
      },
      code: Code.ResourceExhausted,
      message: /1073741824.*larger than configured readMaxBytes 67174400/,
    },
    {
      name: "a frame cut short (raw HTTP/2)",
      send: async () => {
        const r = await rawFrames(url, Buffer.from([0, 0, 0]));
        return { code: r.status, message: r.message };
      },
      code: Code.InvalidArgument,
      message: /incomplete envelope/,
    },
    {
      name: "a batch before hello (connect)",
      send: async () => fromConnect(await viaConnect(url, [batch(1n, [completion()])])),
      code: Code.InvalidArgument,
      message: /^message: hello must come before the first batch$/,
    },
    {
      name: "hello twice (connect)",
      send: async () => fromConnect(await viaConnect(url, [hello("sc_twice"), hello("sc_twice")])),
      code: Code.InvalidArgument,
      message: /^message.hello: sent twice on one stream$/,
    },
    {
      name: "hello without a sidecar id (grpc-js)",
      send: async () => fromGrpc(await viaGrpcJs(url, [hello("")])),
      code: Code.InvalidArgument,
      message: /^hello.sidecar_id: required$/,
    },
    {
      name: "sequence number 0 (connect)",
      send: async () => fromConnect(await viaConnect(url, [hello("sc_zero"), batch(0n, [completion()])])),
      code: Code.InvalidArgument,
      message: /^batch.seq: must be positive, got 0$/,
    },
    {
      name: "a batch of 10,001 events (grpc-js)",
      send: async () =>
        fromGrpc(await viaGrpcJs(url, [hello("sc_big"), batch(1n, Array.from({ length: 10_001 }, completion))])),
      code: Code.InvalidArgument,
      message: /^batch.events: 10001 events in one batch; at most 10000$/,
    },
    {
      name: "an empty ConnectRequest (connect)",
      send: async () => fromConnect(await viaConnect(url, [hello("sc_empty"), create(ConnectRequestSchema)])),
      code: Code.InvalidArgument,
      message: /^message: empty ConnectRequest \(expected hello or batch\)$/,
    },
  ];

  for (const c of refusals) {
    it(`refuses ${c.name}: ${Code[c.code]} saying what, nothing stored`, async () => {
      const before = await fixture.cp.store.countEvents();
      const got = await c.send();
      expect(Code[got.code]).toBe(Code[c.code]);
      expect(got.message).toMatch(c.message);
      expect(await fixture.cp.store.countEvents()).toBe(before);
      expect((await fetch(`${fixture.cp.httpUrl}/healthz`)).status).toBe(200);
    });
  }

  it("out-of-order and repeated sequence numbers (grpc-js): every batch acked, each event stored once", async () => {
    const [a, b, c] = [completion(), completion(), completion()];
    const before = await fixture.cp.store.countEvents();
    const { acks, error } = await viaGrpcJs(
      url,
      [hello("sc_order"), batch(3n, [a]), batch(1n, [b]), batch(3n, [a]), batch(2n, [c, b])],
      4,
    );
    expect(error).toBeUndefined();
    // The ack is the highest seq seen on the stream: every batch up to it is stored.
    expect(acks).toEqual([3n, 3n, 3n, 3n]);
    expect(await fixture.cp.store.countEvents()).toBe(before + 3);
  });

  it("an unknown event type (connect): the others stored, the unknown one counted and named", async () => {
    const metric = async () =>
      Number(
        /^aigw_events_rejected_total (\d+)$/m.exec(await (await fetch(`${fixture.cp.httpUrl}/metrics`)).text())?.[1],
      );
    const rejectedBefore = await metric();
    const before = await fixture.cp.store.countEvents();
    const unknown = eventOfUnknownType();
    expect(unknown.payload.case).toBeUndefined();
    expect(unknown.$unknown?.map((f) => f.no)).toEqual([99]);
    const { acks, error } = await viaConnect(
      url,
      [hello("sc_unknown"), batch(1n, [completion(), unknown, completion()])],
      1,
    );
    expect(error).toBeUndefined();
    expect(acks).toEqual([1n]);
    expect(await fixture.cp.store.countEvents()).toBe(before + 2);
    expect(await metric()).toBe(rejectedBefore + 1);
  });

  it("a message of an unknown kind (grpc-js) is skipped; the stream and its batches go on", async () => {
    const before = await fixture.cp.store.countEvents();
    const { acks, error } = await viaGrpcJs(
      url,
      [hello("sc_newer"), requestOfUnknownKind(), batch(1n, [completion()])],
      1,
    );
    expect(error).toBeUndefined();
    expect(acks).toEqual([1n]);
    await waitFor("the batch stored", async () => (await fixture.cp.store.countEvents()) === before + 1);
  });
});

function fromConnect(o: Outcome): { code: number; message: string } {
  const e = o.error as ConnectError | undefined;
  return { code: e?.code ?? -1, message: e?.rawMessage ?? "" };
}

function fromGrpc(o: Outcome): { code: number; message: string } {
  const e = o.error as grpc.ServiceError | undefined;
  return { code: e?.code ?? -1, message: e?.details ?? "" };
}
