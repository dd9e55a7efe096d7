import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { join } from "node:path";
import type { Logger } from "../../common/logger.js";
import { USER_AGENT } from "../../common/version.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import {
  type ConfigSnapshot,
  ConnectRequestSchema,
  type ConnectResponse,
  ConnectResponseSchema,
  type IngestPaused,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { Backoff } from "./backoff.js";
import {
  type BidiCall,
  type CallStatus,
  GRPC_PREFIX_BYTES,
  GrpcChannel,
  GrpcStatus,
  statusName,
} from "./grpc-client.js";
import { RateLimitedWarning } from "../../common/rate-limited-warning.js";
import { loadOrCreateSidecarId } from "./sidecar-id.js";
import { BatchBody } from "./batch-encoder.js";
import { Spool } from "./spool.js";

export interface UplinkOptions {
  /**
   * The control plane's gRPC address, or several: "host:port", "http://host:port" (h2c) or
   * "https://host:port" (TLS). With several, the uplink uses one and moves to the next when
   * it is refused or unreachable; spool and seqs carry over.
   */
  target: string | readonly string[];
  /** Sidecar bearer token, sent as `authorization: Bearer <token>`. */
  token?: string;
  /** Default: an id created once and kept in the spool directory. */
  sidecarId?: string;
  orgId: string;
  app: string;
  version: string;
  spoolDir: string;
  /** Default 256 MiB. */
  maxSpoolBytes?: number;
  /** Default 256. */
  batchMaxEvents?: number;
  /**
   * The adaptive linger: events go out at once when nothing is in flight, and wait for the
   * ack (or a full batch) while a batch is; never longer than this. Also how long events wait
   * for company while no control plane is connected. Default 20 ms.
   */
  batchMaxDelayMs?: number;
  /** Batches sent and not yet acked, at most; default 64. */
  maxInflightBatches?: number;
  /** While connected, a batch unacked this long goes to disk (default 50 ms). See Spool. */
  spoolAfterMs?: number;
  /** Unacked batches held in memory before they go to disk regardless of age; default 8 MiB. */
  memoryBytes?: number;
  /** Reconnect backoff; default 100 ms doubling to 10 s, with jitter. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Backoff after the control plane refused the token; default 2 s doubling to 60 s. */
  authRetryInitialMs?: number;
  authRetryMaxMs?: number;
  /** A control plane that does not accept the connection within this long counts as unreachable; default 5 s. */
  connectTimeoutMs?: number;
  /** HTTP/2 keepalive pings; defaults 30 s and 10 s. */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** A stream whose in-flight batches see no ack for this long is dropped and redialled; default 30 s. */
  ackTimeoutMs?: number;
  /** Extra trusted CA certificates (PEM) for an https control plane; default Node's roots (and NODE_EXTRA_CA_CERTS). */
  tlsCa?: string | Buffer;
  /** fdatasync spool writes (default true). */
  spoolSync?: boolean;
  logger: Logger;
  /** Called with each applied (newer) config snapshot. */
  onConfig?: (snapshot: ConfigSnapshot) => void;
}

export interface UplinkStats {
  /** A stream to a control plane is open. */
  connected: boolean;
  /** The control plane in use (or being dialled). */
  target: string;
  /** Batch messages written to streams, re-sends included. */
  sentBatches: number;
  /** Events acked by the control plane since start. */
  sentEvents: number;
  ackedSeq: number;
  /** The highest seq assigned to a batch. */
  lastSeq: number;
  /** Sealed batches not yet acked (in memory or on disk). */
  pendingBatches: number;
  /** Events published and not yet sealed into a batch. */
  bufferedEvents: number;
  /** Events waiting for their ack: buffered, or in unacked batches. */
  queuedEvents: number;
  /** Of those, events whose batch is on disk. */
  spooledEvents: number;
  /** Bytes of spool segment files on disk. */
  spooledBytes: number;
  /** Bytes of unacked batches held in memory. */
  memoryBytes: number;
  /** Bytes of unacked batches counted against the spool's bound, and the bound. */
  spoolUsedBytes: number;
  spoolMaxBytes: number;
  /** Spool group writes (one append per segment and one fdatasync each) since start. */
  spoolWrites: number;
  /** Failed spool writes (disk full, I/O errors) since start. */
  spoolWriteFailures: number;
  /** Events dropped because the spool (or buffer) was full or the uplink closed. */
  dropped: number;
  /** Version of the applied config snapshot (0 for none). */
  configVersion: number;
  /** Streams opened, the first one included. */
  connectAttempts: number;
}

export interface FlushOptions {
  /** Default 30 s; the promise rejects when it passes. */
  timeoutMs?: number;
}

/** Structurally the proxy's EventSink (sidecar/proxy/event-sink.ts). */
export interface EventPublisher {
  publish(event: Event): void;
}

interface ActiveStream {
  target: string;
  /** The HTTP/2 connection, dialled afresh for each stream: this class's backoff paces retries. */
  channel: GrpcChannel | undefined;
  call: BidiCall | undefined;
  /** Highest seq written on this stream. */
  sentSeq: number;
  /** Seqs written on this stream and not yet acked, in order. */
  inflight: number[];
  /** The channel is connected and the call is open. */
  established: boolean;
  writable: boolean;
  /** Last ack, or when the in-flight window last became non-empty. */
  lastProgressAt: number;
  openedAt: number;
  ackTimer?: NodeJS.Timeout | undefined;
}

interface FlushWaiter {
  target: number;
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

// The stream's request side carries pre-encoded ConnectRequest bytes: a batch is encoded
// once, its events as they are published, and the same bytes go to the spool and to the wire.
const CONNECT_PATH = `/${IngestService.typeName}/${IngestService.method.connect.name}`;
// A stream that lived this long was a real connection: the next failure starts backoff afresh.
const HEALTHY_STREAM_MS = 10_000;
/** How often, at most, the sidecar reports its spool depth (SidecarStatus) while it changes. */
const STATUS_EVERY_MS = 2_000;
/** ConnectRequest field 2 (batch), length-delimited. */
const BATCH_FIELD_TAG = (2 << 3) | 2;

/** Where a sidecar keeps its spool unless told otherwise (`--spool DIR`). */
export function defaultSpoolDir(app: string, base = ".aigw"): string {
  return join(base, `spool-${app.replace(/[^A-Za-z0-9_.-]/g, "_") || "default"}`);
}

/**
 * The sidecar's link to the control plane (IngestService.Connect). `publish` only buffers.
 * Batching adapts to the control plane: with nothing in flight, buffered events are sealed
 * into a seq-numbered batch and sent on the next turn of the event loop; while a batch is in
 * flight they wait for its ack (or a full batch, or the linger), so a fast control plane gets
 * low latency at low rates and large batches at high ones. Sealed batches wait in the Spool
 * (memory first, disk when the control plane is away or slow) until acked. Every
 * (re)connect says hello and re-sends what is unacked, so nothing is lost while the control
 * plane is away and nothing reaches the app: publish never throws and never waits.
 */
export class Uplink implements EventPublisher {
  private readonly options: UplinkOptions;
  private readonly logger: Logger;
  private readonly targets: readonly string[];
  private readonly batchMaxEvents: number;
  private readonly batchMaxDelayMs: number;
  private readonly maxInflight: number;
  private readonly maxBufferedEvents: number;
  private readonly ackTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly backoff: Backoff;
  private readonly authBackoff: Backoff;
  private readonly drops: RateLimitedWarning;
  private readonly unreachable: RateLimitedWarning;
  private readonly backpressure: RateLimitedWarning;

  private spool: Spool | undefined;
  private sidecarId = "";
  /** The batch events are written into as they are published (batch-encoder.ts). */
  private openBody: BatchBody | undefined;
  /** Bodies that reached batchMaxEvents, waiting to be sealed (before start(), or within a turn). */
  private fullBodies: BatchBody[] = [];
  /** Events published and not yet sealed into a batch (in openBody and fullBodies). */
  private buffered = 0;
  private lingerTimer: NodeJS.Timeout | undefined;
  private sealScheduled = false;
  private stream: ActiveStream | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private targetIndex = 0;
  /** Targets that failed in a row without a connection: a full round of them means back off. */
  private failuresInRound = 0;
  private pumping = false;
  private pumpAgain = false;
  private flushWaiters: FlushWaiter[] = [];
  private config: ConfigSnapshot | undefined;
  private configVersion = 0;
  private started = false;
  private closed = false;

  private sentBatches = 0;
  private sentEvents = 0;
  private dropped = 0;
  private connectAttempts = 0;

  constructor(options: UplinkOptions) {
    this.options = options;
    this.logger = options.logger;
    this.targets = typeof options.target === "string" ? [options.target] : [...options.target];
    if (this.targets.length === 0 || this.targets.some((t) => !t))
      throw new Error("uplink: target (control plane address) is required");
    this.batchMaxEvents = positiveInteger(options.batchMaxEvents ?? 256, "batchMaxEvents");
    this.batchMaxDelayMs = nonNegative(options.batchMaxDelayMs ?? 20, "batchMaxDelayMs");
    this.maxInflight = positiveInteger(options.maxInflightBatches ?? 64, "maxInflightBatches");
    // Bounds memory before start() and if sealing ever falls behind within one tick.
    this.maxBufferedEvents = this.batchMaxEvents * 64;
    this.ackTimeoutMs = positiveInteger(options.ackTimeoutMs ?? 30_000, "ackTimeoutMs");
    this.connectTimeoutMs = positiveInteger(options.connectTimeoutMs ?? 5_000, "connectTimeoutMs");
    this.backoff = new Backoff(options.reconnectInitialMs ?? 100, options.reconnectMaxMs ?? 10_000);
    this.authBackoff = new Backoff(options.authRetryInitialMs ?? 2_000, options.authRetryMaxMs ?? 60_000);
    this.drops = new RateLimitedWarning(this.logger, "uplink: events dropped (spool full or uplink closed)");
    this.unreachable = new RateLimitedWarning(
      this.logger,
      "uplink: control plane unreachable; events wait in the spool",
    );
    this.backpressure = new RateLimitedWarning(
      this.logger,
      "uplink: control plane paused ingest (its delivery queue is full); events wait in the spool",
    );
    if (!options.spoolDir) throw new Error("uplink: spoolDir is required");
  }

  /** Opens the spool (recovering unacked batches) and starts connecting; does not wait for the control plane. */
  async start(): Promise<void> {
    if (this.started) throw new Error("uplink: start() called twice");
    this.started = true;
    this.sidecarId = this.options.sidecarId ?? (await loadOrCreateSidecarId(this.options.spoolDir));
    const spool = await Spool.open({
      dir: this.options.spoolDir,
      logger: this.logger,
      ...(this.options.maxSpoolBytes === undefined ? {} : { maxBytes: this.options.maxSpoolBytes }),
      ...(this.options.spoolSync === undefined ? {} : { sync: this.options.spoolSync }),
      ...(this.options.spoolAfterMs === undefined ? {} : { spoolAfterMs: this.options.spoolAfterMs }),
      ...(this.options.memoryBytes === undefined ? {} : { memoryBytes: this.options.memoryBytes }),
    });
    if (this.closed) {
      await spool.close();
      return;
    }
    this.spool = spool;
    this.seal(false);
    this.connect();
  }

  /** Queues an event for the control plane. Synchronous and O(1); never throws. */
  publish(event: Event): void {
    try {
      if (this.closed) {
        this.countDropped(1, "closed");
        return;
      }
      if (this.buffered >= this.maxBufferedEvents) {
        this.countDropped(1, "buffer full");
        return;
      }
      // Written into its batch now: sealing is then one copy, and the event object dies young.
      this.openBody ??= new BatchBody();
      const body = this.openBody;
      body.add(event);
      this.buffered++;
      if (body.count >= this.batchMaxEvents) {
        this.fullBodies.push(body);
        this.openBody = undefined;
      }
      // One check per turn of the event loop, however many events a turn publishes.
      if (!this.sealScheduled) {
        this.sealScheduled = true;
        setImmediate(this.sealCheck);
      }
    } catch (error) {
      this.logger.error({ err: error }, "uplink: publish failed; event dropped");
      this.dropped++;
    }
  }

  /** The last applied config snapshot. */
  currentConfig(): ConfigSnapshot | undefined {
    return this.config;
  }

  /** Resolves when every event published so far is acked by the control plane; rejects on timeout or close. */
  flush(options: FlushOptions = {}): Promise<void> {
    const spool = this.spool;
    if (!spool) return Promise.reject(new Error("uplink: flush() before start()"));
    if (this.closed) return Promise.reject(new Error("uplink: flush() after close()"));
    this.seal(false);
    const target = spool.lastSeq;
    if (spool.ackedSeq >= target) return Promise.resolve();
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise<void>((resolve, reject) => {
      const waiter: FlushWaiter = {
        target,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.flushWaiters = this.flushWaiters.filter((w) => w !== waiter);
          reject(
            new Error(
              `uplink: flush timed out after ${timeoutMs} ms: acked seq ${spool.ackedSeq} of ${target} (control plane ${this.stream?.established ? "connected" : "not connected"})`,
            ),
          );
        }, timeoutMs),
      };
      this.flushWaiters.push(waiter);
    });
  }

  /**
   * Seals what is buffered, stops the stream, writes every unacked batch to disk and closes
   * the spool. Unacked batches stay on disk for the next start; call flush() first to send them now.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.seal(false);
    // Published before start() finished: nowhere durable to put them.
    if (this.buffered > 0) {
      for (const body of [...this.fullBodies, ...(this.openBody ? [this.openBody] : [])]) body.discard();
      this.fullBodies = [];
      this.openBody = undefined;
      this.countDropped(this.buffered, "closed before start");
      this.buffered = 0;
    }
    this.closed = true;
    clearTimeout(this.lingerTimer);
    clearTimeout(this.reconnectTimer);
    for (const waiter of this.flushWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("uplink: closed before the flush completed"));
    }
    const stream = this.stream;
    this.stream = undefined;
    if (stream) this.dispose(stream);
    await this.spool?.close();
  }

  /** Events acked by the control plane since start (what stats().sentEvents reports, without building the rest). */
  get eventsAcked(): number {
    return this.sentEvents;
  }

  stats(): UplinkStats {
    const spool = this.spool;
    const spoolStats = spool?.stats();
    return {
      connected: this.stream?.established ?? false,
      target: this.stream?.target ?? this.targets[this.targetIndex] ?? "",
      sentBatches: this.sentBatches,
      sentEvents: this.sentEvents,
      ackedSeq: spool?.ackedSeq ?? 0,
      lastSeq: spool?.lastSeq ?? 0,
      pendingBatches: spool?.pendingBatches ?? 0,
      bufferedEvents: this.buffered,
      queuedEvents: this.buffered + (spoolStats?.pendingEvents ?? 0),
      spooledEvents: spoolStats?.spooledEvents ?? 0,
      spooledBytes: spoolStats?.diskBytes ?? 0,
      memoryBytes: spoolStats?.memoryBytes ?? 0,
      spoolUsedBytes: spool?.bytes ?? 0,
      spoolMaxBytes: spool?.maxBytes ?? this.options.maxSpoolBytes ?? 0,
      spoolWrites: spoolStats?.writes ?? 0,
      spoolWriteFailures: spoolStats?.writeFailures ?? 0,
      dropped: this.dropped,
      configVersion: this.configVersion,
      connectAttempts: this.connectAttempts,
    };
  }

  /** The spool's last write failed (disk full, I/O error): events are held in memory only. */
  spoolFailing(): boolean {
    return this.spool?.failing ?? false;
  }

  /** After the events of one turn: send now if nothing is in flight, else batch until the ack. */
  private readonly sealCheck = (): void => {
    this.sealScheduled = false;
    if (this.buffered === 0 || !this.spool) return;
    const stream = this.stream;
    if (stream?.established && stream.inflight.length === 0) {
      this.seal(false);
      return;
    }
    if (this.fullBodies.length > 0) this.seal(true);
    if (this.buffered > 0 && this.lingerTimer === undefined) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = undefined;
        this.seal(false);
      }, this.batchMaxDelayMs);
    }
  };

  /** Seals buffered events into batches (only full ones when `fullOnly`) and sends what the window allows. */
  private seal(fullOnly: boolean): void {
    const spool = this.spool;
    if (!spool || this.buffered === 0) return;
    const bodies = this.fullBodies;
    if (!fullOnly && this.openBody !== undefined) {
      bodies.push(this.openBody);
      this.openBody = undefined;
    }
    if (bodies.length === 0) return;
    this.fullBodies = [];
    for (const body of bodies) {
      this.buffered -= body.count;
      if (spool.appendBody(body) === undefined) this.countDropped(body.count, "spool full");
    }
    if (this.buffered === 0) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
    void this.pump();
  }

  private countDropped(count: number, reason: string): void {
    this.dropped += count;
    this.drops.hit({ reason, dropped: this.dropped, spooledBytes: this.spool?.bytes ?? 0 }, count);
  }

  private connect(): void {
    this.reconnectTimer = undefined;
    const spool = this.spool;
    if (this.closed || !spool) return;
    this.connectAttempts++;
    const target = this.targets[this.targetIndex]!;
    const now = Date.now();
    const stream: ActiveStream = {
      target,
      channel: undefined,
      call: undefined,
      sentSeq: spool.ackedSeq,
      inflight: [],
      established: false,
      writable: true,
      lastProgressAt: now,
      openedAt: now,
    };
    this.stream = stream;
    this.dial(stream);
  }

  /**
   * Dials the control plane: refused, failing (TLS included), or silent past the connect
   * timeout (it accepts TCP but never speaks HTTP/2) counts as unreachable, and the next
   * control plane is tried; a connection that is not used is closed at once.
   */
  private dial(stream: ActiveStream): void {
    stream.channel = new GrpcChannel(
      {
        target: stream.target,
        connectTimeoutMs: this.connectTimeoutMs,
        keepaliveTimeMs: this.options.keepaliveTimeMs ?? 30_000,
        keepaliveTimeoutMs: this.options.keepaliveTimeoutMs ?? 10_000,
        userAgent: USER_AGENT,
        ca: this.options.tlsCa,
      },
      (problem) => {
        if (this.stream !== stream) return;
        if (problem === undefined) this.openCall(stream);
        else this.onStreamClosed(stream, GrpcStatus.UNAVAILABLE, problem);
      },
    );
  }

  private openCall(stream: ActiveStream): void {
    const spool = this.spool;
    const channel = stream.channel;
    if (!spool || !channel) return;
    const metadata: Record<string, string> = {};
    if (this.options.token) metadata.authorization = `Bearer ${this.options.token}`;
    const call = channel.openBidi(CONNECT_PATH, metadata, {
      onMessage: (bytes) => this.onMessage(stream, bytes),
      onStatus: (status: CallStatus) => this.onStreamClosed(stream, status.code, status.details),
      onDrain: () => {
        stream.writable = true;
        void this.pump();
      },
    });
    if (this.stream !== stream) return;
    stream.call = call;
    call.write(
      toBinary(
        ConnectRequestSchema,
        create(ConnectRequestSchema, {
          message: {
            case: "hello",
            value: {
              sidecarId: this.sidecarId,
              orgId: this.options.orgId,
              app: this.options.app,
              version: this.options.version,
              configVersion: BigInt(this.configVersion),
              spoolBatches: BigInt(spool.pendingBatches),
              spoolBytes: BigInt(spool.bytes),
            },
          },
        }),
      ),
    );
    stream.established = true;
    spool.eager = false;
    this.reportStatusWhileOpen(stream, { batches: spool.pendingBatches, bytes: spool.bytes });
    this.logger.info(
      { target: stream.target, sidecarId: this.sidecarId, pendingBatches: spool.pendingBatches },
      "uplink: connected to control plane",
    );
    // What waited while no stream was open goes now.
    this.seal(false);
    void this.pump();
  }

  /**
   * Tells the control plane how deep the spool is (for its dashboard) every few seconds
   * while it changes; a control plane that does not know the message ignores it.
   */
  private reportStatusWhileOpen(stream: ActiveStream, sent: { batches: number; bytes: number }): void {
    const timer = setInterval(() => {
      const spool = this.spool;
      if (this.stream !== stream || !stream.call || !spool) {
        clearInterval(timer);
        return;
      }
      const now = { batches: spool.pendingBatches, bytes: spool.bytes };
      if (now.batches === sent.batches && now.bytes === sent.bytes) return;
      sent = now;
      stream.call.write(
        toBinary(
          ConnectRequestSchema,
          create(ConnectRequestSchema, {
            message: { case: "status", value: { spoolBatches: BigInt(now.batches), spoolBytes: BigInt(now.bytes) } },
          }),
        ),
      );
    }, STATUS_EVERY_MS);
    timer.unref();
  }

  private onMessage(stream: ActiveStream, bytes: Uint8Array): void {
    if (this.stream !== stream) return;
    let response: ConnectResponse;
    try {
      response = fromBinary(ConnectResponseSchema, bytes);
    } catch (error) {
      // Not a ConnectResponse: the stream cannot be trusted any more; a new one starts afresh.
      const reason = error instanceof Error ? error.message : String(error);
      this.onStreamClosed(stream, GrpcStatus.INTERNAL, `unreadable message from the control plane: ${reason}`);
      return;
    }
    const message = response.message;
    if (message.case === "ack") this.onAck(stream, Number(message.value.seq));
    else if (message.case === "config") this.applyConfig(message.value);
    else if (message.case === "paused") this.onPaused(stream, message.value);
    // Other cases: a newer control plane's message this sidecar does not know; ignored.
  }

  private onAck(stream: ActiveStream, seq: number): void {
    const spool = this.spool;
    if (!spool) return;
    if (seq > spool.lastSeq) {
      this.logger.warn({ ackSeq: seq, lastSeq: spool.lastSeq }, "uplink: control plane acked a seq never sent; capped");
    }
    const pendingBefore = spool.stats().pendingEvents;
    spool.ack(seq);
    this.sentEvents += pendingBefore - spool.stats().pendingEvents;
    const acked = spool.ackedSeq;
    while ((stream.inflight[0] ?? Number.POSITIVE_INFINITY) <= acked) stream.inflight.shift();
    // An ack may cover batches a previous stream sent: do not send those again.
    stream.sentSeq = Math.max(stream.sentSeq, acked);
    stream.lastProgressAt = Date.now();
    this.failuresInRound = 0;
    this.backoff.reset();
    this.authBackoff.reset();
    if (this.flushWaiters.length > 0) {
      for (const waiter of this.flushWaiters.filter((w) => w.target <= acked)) {
        clearTimeout(waiter.timer);
        waiter.resolve();
      }
      this.flushWaiters = this.flushWaiters.filter((w) => w.target > acked);
    }
    // The adaptive linger: what gathered while the batch was in flight goes now, as one batch.
    if (stream.inflight.length === 0 && this.buffered > 0) this.seal(false);
    else void this.pump();
  }

  /**
   * The control plane's delivery queue is full (delivery.queue_size): it holds our batch
   * unacked until it drains. That is progress, not a dead stream, so the ack timeout starts
   * afresh; the events wait in the spool as they would with the control plane away.
   */
  private onPaused(stream: ActiveStream, paused: IngestPaused): void {
    stream.lastProgressAt = Date.now();
    this.backpressure.hit({
      pendingDeliveries: Number(paused.pendingDeliveries),
      queueSize: Number(paused.queueSize),
      resumeBelow: Number(paused.resumeBelow),
      pendingBatches: this.spool?.pendingBatches ?? 0,
    });
  }

  private applyConfig(snapshot: ConfigSnapshot): void {
    const version = Number(snapshot.version);
    if (version <= this.configVersion) {
      this.logger.debug({ version, held: this.configVersion }, "uplink: config snapshot not newer; kept the held one");
      return;
    }
    this.config = snapshot;
    this.configVersion = version;
    this.logger.info({ version, wantedEventTypes: snapshot.wantedEventTypes }, "uplink: config snapshot applied");
    try {
      this.options.onConfig?.(snapshot);
    } catch (error) {
      this.logger.error({ err: error, version }, "uplink: onConfig callback threw");
    }
  }

  /** Sends unacked batches in seq order while the window and the stream's buffer allow. */
  private async pump(): Promise<void> {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        await this.sendWhileWindowOpen();
      } while (this.pumpAgain);
    } catch (error) {
      this.logger.error({ err: error }, "uplink: sending batches failed");
    } finally {
      this.pumping = false;
    }
  }

  private async sendWhileWindowOpen(): Promise<void> {
    const spool = this.spool;
    for (;;) {
      const stream = this.stream;
      const call = stream?.call;
      if (!spool || !call || !stream.writable || stream.inflight.length >= this.maxInflight) return;
      const seq = spool.nextAfter(Math.max(stream.sentSeq, spool.ackedSeq));
      if (seq === undefined) return;
      const read = spool.read(seq);
      // In memory (the usual case) without a turn of the event loop; from disk otherwise.
      const payload = read instanceof Promise ? await read : read;
      if (this.stream !== stream) continue;
      // Unreadable (damaged on disk): skipped; a later batch's ack covers its seq.
      stream.sentSeq = Math.max(stream.sentSeq, seq);
      if (!payload) continue;
      if (stream.inflight.length === 0) stream.lastProgressAt = Date.now();
      stream.inflight.push(seq);
      this.sentBatches++;
      stream.writable = call.writeFramed(batchFrame(payload));
      this.armAckTimer(stream);
    }
  }

  private armAckTimer(stream: ActiveStream): void {
    if (stream.ackTimer) return;
    const check = (): void => {
      stream.ackTimer = undefined;
      if (this.stream !== stream || stream.inflight.length === 0) return;
      const idle = Date.now() - stream.lastProgressAt;
      if (idle >= this.ackTimeoutMs) {
        this.logger.warn(
          { inflight: stream.inflight.length, waitedMs: idle, target: stream.target },
          "uplink: no ack from control plane in time; reconnecting",
        );
        stream.call?.cancel();
        return;
      }
      stream.ackTimer = setTimeout(check, this.ackTimeoutMs - idle);
    };
    stream.ackTimer = setTimeout(check, this.ackTimeoutMs);
  }

  private onStreamClosed(stream: ActiveStream, code: number, details: string): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    if (this.spool) this.spool.eager = true;
    const lived = Date.now() - stream.openedAt;
    this.dispose(stream);
    if (this.closed) return;
    const several = this.targets.length > 1;
    let delay: number;
    if (code === GrpcStatus.UNAUTHENTICATED || code === GrpcStatus.PERMISSION_DENIED) {
      delay = this.authBackoff.next();
      // PERMISSION_DENIED: the token is good but another org's (its details say whose).
      this.logger.error(
        {
          code: statusName(code),
          details,
          target: stream.target,
          retryInMs: delay,
          pendingBatches: this.spool?.pendingBatches ?? 0,
        },
        code === GrpcStatus.PERMISSION_DENIED
          ? "uplink: control plane refused this sidecar's --org for its token; events wait in the spool"
          : "uplink: control plane refused this sidecar's token; check --token and the control plane's auth.sidecar tokens",
      );
      if (several) this.targetIndex = (this.targetIndex + 1) % this.targets.length;
    } else if (!stream.established || (stream.inflight.length > 0 && lived < HEALTHY_STREAM_MS && several)) {
      // Refused, unreachable, or gone before acking: the next control plane, and a pause only
      // after every one of them failed in a row.
      this.failuresInRound++;
      const next = (this.targetIndex + 1) % this.targets.length;
      const roundDone = this.failuresInRound % this.targets.length === 0;
      delay = roundDone ? this.backoff.next() : 0;
      const fields = {
        code: statusName(code),
        details,
        target: stream.target,
        ...(several ? { next: this.targets[next] } : {}),
        retryInMs: delay,
        pendingBatches: this.spool?.pendingBatches ?? 0,
      };
      this.targetIndex = next;
      if (stream.established) this.logger.warn(fields, "uplink: stream to control plane ended; reconnecting");
      else this.unreachable.hit(fields);
    } else {
      if (lived >= HEALTHY_STREAM_MS) this.backoff.reset();
      delay = this.backoff.next();
      this.logger.warn(
        {
          code: statusName(code),
          details,
          target: stream.target,
          retryInMs: delay,
          pendingBatches: this.spool?.pendingBatches ?? 0,
        },
        "uplink: stream to control plane ended; reconnecting",
      );
    }
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private dispose(stream: ActiveStream): void {
    clearTimeout(stream.ackTimer);
    stream.call?.detach();
    stream.call?.cancel();
    stream.channel?.close();
  }
}

/**
 * A ConnectRequest carrying one batch, from the batch's encoded bytes (no re-encode), after
 * room for the gRPC message prefix: one copy of the batch on its way to the wire.
 */
function batchFrame(payload: Uint8Array): Buffer {
  let length = payload.length;
  const header = [BATCH_FIELD_TAG];
  while (length > 0x7f) {
    header.push((length & 0x7f) | 0x80);
    length = Math.floor(length / 128);
  }
  header.push(length);
  const frame = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + header.length + payload.length);
  for (let i = 0; i < header.length; i++) frame[GRPC_PREFIX_BYTES + i] = header[i]!;
  frame.set(payload, GRPC_PREFIX_BYTES + header.length);
  return frame;
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isInteger(value) || value <= 0)
    throw new Error(`uplink: ${name} must be a positive integer, got ${value}`);
  return value;
}

function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new Error(`uplink: ${name} must be >= 0, got ${value}`);
  return value;
}
