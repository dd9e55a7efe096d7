import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import {
  type ConfigSnapshotSchema,
  type ConnectRequest,
  type ConnectResponseSchema,
  type Hello,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";

type ResponseInit = MessageInitShape<typeof ConnectResponseSchema>;

export interface ReceivedBatch {
  sidecarId: string;
  seq: number;
  eventIds: string[];
  /** Which stream (connection) it came on, counting from 1. */
  streamNumber: number;
}

/** A push/pull queue turned into an async iterable: the response side of one stream. */
class Outbox implements AsyncIterable<ResponseInit> {
  /** Highest batch seq received on this stream. */
  highestSeq = 0;
  private items: ResponseInit[] = [];
  private waiting: (() => void) | undefined;
  private ended = false;
  private failure: unknown;

  push(item: ResponseInit): void {
    this.items.push(item);
    this.wake();
  }

  end(failure?: unknown): void {
    this.ended = true;
    this.failure = failure;
    this.wake();
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ResponseInit> {
    for (;;) {
      const item = this.items.shift();
      if (item) {
        yield item;
        continue;
      }
      if (this.ended) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
      });
    }
  }
}

/**
 * An in-process control plane for the uplink's tests: a real HTTP/2 cleartext server with
 * connect-node serving IngestService.Connect. It "stores" batches in an array, then acks;
 * tests switch it to hold acks, end streams, refuse tokens, or push config snapshots.
 */
export class FakeControlPlane {
  readonly batches: ReceivedBatch[] = [];
  readonly hellos: Hello[] = [];
  readonly authorizations: (string | null)[] = [];
  /** When set, streams without `authorization: Bearer <token>` are refused (UNAUTHENTICATED). */
  requiredToken: string | undefined;
  /** When true, batches are stored but not acked. */
  holdAcks = false;
  /** When set, each stream is ended by the server after this many batches (the last one unacked). */
  endStreamAfterBatches: number | undefined;
  /** Sent on every new stream, before anything else. */
  configOnConnect: MessageInitShape<typeof ConfigSnapshotSchema>[] = [];

  private server: http2.Http2Server | http2.Http2SecureServer | undefined;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly outboxes = new Set<Outbox>();
  private streamCount = 0;
  private portValue = 0;
  private tls = false;

  get port(): number {
    return this.portValue;
  }

  get target(): string {
    return this.tls ? `https://127.0.0.1:${this.portValue}` : `127.0.0.1:${this.portValue}`;
  }

  get streams(): number {
    return this.streamCount;
  }

  /** Event ids stored, in arrival order, duplicates included. */
  storedEventIds(): string[] {
    return this.batches.flatMap((batch) => batch.eventIds);
  }

  /** On `port` (0: any free one); over TLS with `tls` (its target is then https://127.0.0.1:PORT). */
  async start(port = 0, tls?: { key: Buffer; cert: Buffer }): Promise<void> {
    const routes = (router: ConnectRouter): void => {
      router.service(IngestService, {
        connect: (requests, context) => this.handle(requests, context),
      });
    };
    const server = tls
      ? http2.createSecureServer({ ...tls, allowHTTP1: false }, connectNodeAdapter({ routes }))
      : http2.createServer(connectNodeAdapter({ routes }));
    this.tls = tls !== undefined;
    server.on("session", (session) => {
      this.sessions.add(session);
      session.on("close", () => this.sessions.delete(session));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    this.portValue = (server.address() as AddressInfo).port;
  }

  /** Stops like a crash: every open stream and session is cut. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const outbox of this.outboxes) outbox.end(new ConnectError("control plane stopping", Code.Unavailable));
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const session of this.sessions) session.destroy();
    await closed;
  }

  pushConfig(snapshot: MessageInitShape<typeof ConfigSnapshotSchema>): void {
    for (const outbox of this.outboxes) outbox.push({ message: { case: "config", value: snapshot } });
  }

  /** Tells every open stream that ingest is paused (a full delivery queue), as the control plane does. */
  pushPaused(pendingDeliveries: number, queueSize: number): void {
    const value = {
      pendingDeliveries: BigInt(pendingDeliveries),
      queueSize: BigInt(queueSize),
      resumeBelow: BigInt(Math.floor(queueSize * 0.9)),
    };
    for (const outbox of this.outboxes) outbox.push({ message: { case: "paused", value } });
  }

  /** Acks, on every open stream, everything received so far (after holdAcks). */
  ackReceived(): void {
    for (const outbox of this.outboxes) {
      if (outbox.highestSeq > 0) outbox.push({ message: { case: "ack", value: { seq: BigInt(outbox.highestSeq) } } });
    }
  }

  private handle(
    requests: AsyncIterable<ConnectRequest>,
    context: { requestHeader: Headers; signal: AbortSignal },
  ): AsyncIterable<ResponseInit> {
    const authorization = context.requestHeader.get("authorization");
    this.authorizations.push(authorization);
    if (this.requiredToken !== undefined && authorization !== `Bearer ${this.requiredToken}`) {
      throw new ConnectError("invalid sidecar token", Code.Unauthenticated);
    }
    const streamNumber = ++this.streamCount;
    const outbox = new Outbox();
    this.outboxes.add(outbox);
    context.signal.addEventListener("abort", () => outbox.end());
    for (const config of this.configOnConnect) outbox.push({ message: { case: "config", value: config } });
    let sidecarId = "";
    let batchesOnStream = 0;
    void (async () => {
      try {
        for await (const request of requests) {
          const message = request.message;
          if (message.case === "hello") {
            sidecarId = message.value.sidecarId;
            this.hellos.push(message.value);
          } else if (message.case === "batch") {
            const seq = Number(message.value.seq);
            this.batches.push({ sidecarId, seq, eventIds: message.value.events.map((e) => e.id), streamNumber });
            batchesOnStream++;
            outbox.highestSeq = Math.max(outbox.highestSeq, seq);
            if (this.endStreamAfterBatches !== undefined && batchesOnStream >= this.endStreamAfterBatches) {
              outbox.end();
              return;
            }
            if (!this.holdAcks) outbox.push({ message: { case: "ack", value: { seq: BigInt(seq), stored: 1 } } });
          }
        }
        outbox.end();
      } catch (error) {
        outbox.end(error);
      }
    })();
    const outboxes = this.outboxes;
    return (async function* () {
      try {
        yield* outbox;
      } finally {
        outboxes.delete(outbox);
      }
    })();
  }
}

/** A port that nothing listens on (yet). */
export async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls `condition` until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
