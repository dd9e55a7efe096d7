import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type {
  ConfigSnapshot,
  ConnectRequest,
  ConnectResponse,
  EventBatch,
  Hello,
  SidecarStatus,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { AckSchema, ConnectResponseSchema, IngestPausedSchema } from "../../gen/aigw/v1/ingest_pb.js";
import { errorCodeOf } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { RateLimitedWarning } from "../../common/rate-limited-warning.js";
import { isStoreUnavailable } from "../store/unavailable.js";
import type { IngestResult } from "../store/store.js";
import { AsyncQueue } from "./async-queue.js";
import type { BackpressureState, IngestBackpressure } from "./backpressure.js";
import type { IngestMetrics, IngestSource } from "./pipeline.js";
import { sameSnapshotContent } from "./snapshots.js";
import { type Principal, principalOf } from "../auth/principal.js";
import type { TokenRegistry } from "../auth/token-registry.js";
import { rpcError } from "../../common/rpc-errors.js";
import { hasControlCharacter } from "../../common/text.js";

export interface IngestDeps {
  /** The ingest pipeline: resolves only once the batch's valid events are committed. */
  ingest(events: Event[], source: IngestSource): Promise<IngestResult>;
  /** The current config snapshot for this sidecar (some fields, like limit shares, are its own). */
  snapshot(hello: Hello): ConfigSnapshot;
  /** Registers a listener for snapshot changes; returns the unsubscribe function. */
  onSnapshot(listener: (s: ConfigSnapshot) => void): () => void;
  /** Told of every stream that said hello, and of its end (gateway limit shares follow them). */
  presence?: SidecarPresence;
  /** delivery.queue_size: batches wait (unacked) while the delivery queue is full. */
  backpressure?: IngestBackpressure;
  /** Ends the streams of org tokens when they are revoked; absent: nothing ends them. */
  tokens?: TokenRegistry;
  logger: Logger;
  metrics: IngestMetrics;
}

export interface SidecarPresence {
  connect(hello: Hello): void;
  disconnect(hello: Hello): void;
  /** What a connected sidecar reported of itself since its hello (spool depth). */
  status?(hello: Hello, status: SidecarStatus): void;
}

/** Hard bound on one batch: a sidecar that sends more is misbehaving. */
const MAX_EVENTS_PER_BATCH = 10_000;

/**
 * IngestService.Connect. Batches are handled one at a time in arrival order; each is
 * acked only after the store has committed it (DESIGN.md "At least once"), so a sidecar
 * re-sends whatever was not acked. Events that cannot be valid are dropped with a log
 * line and a metric rather than failing the batch: a poison event must never make a
 * sidecar re-send the same batch forever.
 *
 * A sidecar with an org's token (auth/principal.ts) reports as that org: a hello naming
 * another org is refused with PERMISSION_DENIED, events are stamped with the token's org
 * whatever they say, and the stream ends (UNAUTHENTICATED) when the token is revoked.
 */
export class IngestServiceImpl implements ServiceImpl<typeof IngestService> {
  private readonly storeRefusals: RateLimitedWarning;
  private readonly unknownMessages: RateLimitedWarning;
  private readonly relabelled: RateLimitedWarning;

  constructor(private readonly deps: IngestDeps) {
    this.storeRefusals = new RateLimitedWarning(
      deps.logger,
      "the store refuses writes; sidecars' batches are not acked and wait in their spools",
    );
    this.unknownMessages = new RateLimitedWarning(
      deps.logger,
      "ignored a message of a kind this control plane does not know (a newer sidecar?)",
    );
    this.relabelled = new RateLimitedWarning(
      deps.logger,
      "events named another org than their sidecar token's; stored as the token's org",
    );
  }

  async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncGenerator<ConnectResponse> {
    const out = new AsyncQueue<ConnectResponse>();
    const principal = principalOf(ctx);
    let revoked = false;
    const unwatch = this.deps.tokens?.watch(principal, () => {
      if (revoked) return;
      revoked = true;
      this.deps.logger.warn(
        { sidecar: hello?.sidecarId, org: hello?.orgId },
        "sidecar token revoked; its stream ends (its events wait in its spool)",
      );
      out.fail(rpcError(Code.Unauthenticated, "AIGW_UNAUTHENTICATED", "authorization: token revoked"));
    });
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
      for await (const req of readableRequests(requests)) {
        const m = req.message;
        if (m.case === "hello") {
          if (hello !== undefined)
            throw new ConnectError("message.hello: sent twice on one stream", Code.InvalidArgument);
          hello = m.value;
          if (hello.sidecarId === "") throw new ConnectError("hello.sidecar_id: required", Code.InvalidArgument);
          // Kept as text (the sidecars table, every event's org and app): names, not bytes.
          for (const [field, text] of [
            ["hello.sidecar_id", hello.sidecarId],
            ["hello.org_id", hello.orgId],
            ["hello.app", hello.app],
            ["hello.version", hello.version],
          ] as const) {
            if (hasControlCharacter(text))
              throw new ConnectError(`${field}: must not contain control characters`, Code.InvalidArgument);
          }
          if (principal.scope === "org") {
            if (hello.orgId === "") hello.orgId = principal.orgId;
            else if (hello.orgId !== principal.orgId) throw this.wrongOrg(hello, principal.orgId);
          }
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
          // A full delivery queue holds the batch here, before anything of it is stored:
          // the ack waits, the sidecar keeps the events, and hears why.
          await this.deps.backpressure?.admit(ctx.signal, (state) => out.push(pausedMessage(state)));
          const result = await this.handleBatch(hello, batch, principal).catch((err: unknown) => {
            throw this.batchFailed(err, hello as Hello, batch.seq);
          });
          if (batch.seq > lastSeq) lastSeq = batch.seq;
          out.push(
            create(ConnectResponseSchema, {
              message: {
                case: "ack",
                value: create(AckSchema, { seq: lastSeq, stored: result.stored, duplicates: result.duplicates }),
              },
            }),
          );
        } else if (m.case === "status") {
          if (hello === undefined)
            throw new ConnectError("message: hello must come before a status", Code.InvalidArgument);
          this.deps.presence?.status?.(hello, m.value);
        } else if (req.$unknown?.length) {
          // A newer sidecar's message this control plane does not know: ignored, so the
          // stream (and the batches on it) go on.
          this.unknownMessages.hit({ sidecar: hello?.sidecarId, fields: req.$unknown.map((f) => f.no) });
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
      unwatch?.();
      unsubscribe?.();
      if (hello !== undefined && connected) {
        this.deps.presence?.disconnect(hello);
        this.deps.metrics.connectedSidecars--;
        log.info({ sidecar: hello.sidecarId, ackedSeq: lastSeq }, "sidecar disconnected");
      }
      // A revoked stream ends now: its consumer may be waiting for the sidecar's next message.
      if (revoked) consumer.catch(() => {});
      else await consumer.catch(() => {});
    }
  }

  /** A sidecar token of one org used with another --org: refused, with whose token it is. */
  private wrongOrg(hello: Hello, tokenOrg: string): ConnectError {
    this.deps.logger.warn(
      { sidecar: hello.sidecarId, org: hello.orgId, tokenOrg, app: hello.app, code: "AIGW_PERMISSION_DENIED" },
      "refused a sidecar: its --org is not the org of its sidecar token",
    );
    return rpcError(
      Code.PermissionDenied,
      "AIGW_PERMISSION_DENIED",
      `hello.org_id: this sidecar token belongs to org "${tokenOrg}", not "${hello.orgId}"; run the sidecar with --org ${tokenOrg} or with a token of org "${hello.orgId}"`,
      { field: "hello.org_id" },
    );
  }

  /**
   * A batch that could not be stored ends its stream, unacked: the sidecar keeps it and
   * sends it again when it reconnects (with backoff). A store that refuses writes for now
   * (locked by another process, disk full) is UNAVAILABLE, logged once per stretch.
   */
  private batchFailed(err: unknown, hello: Hello, seq: bigint): ConnectError {
    if (isStoreUnavailable(err)) {
      const code = errorCodeOf(err);
      this.storeRefusals.hit({ code, sidecar: hello.sidecarId, seq, reason: (err as Error).message });
      return new ConnectError(
        `batch ${seq} not stored: ${(err as Error).message}; send it again later`,
        Code.Unavailable,
        undefined,
        undefined,
        err,
      );
    }
    this.deps.logger.error(
      { err, sidecar: hello.sidecarId, seq },
      "storing a sidecar's batch failed; it stays unacked",
    );
    return ConnectError.from(err, Code.Internal);
  }

  private async handleBatch(
    hello: Hello,
    batch: EventBatch,
    principal: Principal,
  ): Promise<{ stored: number; duplicates: number }> {
    // The stream's hello fills what an event leaves empty; an org token's org is the only one its events can have.
    for (const e of batch.events) {
      if (principal.scope === "org" && e.orgId !== "" && e.orgId !== principal.orgId) {
        this.relabelled.hit({ sidecar: hello.sidecarId, claimed: e.orgId, tokenOrg: principal.orgId });
        e.orgId = principal.orgId;
      }
      if (e.orgId === "") e.orgId = hello.orgId;
      if (e.app === "") e.app = hello.app;
    }
    this.deps.metrics.batches++;
    const result = await this.deps.ingest(batch.events, { sidecar: hello.sidecarId, seq: batch.seq });
    return { stored: result.stored.length, duplicates: result.duplicates };
  }
}

function pausedMessage(state: BackpressureState): ConnectResponse {
  return create(ConnectResponseSchema, {
    message: {
      case: "paused",
      value: create(IngestPausedSchema, {
        pendingDeliveries: BigInt(state.pending),
        queueSize: BigInt(state.queueSize),
        resumeBelow: BigInt(state.resumeBelow),
      }),
    },
  });
}

/**
 * The stream's requests, with a frame that is not a ConnectRequest answered as the client's
 * mistake (INVALID_ARGUMENT saying what was wrong) rather than connect's INTERNAL.
 */
async function* readableRequests(requests: AsyncIterable<ConnectRequest>): AsyncGenerator<ConnectRequest> {
  try {
    yield* requests;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.Internal) {
      if (err.rawMessage.startsWith("parse binary")) {
        throw new ConnectError(
          `ConnectRequest: a frame is not a valid message (${err.rawMessage})`,
          Code.InvalidArgument,
          undefined,
          undefined,
          err,
        );
      }
      if (/compress/.test(err.rawMessage)) {
        throw new ConnectError(
          `ConnectRequest: ${err.rawMessage} (the stream declared no grpc-encoding)`,
          Code.InvalidArgument,
          undefined,
          undefined,
          err,
        );
      }
    }
    throw err;
  }
}
