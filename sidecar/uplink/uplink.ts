import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { grpcClientConstructor, grpcTarget } from "../../common/grpc.js";
import type { Logger } from "../../common/logger.js";
import { USER_AGENT } from "../../common/version.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import {
  type ConfigSnapshot,
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  type IngestPaused,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { Backoff } from "./backoff.js";
import { RateLimitedWarning } from "../../common/rate-limited-warning.js";
import { loadOrCreateSidecarId } from "./sidecar-id.js";
import { Spool } from "./spool.js";

export interface UplinkOptions {
  /** The control plane's gRPC address: "host:port", "http://host:port" (h2c) or "https://host:port" (TLS). */
  target: string;
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
  /** How long the first event of a batch waits for company; default 20 ms. */
  batchMaxDelayMs?: number;
  /** Batches sent and not yet acked, at most; default 64. */
  maxInflightBatches?: number;
  /** Reconnect backoff; default 100 ms doubling to 10 s, with jitter. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Backoff after the control plane refused the token; default 2 s doubling to 60 s. */
  authRetryInitialMs?: number;
  authRetryMaxMs?: number;
  /** HTTP/2 keepalive pings; defaults 30 s and 10 s. */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** A stream whose in-flight batches see no ack for this long is dropped and redialled; default 30 s. */
  ackTimeoutMs?: number;
  /** fdatasync spool writes (default true). */
  spoolSync?: boolean;
  logger: Logger;
  /** Called with each applied (newer) config snapshot. */
  onConfig?: (snapshot: ConfigSnapshot) => void;
}

export interface UplinkStats {
  /** A stream to the control plane is open and has answered. */
  connected: boolean;
  /** Batch messages written to streams, re-sends included. */
  sentBatches: number;
  ackedSeq: number;
  /** The highest seq assigned to a batch. */
  lastSeq: number;
  /** Sealed batches not yet acked. */
  pendingBatches: number;
  /** Events published and not yet sealed into a batch. */
  bufferedEvents: number;
  spooledBytes: number;
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
  call: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>;
  client: grpc.Client;
  /** Highest seq written on this stream. */
  sentSeq: number;
  /** Seqs written on this stream and not yet acked, in order. */
  inflight: number[];
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

const IngestClient = grpcClientConstructor(IngestService);
// A stream that lived this long was a real connection: the next failure starts backoff afresh.
const HEALTHY_STREAM_MS = 10_000;

/** Where a sidecar keeps its spool unless told otherwise (`--spool DIR`). */
export function defaultSpoolDir(app: string, base = ".aigw"): string {
  return join(base, `spool-${app.replace(/[^A-Za-z0-9_.-]/g, "_") || "default"}`);
}

/**
 * The sidecar's link to the control plane (IngestService.Connect). `publish` only buffers;
 * a timer seals buffered events into seq-numbered batches in the on-disk spool, and one
 * bidi stream sends them in seq order, a bounded window at a time, until acked. Every
 * (re)connect says hello and re-sends what is unacked, so nothing is lost while the control
 * plane is away and nothing reaches the app: publish never throws and never waits.
 */
export class Uplink implements EventPublisher {
  private readonly options: UplinkOptions;
  private readonly logger: Logger;
  private readonly batchMaxEvents: number;
  private readonly batchMaxDelayMs: number;
  private readonly maxInflight: number;
  private readonly maxBufferedEvents: number;
  private readonly ackTimeoutMs: number;
  private readonly backoff: Backoff;
  private readonly authBackoff: Backoff;
  private readonly drops: RateLimitedWarning;
  private readonly unreachable: RateLimitedWarning;
  private readonly backpressure: RateLimitedWarning;

  private spool: Spool | undefined;
  private sidecarId = "";
  private buffer: Event[] = [];
  private sealTimer: NodeJS.Timeout | undefined;
  private sealImmediate: NodeJS.Immediate | undefined;
  private stream: ActiveStream | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private pumping = false;
  private pumpAgain = false;
  private flushWaiters: FlushWaiter[] = [];
  private config: ConfigSnapshot | undefined;
  private configVersion = 0;
  private started = false;
  private closed = false;

  private sentBatches = 0;
  private dropped = 0;
  private connectAttempts = 0;

  constructor(options: UplinkOptions) {
    this.options = options;
    this.logger = options.logger;
    this.batchMaxEvents = positiveInteger(options.batchMaxEvents ?? 256, "batchMaxEvents");
    this.batchMaxDelayMs = nonNegative(options.batchMaxDelayMs ?? 20, "batchMaxDelayMs");
    this.maxInflight = positiveInteger(options.maxInflightBatches ?? 64, "maxInflightBatches");
    // Bounds memory before start() and if sealing ever falls behind within one tick.
    this.maxBufferedEvents = this.batchMaxEvents * 64;
    this.ackTimeoutMs = positiveInteger(options.ackTimeoutMs ?? 30_000, "ackTimeoutMs");
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
    if (!options.target) throw new Error("uplink: target (control plane address) is required");
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
    });
    if (this.closed) {
      await spool.close();
      return;
    }
    this.spool = spool;
    this.seal();
    this.connect();
  }

  /** Queues an event for the control plane. Synchronous and O(1); never throws. */
  publish(event: Event): void {
    try {
      if (this.closed) {
        this.countDropped(1, "closed");
        return;
      }
      if (this.buffer.length >= this.maxBufferedEvents) {
        this.countDropped(1, "buffer full");
        return;
      }
      this.buffer.push(event);
      if (this.buffer.length >= this.batchMaxEvents) {
        this.sealImmediate ??= setImmediate(() => this.seal());
      } else if (!this.sealTimer && !this.sealImmediate) {
        this.sealTimer = setTimeout(() => this.seal(), this.batchMaxDelayMs);
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
    this.seal();
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
   * Seals what is buffered into the spool, stops the stream and closes the spool. Unacked
   * batches stay on disk for the next start; call flush() first to send them now.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.seal();
    // Published before start() finished: nowhere durable to put them.
    if (this.buffer.length > 0) this.countDropped(this.buffer.splice(0).length, "closed before start");
    this.closed = true;
    clearTimeout(this.sealTimer);
    clearTimeout(this.reconnectTimer);
    if (this.sealImmediate) clearImmediate(this.sealImmediate);
    for (const waiter of this.flushWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("uplink: closed before the flush completed"));
    }
    const stream = this.stream;
    this.stream = undefined;
    if (stream) this.dispose(stream);
    await this.spool?.close();
  }

  stats(): UplinkStats {
    const spool = this.spool;
    return {
      connected: this.stream?.established ?? false,
      sentBatches: this.sentBatches,
      ackedSeq: spool?.ackedSeq ?? 0,
      lastSeq: spool?.lastSeq ?? 0,
      pendingBatches: spool?.pendingBatches ?? 0,
      bufferedEvents: this.buffer.length,
      spooledBytes: spool?.bytes ?? 0,
      dropped: this.dropped,
      configVersion: this.configVersion,
      connectAttempts: this.connectAttempts,
    };
  }

  private seal(): void {
    clearTimeout(this.sealTimer);
    this.sealTimer = undefined;
    if (this.sealImmediate) clearImmediate(this.sealImmediate);
    this.sealImmediate = undefined;
    const spool = this.spool;
    if (!spool || this.buffer.length === 0) return;
    const buffered = this.buffer;
    this.buffer = [];
    for (let start = 0; start < buffered.length; start += this.batchMaxEvents) {
      const events = buffered.slice(start, start + this.batchMaxEvents);
      if (!spool.append(events)) this.countDropped(events.length, "spool full");
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
    const { address, credentials } = channelTarget(this.options.target);
    const client = new IngestClient(address, credentials, {
      "grpc.keepalive_time_ms": this.options.keepaliveTimeMs ?? 30_000,
      "grpc.keepalive_timeout_ms": this.options.keepaliveTimeoutMs ?? 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.primary_user_agent": USER_AGENT,
      // A fresh channel per attempt dials at once: this class's backoff, not the channel's, paces retries.
      "grpc.use_local_subchannel_pool": 1,
    });
    const metadata = new grpc.Metadata();
    if (this.options.token) metadata.set("authorization", `Bearer ${this.options.token}`);
    const call = (
      client as unknown as {
        connect(metadata: grpc.Metadata): grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>;
      }
    ).connect(metadata);
    const now = Date.now();
    const stream: ActiveStream = {
      call,
      client,
      sentSeq: spool.ackedSeq,
      inflight: [],
      established: false,
      writable: true,
      lastProgressAt: now,
      openedAt: now,
    };
    this.stream = stream;
    call.on("metadata", () => this.markEstablished(stream));
    call.on("data", (response: ConnectResponse) => this.onResponse(stream, response));
    call.on("error", (error: grpc.ServiceError) => this.onStreamClosed(stream, error.code, error.details));
    call.on("status", (status: grpc.StatusObject) => this.onStreamClosed(stream, status.code, status.details));
    call.on("drain", () => {
      stream.writable = true;
      void this.pump();
    });
    call.write(
      create(ConnectRequestSchema, {
        message: {
          case: "hello",
          value: {
            sidecarId: this.sidecarId,
            orgId: this.options.orgId,
            app: this.options.app,
            version: this.options.version,
            configVersion: BigInt(this.configVersion),
          },
        },
      }),
    );
    void this.pump();
  }

  private markEstablished(stream: ActiveStream): void {
    if (stream.established || this.stream !== stream) return;
    stream.established = true;
    this.logger.info(
      { target: this.options.target, sidecarId: this.sidecarId, pendingBatches: this.spool?.pendingBatches ?? 0 },
      "uplink: connected to control plane",
    );
  }

  private onResponse(stream: ActiveStream, response: ConnectResponse): void {
    if (this.stream !== stream) return;
    this.markEstablished(stream);
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
    spool.ack(seq);
    const acked = spool.ackedSeq;
    while ((stream.inflight[0] ?? Number.POSITIVE_INFINITY) <= acked) stream.inflight.shift();
    // An ack may cover batches a previous stream sent: do not send those again.
    stream.sentSeq = Math.max(stream.sentSeq, acked);
    stream.lastProgressAt = Date.now();
    this.backoff.reset();
    this.authBackoff.reset();
    for (const waiter of this.flushWaiters.filter((w) => w.target <= acked)) {
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
    this.flushWaiters = this.flushWaiters.filter((w) => w.target > acked);
    void this.pump();
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
      if (!spool || !stream?.writable || stream.inflight.length >= this.maxInflight) return;
      const seq = spool.nextAfter(Math.max(stream.sentSeq, spool.ackedSeq));
      if (seq === undefined) return;
      const batch = await spool.read(seq);
      if (this.stream !== stream) continue;
      // Unreadable (damaged on disk): skipped; a later batch's ack covers its seq.
      stream.sentSeq = Math.max(stream.sentSeq, seq);
      if (!batch) continue;
      if (stream.inflight.length === 0) stream.lastProgressAt = Date.now();
      stream.inflight.push(seq);
      this.sentBatches++;
      stream.writable = stream.call.write(create(ConnectRequestSchema, { message: { case: "batch", value: batch } }));
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
          { inflight: stream.inflight.length, waitedMs: idle },
          "uplink: no ack from control plane in time; reconnecting",
        );
        stream.call.cancel();
        return;
      }
      stream.ackTimer = setTimeout(check, this.ackTimeoutMs - idle);
    };
    stream.ackTimer = setTimeout(check, this.ackTimeoutMs);
  }

  private onStreamClosed(stream: ActiveStream, code: grpc.status, details: string): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    const lived = Date.now() - stream.openedAt;
    this.dispose(stream);
    if (this.closed) return;
    let delay: number;
    if (code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED) {
      delay = this.authBackoff.next();
      this.logger.error(
        { code: grpc.status[code], details, target: this.options.target, retryInMs: delay },
        "uplink: control plane refused this sidecar's token; check --token and the control plane's auth.sidecar tokens",
      );
    } else {
      if (stream.established && lived >= HEALTHY_STREAM_MS) this.backoff.reset();
      delay = this.backoff.next();
      const fields = {
        code: grpc.status[code] ?? code,
        details,
        target: this.options.target,
        retryInMs: delay,
        pendingBatches: this.spool?.pendingBatches ?? 0,
      };
      if (stream.established) this.logger.warn(fields, "uplink: stream to control plane ended; reconnecting");
      else this.unreachable.hit(fields);
    }
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private dispose(stream: ActiveStream): void {
    clearTimeout(stream.ackTimer);
    stream.call.removeAllListeners("data");
    stream.call.removeAllListeners("drain");
    // Late errors from the cancelled call must still find a listener.
    stream.call.on("error", () => {});
    stream.call.cancel();
    stream.client.close();
  }
}

function channelTarget(target: string): { address: string; credentials: grpc.ChannelCredentials } {
  if (/^https:\/\//i.test(target)) {
    return {
      address: target.replace(/^https:\/\//i, "").replace(/\/+$/, ""),
      credentials: grpc.credentials.createSsl(),
    };
  }
  return { address: grpcTarget(target), credentials: grpc.credentials.createInsecure() };
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
