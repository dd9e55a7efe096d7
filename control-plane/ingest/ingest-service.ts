import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type {
  ConfigSnapshot,
  ConnectRequest,
  ConnectResponse,
  EventBatch,
  Hello,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { AckSchema, ConnectResponseSchema } from "../../gen/aigw/v1/ingest_pb.js";
import type { Logger } from "../../common/logger.js";
import type { IngestResult } from "../store/store.js";
import { AsyncQueue } from "./async-queue.js";
import type { IngestMetrics, IngestSource } from "./pipeline.js";
import { sameSnapshotContent } from "./snapshots.js";

export interface IngestDeps {
  /** The ingest pipeline: resolves only once the batch's valid events are committed. */
  ingest(events: Event[], source: IngestSource): Promise<IngestResult>;
  /** The current config snapshot for this sidecar (some fields, like limit shares, are its own). */
  snapshot(hello: Hello): ConfigSnapshot;
  /** Registers a listener for snapshot changes; returns the unsubscribe function. */
  onSnapshot(listener: (s: ConfigSnapshot) => void): () => void;
  /** Told of every stream that said hello, and of its end (gateway limit shares follow them). */
  presence?: SidecarPresence;
  logger: Logger;
  metrics: IngestMetrics;
}

export interface SidecarPresence {
  connect(hello: Hello): void;
  disconnect(hello: Hello): void;
}

/** Hard bound on one batch: a sidecar that sends more is misbehaving. */
const MAX_EVENTS_PER_BATCH = 10_000;

/**
 * IngestService.Connect. Batches are handled one at a time in arrival order; each is
 * acked only after the store has committed it (DESIGN.md "At least once"), so a sidecar
 * re-sends whatever was not acked. Events that cannot be valid are dropped with a log
 * line and a metric rather than failing the batch: a poison event must never make a
 * sidecar re-send the same batch forever.
 */
export class IngestServiceImpl implements ServiceImpl<typeof IngestService> {
  constructor(private readonly deps: IngestDeps) {}

  async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncGenerator<ConnectResponse> {
    const out = new AsyncQueue<ConnectResponse>();
    let hello: Hello | undefined;
    let lastSeq = 0n;
    let sentVersion = 0n;
    let sent: ConfigSnapshot | undefined;
    /** Counted as connected (a hello that was refused is not). */
    let connected = false;
    const log = this.deps.logger;
    // Called on every new version; the snapshot is recomputed for this sidecar, and one
    // whose content did not change for it is not sent (another org's sidecar came or went).
    const sendSnapshot = (): void => {
      if (hello === undefined) return;
      const s = this.deps.snapshot(hello);
      if (s.version <= sentVersion) return;
      sentVersion = s.version;
      if (sent !== undefined && sameSnapshotContent(sent, s)) return;
      sent = s;
      out.push(create(ConnectResponseSchema, { message: { case: "config", value: s } }));
    };
    let unsubscribe: (() => void) | undefined;

    const consume = async (): Promise<void> => {
      for await (const req of requests) {
        const m = req.message;
        if (m.case === "hello") {
          if (hello !== undefined)
            throw new ConnectError("message.hello: sent twice on one stream", Code.InvalidArgument);
          hello = m.value;
          if (hello.sidecarId === "") throw new ConnectError("hello.sidecar_id: required", Code.InvalidArgument);
          this.deps.metrics.connectedSidecars++;
          connected = true;
          log.info(
            { sidecar: hello.sidecarId, org: hello.orgId, app: hello.app, version: hello.version },
            "sidecar connected",
          );
          // Counted before its first snapshot, so that snapshot already has its share.
          this.deps.presence?.connect(hello);
          const current = this.deps.snapshot(hello);
          if (current.version !== hello.configVersion) sendSnapshot();
          else {
            sentVersion = current.version;
            sent = current;
          }
          unsubscribe = this.deps.onSnapshot(sendSnapshot);
        } else if (m.case === "batch") {
          if (hello === undefined)
            throw new ConnectError("message: hello must come before the first batch", Code.InvalidArgument);
          const batch = m.value;
          if (batch.seq <= 0n)
            throw new ConnectError(`batch.seq: must be positive, got ${batch.seq}`, Code.InvalidArgument);
          if (batch.events.length > MAX_EVENTS_PER_BATCH) {
            throw new ConnectError(
              `batch.events: ${batch.events.length} events in one batch; at most ${MAX_EVENTS_PER_BATCH}`,
              Code.InvalidArgument,
            );
          }
          const result = await this.handleBatch(hello, batch);
          if (batch.seq > lastSeq) lastSeq = batch.seq;
          out.push(
            create(ConnectResponseSchema, {
              message: {
                case: "ack",
                value: create(AckSchema, { seq: lastSeq, stored: result.stored, duplicates: result.duplicates }),
              },
            }),
          );
        } else {
          throw new ConnectError("message: empty ConnectRequest (expected hello or batch)", Code.InvalidArgument);
        }
      }
    };

    const consumer = consume().then(
      () => out.end(),
      (err: unknown) => out.fail(err),
    );
    try {
      for await (const res of out) {
        if (ctx.signal.aborted) break;
        yield res;
      }
    } finally {
      unsubscribe?.();
      if (hello !== undefined && connected) {
        this.deps.presence?.disconnect(hello);
        this.deps.metrics.connectedSidecars--;
        log.info({ sidecar: hello.sidecarId, ackedSeq: lastSeq }, "sidecar disconnected");
      }
      await consumer.catch(() => {});
    }
  }

  private async handleBatch(hello: Hello, batch: EventBatch): Promise<{ stored: number; duplicates: number }> {
    // The stream's hello fills what an event leaves empty.
    for (const e of batch.events) {
      if (e.orgId === "") e.orgId = hello.orgId;
      if (e.app === "") e.app = hello.app;
    }
    this.deps.metrics.batches++;
    const result = await this.deps.ingest(batch.events, { sidecar: hello.sidecarId, seq: batch.seq });
    return { stored: result.stored.length, duplicates: result.duplicates };
  }
}
