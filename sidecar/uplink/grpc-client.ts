import * as http2 from "node:http2";

/**
 * The few parts of gRPC over HTTP/2 (grpc/grpc PROTOCOL-HTTP2.md) that the uplink uses: one
 * connection, one bidi call with length-prefixed protobuf messages the caller encodes and
 * decodes itself, metadata headers, status from trailers (or a trailers-only response),
 * keepalive pings and TLS. It replaces a general gRPC client whose code cost the sidecar
 * more memory than the rest of its uplink.
 */

/** gRPC status codes (the names are what logs show). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const STATUS_NAMES = Object.fromEntries(Object.entries(GrpcStatus).map(([name, code]) => [code, name])) as Record<
  number,
  string
>;

/** "UNAVAILABLE" for 14; the number itself for a code outside the spec. */
export function statusName(code: number): string | number {
  return STATUS_NAMES[code] ?? code;
}

export interface CallStatus {
  code: number;
  details: string;
}

/** Each message on the wire: a compressed flag byte and a 4-byte big-endian length. */
export const GRPC_PREFIX_BYTES = 5;

/** A received message larger than this ends the call (RESOURCE_EXHAUSTED), as gRPC clients do by default. */
const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

export interface ChannelOptions {
  /** "host:port", "http://host:port" (cleartext HTTP/2) or "https://host:port" (TLS). */
  target: string;
  /** The HTTP/2 handshake (and TLS) must finish within this long. */
  connectTimeoutMs: number;
  /** A ping this often while connected; a ping unanswered for keepaliveTimeoutMs drops the connection. */
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  userAgent: string;
  /** Extra trusted certificates for an https target (default: Node's roots, NODE_EXTRA_CA_CERTS included). */
  ca?: string | Buffer | undefined;
}

/** Where to connect: the URL for node:http2 and whether it is TLS. A missing port is gRPC's default, 443. */
export function parseTarget(target: string): { url: string; tls: boolean; authority: string } {
  const tls = /^https:\/\//i.test(target);
  const hostPort = target
    .replace(/^(grpc|http|https|h2c):\/\//i, "")
    .replace(/\/+$/, "")
    .trim();
  const hasPort = /:\d+$/.test(hostPort) && (!hostPort.startsWith("[") || /\]:\d+$/.test(hostPort));
  const authority = hasPort ? hostPort : `${hostPort}:443`;
  return { url: `${tls ? "https" : "http"}://${authority}`, tls, authority };
}

/**
 * One HTTP/2 connection to a gRPC server. `connect` reports once: undefined when the server's
 * HTTP/2 settings arrived (it speaks HTTP/2, and TLS was verified), or what went wrong:
 * refused, a TLS failure, closed, or silent past the connect timeout. `onClose` reports
 * once when a connection that was up goes away.
 */
export class GrpcChannel {
  private readonly options: ChannelOptions;
  /** Undefined when no connection could even be started (the target is not a usable address). */
  private readonly session: http2.ClientHttp2Session | undefined;
  private readonly authority: string;
  private readonly scheme: string;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private ready = false;
  private readonly calls = new Set<BidiCall>();

  constructor(options: ChannelOptions, onConnect: (problem: string | undefined) => void) {
    this.options = options;
    const { url, tls, authority } = parseTarget(options.target);
    this.authority = authority;
    this.scheme = tls ? "https" : "http";
    let session: http2.ClientHttp2Session;
    try {
      session = http2.connect(url, tls && options.ca !== undefined ? { ca: options.ca } : {});
    } catch (error) {
      // A target no URL can be made of ("bad host:1"): unreachable, said why, never thrown.
      const problem = `cannot connect to "${options.target}": ${(error as Error).message}`;
      this.session = undefined;
      this.closed = true;
      setImmediate(() => onConnect(problem));
      return;
    }
    this.session = session;
    let settled = false;
    const settle = (problem: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(this.connectTimer);
      if (problem === undefined) {
        this.ready = true;
        this.armKeepalive();
      } else {
        this.close();
      }
      onConnect(problem);
    };
    this.connectTimer = setTimeout(
      () => settle(`no answer within ${options.connectTimeoutMs} ms`),
      options.connectTimeoutMs,
    );
    session.once("remoteSettings", () => settle(undefined));
    session.on("error", (error: Error) => {
      settle(error.message);
      this.failCalls(GrpcStatus.UNAVAILABLE, error.message);
    });
    session.once("goaway", (code: number) => {
      // Calls already open finish; a new call would be refused.
      if (!settled) settle(`connection refused by the server (GOAWAY ${code})`);
    });
    session.once("close", () => {
      settle("connection closed before the HTTP/2 handshake");
      this.closed = true;
      clearTimeout(this.keepaliveTimer);
      this.failCalls(GrpcStatus.UNAVAILABLE, "connection to the control plane closed");
    });
  }

  get isReady(): boolean {
    const session = this.session;
    return this.ready && !this.closed && session !== undefined && !session.closed && !session.destroyed;
  }

  /** Opens a bidi call; messages are the caller's encoded bytes. */
  openBidi(path: string, metadata: Record<string, string>, listener: CallListener): BidiCall {
    const headers: http2.OutgoingHttpHeaders = {
      ":method": "POST",
      ":scheme": this.scheme,
      ":path": path,
      ":authority": this.authority,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "user-agent": this.options.userAgent,
      "grpc-accept-encoding": "identity",
      ...metadata,
    };
    const call = new BidiCall(listener, () => this.calls.delete(call));
    this.calls.add(call);
    try {
      if (!this.session) throw new Error("not connected");
      call.attach(this.session.request(headers, { endStream: false }));
    } catch (error) {
      call.fail(GrpcStatus.UNAVAILABLE, (error as Error).message);
    }
    return call;
  }

  /** Cancels open calls and closes the connection at once. */
  close(): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.keepaliveTimer);
    for (const call of [...this.calls]) call.cancel();
    this.closed = true;
    if (this.session && !this.session.destroyed) this.session.destroy();
  }

  private failCalls(code: number, details: string): void {
    for (const call of [...this.calls]) call.fail(code, details);
  }

  private armKeepalive(): void {
    const { keepaliveTimeMs, keepaliveTimeoutMs } = this.options;
    const tick = (): void => {
      const session = this.session;
      if (this.closed || !session || session.destroyed) return;
      let answered = false;
      const timeout = setTimeout(() => {
        if (answered) return;
        this.failCalls(GrpcStatus.UNAVAILABLE, `keepalive ping unanswered within ${keepaliveTimeoutMs} ms`);
        this.close();
      }, keepaliveTimeoutMs);
      timeout.unref();
      try {
        session.ping((error) => {
          answered = true;
          clearTimeout(timeout);
          // An error here means the session is going away; its close reports that.
          if (!error) this.scheduleKeepalive(tick, keepaliveTimeMs);
        });
      } catch {
        clearTimeout(timeout);
      }
    };
    this.scheduleKeepalive(tick, keepaliveTimeMs);
  }

  private scheduleKeepalive(tick: () => void, ms: number): void {
    this.keepaliveTimer = setTimeout(tick, ms);
    this.keepaliveTimer.unref();
  }
}

export interface CallListener {
  /** One received message's bytes. */
  onMessage(message: Uint8Array): void;
  /** Once, when the call ends for any reason. */
  onStatus(status: CallStatus): void;
  /** The call's send buffer drained after write() returned false. */
  onDrain(): void;
}

/** One bidi call: write() frames a message; the listener hears messages, drains and the final status. */
export class BidiCall {
  private listener: CallListener | undefined;
  private readonly onDone: () => void;
  private stream: http2.ClientHttp2Stream | undefined;
  private pending: Buffer | undefined;
  private headerStatus: CallStatus | undefined;
  private httpStatus = 0;
  private done = false;
  private cancelled = false;

  constructor(listener: CallListener, onDone: () => void) {
    this.listener = listener;
    this.onDone = onDone;
  }

  /** @internal */
  attach(stream: http2.ClientHttp2Stream): void {
    this.stream = stream;
    stream.on("response", (headers) => {
      this.httpStatus = Number(headers[":status"]);
      // A trailers-only response: the status comes with the headers.
      const status = statusFrom(headers);
      if (status) this.headerStatus = status;
      else if (this.httpStatus !== 200) this.fail(httpStatusCode(this.httpStatus), `HTTP status ${this.httpStatus}`);
      else if (!String(headers["content-type"] ?? "").startsWith("application/grpc"))
        this.fail(GrpcStatus.UNKNOWN, `not a gRPC response (content-type ${String(headers["content-type"])})`);
    });
    stream.on("trailers", (trailers) => {
      const status = statusFrom(trailers) ?? {
        code: GrpcStatus.UNKNOWN,
        details: "the server ended the call without a grpc-status",
      };
      this.finish(status);
    });
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("drain", () => this.listener?.onDrain());
    stream.on("error", () => {
      // Reported by "close" with the stream's reset code.
    });
    stream.on("close", () => {
      if (this.headerStatus) this.finish(this.headerStatus);
      else if (this.cancelled) this.finish({ code: GrpcStatus.CANCELLED, details: "cancelled by the client" });
      else this.finish(resetStatus(stream.rstCode));
    });
  }

  /** Sends one message; false when the send buffer is full (wait for onDrain). */
  write(message: Uint8Array): boolean {
    const frame = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + message.length);
    frame.set(message, GRPC_PREFIX_BYTES);
    return this.writeFramed(frame);
  }

  /**
   * Sends one message already placed after GRPC_PREFIX_BYTES unused bytes at the start of
   * `frame` (the prefix is written there): no copy of the message.
   */
  writeFramed(frame: Buffer): boolean {
    const stream = this.stream;
    if (!stream || this.done || stream.destroyed) return false;
    frame[0] = 0;
    frame.writeUInt32BE(frame.length - GRPC_PREFIX_BYTES, 1);
    return stream.write(frame);
  }

  /** Ends the call now (RST_STREAM CANCEL); the listener hears CANCELLED. */
  cancel(): void {
    this.cancelled = true;
    const stream = this.stream;
    if (stream && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
    else this.finish({ code: GrpcStatus.CANCELLED, details: "cancelled by the client" });
  }

  /** Stops reporting to the listener (the call itself is left as it is). */
  detach(): void {
    this.listener = undefined;
  }

  /** @internal Ends the call with this status, resetting the stream. */
  fail(code: number, details: string): void {
    if (this.done) return;
    const stream = this.stream;
    this.finish({ code, details });
    if (stream && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  private onData(chunk: Buffer): void {
    let buffer = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    while (!this.done && buffer.length >= 5) {
      const compressed = buffer[0];
      const length = buffer.readUInt32BE(1);
      if (compressed !== 0) {
        this.fail(GrpcStatus.INTERNAL, "the server sent a compressed message; none was offered");
        return;
      }
      if (length > MAX_RECEIVE_BYTES) {
        this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `received a message of ${length} bytes (limit ${MAX_RECEIVE_BYTES})`);
        return;
      }
      if (buffer.length < 5 + length) break;
      const message = buffer.subarray(5, 5 + length);
      buffer = buffer.subarray(5 + length);
      this.listener?.onMessage(message);
    }
    if (buffer.length > 0 && !this.done) this.pending = Buffer.from(buffer);
  }

  private finish(status: CallStatus): void {
    if (this.done) return;
    this.done = true;
    this.pending = undefined;
    this.onDone();
    const listener = this.listener;
    this.listener = undefined;
    listener?.onStatus(status);
  }
}

function statusFrom(headers: http2.IncomingHttpHeaders): CallStatus | undefined {
  const raw = headers["grpc-status"];
  if (raw === undefined) return undefined;
  const code = Number(raw);
  const message = headers["grpc-message"];
  return {
    code: Number.isInteger(code) && code >= 0 ? code : GrpcStatus.UNKNOWN,
    details: typeof message === "string" ? decodeGrpcMessage(message) : "",
  };
}

/** The spec's percent-decoding of grpc-message; a malformed escape is kept as written. */
export function decodeGrpcMessage(value: string): string {
  if (!value.includes("%")) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** HTTP status → gRPC code, as the spec maps a response that is not gRPC. */
function httpStatusCode(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** A stream reset without a status → gRPC code, per the spec's RST_STREAM table. */
function resetStatus(rstCode: number | undefined): CallStatus {
  const c = http2.constants;
  switch (rstCode) {
    case c.NGHTTP2_REFUSED_STREAM:
      return { code: GrpcStatus.UNAVAILABLE, details: "the server refused the stream" };
    case c.NGHTTP2_CANCEL:
      return { code: GrpcStatus.CANCELLED, details: "the server cancelled the stream" };
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return { code: GrpcStatus.RESOURCE_EXHAUSTED, details: "the server asked to slow down (ENHANCE_YOUR_CALM)" };
    case c.NGHTTP2_INADEQUATE_SECURITY:
      return { code: GrpcStatus.PERMISSION_DENIED, details: "inadequate security for HTTP/2" };
    case undefined:
    case c.NGHTTP2_NO_ERROR:
      return { code: GrpcStatus.UNAVAILABLE, details: "the stream ended without a status" };
    default:
      return { code: GrpcStatus.INTERNAL, details: `the stream was reset (HTTP/2 error ${rstCode})` };
  }
}
