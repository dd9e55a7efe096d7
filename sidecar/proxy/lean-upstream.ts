import { connect as connectTcp, isIP, type Socket } from "node:net";
import type { Readable } from "node:stream";
import { type ConnectionOptions, connect as connectTls } from "node:tls";
import {
  COALESCE_BYTES,
  HEADER_CONTROL,
  HEADER_TOKEN,
  headerLinesValid,
  isNamed,
  LENGTH_DIGITS,
  valueAt,
  withHead,
} from "./headers.js";
import { READ_BUFFER, readBytes } from "./read-buffer.js";
import { turnWrites } from "./turn-writes.js";

/**
 * The proxy's upstream client on raw node:net/tls sockets, in place of undici's Pool for the
 * lean engine. It calls the same dispatch handler (the Exchange) the same way undici does:
 * onConnect(abort), onHeaders(status, rawHeaders, resume, statusText), onData, onComplete,
 * onError. It writes the request as undici does (host, connection: keep-alive, the headers
 * given, then content-length or chunked framing), parses the response head in JS, and hands
 * the body on as it arrives (de-chunked). Sockets are kept alive and reused; an idle socket
 * lives as long as the upstream's Keep-Alive hint allows (less a margin), else 30 s.
 *
 * No timer is made or cleared per request: a socket's timeout is set when its value changes
 * (the headers and body timeouts are the same in the proxy, so once per socket), node
 * refreshes it on every read and write; idle sockets are checked for expiry when taken, and
 * closed by one sweep per pool each second.
 */

export interface LeanDispatch {
  path: string;
  method: string;
  /** Flat [name, value, …] list without host, connection and transfer-encoding. */
  headers: string[];
  body: Buffer | Readable | null;
}

export interface LeanDispatchHandler {
  onConnect(abort: (err?: Error) => void): void;
  onHeaders(statusCode: number, rawHeaders: string[], resume: () => void, statusText: string): boolean;
  onData(chunk: Buffer): boolean;
  onComplete(trailers: string[] | null): void;
  onError(err: Error): void;
}

export interface LeanPoolOptions {
  /** No response head this long after the request was sent → UND_ERR_HEADERS_TIMEOUT. */
  headersTimeout: number;
  /** No body bytes this long → UND_ERR_BODY_TIMEOUT. */
  bodyTimeout: number;
  keepAliveTimeout: number;
  keepAliveMaxTimeout: number;
  /** A connection (TCP, and the TLS handshake for https) not up this long → UND_ERR_CONNECT_TIMEOUT; 0 for none. */
  connectTimeout: number;
  /** Extra TLS options for https origins (e.g. a private CA). */
  tls?: ConnectionOptions;
}

const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;
const KEEP_ALIVE_MARGIN_MS = 2000;
/** How often a pool closes its idle sockets past their keep-alive time. */
const IDLE_SWEEP_MS = 1000;
const CRLF2 = Buffer.from("\r\n\r\n");
/** What every status line starts with: a response that starts otherwise is refused at its first bytes, as llhttp does. */
const HTTP_1 = Buffer.from("HTTP/1.");
/** undici's TCP keep-alive probe delay for its sockets. */
const TCP_KEEP_ALIVE_MS = 60_000;
const KEEP_ALIVE_TIMEOUT = /timeout=(\d+)/i;
const CHUNKED_LAST = /(?:^|,)\s*chunked\s*$/i;
const CLOSE_TOKEN = /(?:^|,)\s*close\s*(?:,|$)/i;

function codedError(message: string, code: string, name: string, cause?: unknown): Error {
  const err = new Error(message, cause === undefined ? undefined : { cause });
  err.name = name;
  (err as { code?: string }).code = code;
  return err;
}

/** As undici's HTTPParserError for what llhttp refuses (no code; the reason in llhttp's words where they are known). */
function parserError(reason: string): Error {
  const err = new Error(`Response does not match the HTTP/1.1 protocol (${reason})`);
  err.name = "HTTPParserError";
  return err;
}

function headersOverflow(): Error {
  return codedError("Headers Overflow Error", "UND_ERR_HEADERS_OVERFLOW", "HeadersOverflowError");
}

export class LeanPool {
  private readonly idle: UpstreamSocket[] = [];
  private readonly all = new Set<UpstreamSocket>();
  readonly secure: boolean;
  private readonly hostname: string;
  private readonly port: number;
  private readonly hostHeader: string;
  private closed = false;
  private readonly sweep: NodeJS.Timeout;

  constructor(
    origin: string,
    private readonly options: LeanPoolOptions,
  ) {
    const url = new URL(origin);
    this.secure = url.protocol === "https:";
    this.hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
    this.port = url.port === "" ? (this.secure ? 443 : 80) : Number(url.port);
    this.hostHeader = url.host;
    this.sweep = setInterval(this.closeExpired, IDLE_SWEEP_MS);
    this.sweep.unref();
  }

  /** Idle sockets past their keep-alive time are closed (the upstream may close them any moment now). */
  private readonly closeExpired = (): void => {
    const idle = this.idle;
    if (idle.length === 0) return;
    const now = Date.now();
    for (let i = idle.length - 1; i >= 0; i--) {
      const socket = idle[i]!;
      if (socket.idleUntil <= now) socket.destroy();
    }
  };

  dispatch(request: LeanDispatch, handler: LeanDispatchHandler): boolean {
    if (this.closed) {
      handler.onError(codedError("The client is destroyed", "UND_ERR_DESTROYED", "ClientDestroyedError"));
      return false;
    }
    new UpstreamRequest(this, request, handler).start(this.take());
    return true;
  }

  /** An idle kept-alive socket, or undefined. */
  private take(): UpstreamSocket | undefined {
    let now = 0;
    for (;;) {
      const socket = this.idle.pop();
      if (socket === undefined) return undefined;
      if (now === 0) now = Date.now();
      if (socket.usable() && socket.idleUntil > now) {
        socket.leaveIdle();
        return socket;
      }
      socket.destroy();
    }
  }

  open(): UpstreamSocket {
    let socket: UpstreamSocket | undefined;
    const raw = this.secure
      ? connectTls({
          ...this.options.tls,
          host: this.hostname,
          port: this.port,
          servername: isIP(this.hostname) === 0 ? this.hostname : undefined,
          ALPNProtocols: ["http/1.1"],
        })
      : connectTcp({
          host: this.hostname,
          port: this.port,
          // Plain TCP reads into the proxy's one read buffer (read-buffer.ts); TLS sockets read as streams do.
          onread: {
            buffer: READ_BUFFER,
            callback: (bytes) => {
              socket?.received(readBytes(bytes));
              return true;
            },
          },
        });
    raw.setNoDelay(true);
    raw.setKeepAlive(true, TCP_KEEP_ALIVE_MS);
    socket = new UpstreamSocket(raw, this);
    this.all.add(socket);
    if (this.options.connectTimeout > 0)
      socket.startConnectTimer(this.options.connectTimeout, this.hostname, this.port);
    return socket;
  }

  release(socket: UpstreamSocket, idleMs: number): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.enterIdle(Math.min(idleMs, this.options.keepAliveMaxTimeout));
    this.idle.push(socket);
  }

  forget(socket: UpstreamSocket): void {
    this.all.delete(socket);
    const at = this.idle.indexOf(socket);
    if (at !== -1) this.idle.splice(at, 1);
  }

  get host(): string {
    return this.hostHeader;
  }

  get timeouts(): LeanPoolOptions {
    return this.options;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweep);
    for (const socket of this.idle.splice(0)) socket.destroy();
    // Requests in flight finish on their own sockets, which are then closed.
    while (this.all.size > 0) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  /** Closes every socket now. */
  destroy(): void {
    this.closed = true;
    clearInterval(this.sweep);
    for (const socket of this.all) socket.destroy();
  }
}

/** One socket to the upstream and the request it currently carries. */
class UpstreamSocket {
  request: UpstreamRequest | undefined;
  connected = false;
  reused = false;
  /** While idle: when its keep-alive time ends (Date.now() ms). */
  idleUntil = 0;
  /** The socket's timeout as last set (node keeps it and refreshes it on every read and write). */
  private timeoutMs = 0;
  private connectTimer: NodeJS.Timeout | undefined;
  private gone = false;

  constructor(
    readonly raw: Socket,
    private readonly pool: LeanPool,
  ) {
    raw.on(pool.secure ? "secureConnect" : "connect", this.onConnect);
    if (pool.secure) raw.on("data", this.received);
    raw.on("end", this.onEnd);
    raw.on("error", this.onError);
    raw.on("close", this.onClose);
    raw.on("timeout", this.onTimeout);
    raw.on("drain", this.onDrain);
  }

  usable(): boolean {
    return !this.gone && !this.raw.destroyed && this.raw.writable;
  }

  /** Back in the pool; its timeout stays set (a 'timeout' with no request is ignored). */
  enterIdle(ms: number): void {
    this.request = undefined;
    this.idleUntil = Date.now() + ms;
  }

  leaveIdle(): void {
    this.reused = true;
  }

  /** Sets the socket's timeout when it differs from the one set (a timer operation saved per request). */
  setTimeout(ms: number): void {
    if (ms === this.timeoutMs) return;
    this.timeoutMs = ms;
    this.raw.setTimeout(ms);
  }

  /** Sets the socket's timeout again even if unchanged: node does not re-arm one that fired until the next read or write. */
  rearmTimeout(ms: number): void {
    this.timeoutMs = ms;
    this.raw.setTimeout(ms);
  }

  destroy(err?: Error): void {
    this.gone = true;
    this.raw.destroy(err);
  }

  /** As undici's connector: not connected (TLS handshake included) in time → destroyed with UND_ERR_CONNECT_TIMEOUT. */
  startConnectTimer(ms: number, hostname: string, port: number): void {
    this.connectTimer = setTimeout(() => {
      this.connectTimer = undefined;
      if (this.connected || this.gone) return;
      const attempted = (this.raw as { autoSelectFamilyAttemptedAddresses?: unknown })
        .autoSelectFamilyAttemptedAddresses;
      const where = Array.isArray(attempted)
        ? `attempted addresses: ${attempted.join(", ")}`
        : `attempted address: ${hostname}:${port}`;
      const err = codedError(
        `Connect Timeout Error (${where}, timeout: ${ms}ms)`,
        "UND_ERR_CONNECT_TIMEOUT",
        "ConnectTimeoutError",
      );
      this.lastError = err;
      this.destroy(err);
    }, ms);
  }

  private readonly onConnect = (): void => {
    this.connected = true;
    if (this.connectTimer !== undefined) {
      clearTimeout(this.connectTimer);
      this.connectTimer = undefined;
    }
    this.request?.socketReady();
  };

  readonly received = (chunk: Buffer): void => {
    const request = this.request;
    if (request === undefined) {
      // Bytes nobody asked for: the connection's state is unknown.
      this.destroy();
      return;
    }
    try {
      request.read(chunk);
    } catch (err) {
      // Whatever the upstream sent, it must not become an uncaught exception: the request
      // fails (502, or a cut response) and this socket is closed.
      request.failWith(err);
      this.destroy();
    }
  };

  private readonly onEnd = (): void => {
    this.gone = true;
    this.request?.upstreamEnded();
    this.raw.destroy();
  };

  private lastError: Error | undefined;

  private readonly onError = (err: Error): void => {
    this.lastError ??= err;
  };

  private readonly onClose = (): void => {
    this.gone = true;
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.pool.forget(this);
    const request = this.request;
    this.request = undefined;
    request?.socketClosed(this.lastError);
  };

  private readonly onTimeout = (): void => {
    this.request?.timedOut();
  };

  private readonly onDrain = (): void => {
    this.request?.drained();
  };
}

enum Phase {
  Head,
  Body,
  Done,
}

enum Body {
  None,
  Length,
  Chunked,
  UntilClose,
}

enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailer,
}

class UpstreamRequest {
  private socket: UpstreamSocket | undefined;
  private phase = Phase.Head;
  private head: Buffer | undefined;
  private body = Body.None;
  private remaining = 0;
  private chunk = Chunk.Size;
  private line = "";
  private keepAlive = true;
  private keepAliveMs: number;
  private bodySent = false;
  private paused = false;
  private finished = false;
  private aborted = false;
  private gotBytes = false;
  private retried = false;

  constructor(
    private readonly pool: LeanPool,
    private readonly request: LeanDispatch,
    private readonly handler: LeanDispatchHandler,
  ) {
    this.keepAliveMs = pool.timeouts.keepAliveTimeout;
  }

  start(idle: UpstreamSocket | undefined): void {
    this.handler.onConnect(this.abort);
    if (this.finished) return;
    this.attach(idle ?? this.pool.open());
  }

  private attach(socket: UpstreamSocket): void {
    this.socket = socket;
    socket.request = this;
    socket.setTimeout(this.pool.timeouts.headersTimeout);
    if (socket.connected || socket.reused) this.send();
  }

  socketReady(): void {
    if (!this.finished) this.send();
  }

  private readonly abort = (err?: Error): void => {
    if (this.finished) return;
    this.aborted = true;
    const reason = err ?? codedError("Request aborted", "UND_ERR_ABORTED", "RequestAbortedError");
    this.fail(reason);
  };

  private send(): void {
    const socket = this.socket!;
    const raw = socket.raw;
    const { method, path, headers, body } = this.request;
    // As undici: a HEAD response's framing cannot be trusted for reuse, so its socket closes.
    if (method === "HEAD") this.keepAlive = false;
    let head = `${method} ${path} HTTP/1.1\r\nhost: ${this.pool.host}\r\nconnection: ${method === "HEAD" ? "close" : "keep-alive"}\r\n`;
    let declaredLength = -1;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      if (isNamed(name, "content-length")) {
        declaredLength = Number(value);
        continue;
      }
      if (HEADER_CONTROL.test(value) || !HEADER_TOKEN.test(name)) {
        this.fail(codedError(`invalid ${name} header`, "UND_ERR_INVALID_ARG", "InvalidArgumentError"));
        return;
      }
      head += `${name}: ${value}\r\n`;
    }
    const expectsPayload = method === "POST" || method === "PUT" || method === "PATCH" || method === "QUERY";
    if (body === null) {
      head += expectsPayload || declaredLength > 0 ? "content-length: 0\r\n\r\n" : "\r\n";
      turnWrites.write(raw, head, "latin1");
      this.bodySent = true;
    } else if (Buffer.isBuffer(body) && body.length <= COALESCE_BYTES) {
      turnWrites.write(raw, withHead(`${head}content-length: ${body.length}\r\n\r\n`, body));
      this.bodySent = true;
    } else if (Buffer.isBuffer(body)) {
      raw.cork();
      raw.write(`${head}content-length: ${body.length}\r\n\r\n`, "latin1");
      if (body.length > 0) raw.write(body);
      raw.uncork();
      this.bodySent = true;
    } else {
      this.sendStream(body, head, declaredLength);
    }
  }

  private sendStream(body: Readable, head: string, declaredLength: number): void {
    const raw = this.socket!.raw;
    const chunked = declaredLength < 0;
    raw.write(
      chunked ? `${head}transfer-encoding: chunked\r\n\r\n` : `${head}content-length: ${declaredLength}\r\n\r\n`,
      "latin1",
    );
    const onData = (chunk: Buffer): void => {
      if (this.finished || raw.destroyed) return;
      let ok: boolean;
      if (chunked) {
        raw.cork();
        raw.write(`${chunk.length.toString(16)}\r\n`, "latin1");
        raw.write(chunk);
        ok = raw.write("\r\n", "latin1");
        raw.uncork();
      } else {
        ok = raw.write(chunk);
      }
      if (!ok) {
        body.pause();
        this.bodyPaused = body;
      }
    };
    const onEnd = (): void => {
      cleanup();
      if (this.finished || raw.destroyed) return;
      if (chunked) raw.write("0\r\n\r\n", "latin1");
      this.bodySent = true;
      if (this.phase === Phase.Done) this.done();
    };
    const onError = (err: Error): void => {
      cleanup();
      this.fail(err);
    };
    const cleanup = (): void => {
      body.off("data", onData);
      body.off("end", onEnd);
      body.off("error", onError);
      this.bodyPaused = undefined;
    };
    body.on("data", onData);
    body.on("end", onEnd);
    body.on("error", onError);
    this.stopBody = cleanup;
  }

  private bodyPaused: Readable | undefined;
  private stopBody: (() => void) | undefined;

  drained(): void {
    const body = this.bodyPaused;
    this.bodyPaused = undefined;
    body?.resume();
  }

  read(chunk: Buffer): void {
    this.gotBytes = true;
    if (this.phase === Phase.Head) {
      const buffered: Buffer = this.head === undefined ? chunk : Buffer.concat([this.head, chunk]);
      if (this.head === undefined || this.head.length < HTTP_1.length) {
        // llhttp refuses a response at its first bytes that cannot start "HTTP/1.": so does this.
        const n = Math.min(buffered.length, HTTP_1.length);
        if (buffered.compare(HTTP_1, 0, n, 0, n) !== 0) {
          const at = buffered.compare(HTTP_1, 0, Math.min(n, 5), 0, Math.min(n, 5)) !== 0;
          this.fail(parserError(at ? "Expected HTTP/, RTSP/ or ICE/" : "Invalid HTTP version"));
          return;
        }
      }
      const end = buffered.indexOf(CRLF2);
      if (end === -1 || end + 4 > MAX_RESPONSE_HEAD_BYTES) {
        if (end !== -1 || buffered.length > MAX_RESPONSE_HEAD_BYTES) {
          this.fail(headersOverflow());
          return;
        }
        this.head = buffered;
        return;
      }
      this.head = undefined;
      const rest = buffered.subarray(end + 4);
      const socket = this.socket;
      if (!this.readHead(buffered.toString("latin1", 0, end))) return;
      if (rest.length === 0) return;
      if ((this.phase as Phase) !== Phase.Done) this.read(rest);
      // Bytes past a body-less response: the connection's state is unknown, no reuse.
      else socket?.destroy();
      return;
    }
    if (this.phase === Phase.Body) this.readBody(chunk);
    // Bytes past the response while the request body is still going up: no reuse.
    else this.keepAlive = false;
  }

  /** An exception while reading the response (a bug, or input no check foresaw): the request fails. */
  failWith(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    const code = (error as { code?: unknown }).code;
    this.fail(typeof code === "string" ? error : Object.assign(error, { code: "UND_ERR_SOCKET" }));
  }

  /** False when the head was informational (the next head is awaited) or bad. */
  private readHead(text: string): boolean {
    // Read in place: a line at a time by index (lines end at CRLF; a bare CR or LF is inside a
    // line), no split, no line strings, names compared without lower-cased copies (a head's
    // parse was a sixth of what the proxy allocated).
    const length = text.length;
    let eol = text.indexOf("\r\n");
    if (eol === -1) eol = length;
    const code = statusCode(text, eol);
    if (code === -1) {
      this.fail(parserError("Invalid response status"));
      return false;
    }
    const statusText = eol > 13 ? text.slice(13, eol) : "";
    const rawHeaders: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let hasTransferEncoding = false;
    let close = text.charCodeAt(7) === 0x30;
    // Every line checked in one pass; only a head that fails it is checked line by line.
    const linesValid = headerLinesValid(text, eol);
    while (eol < length) {
      const start = eol + 2;
      eol = text.indexOf("\r\n", start);
      if (eol === -1) eol = length;
      const colon = text.indexOf(":", start);
      const name = colon > start && colon < eol ? text.slice(start, colon) : "";
      if (name === "" || (!linesValid && !HEADER_TOKEN.test(name))) {
        this.fail(parserError("Invalid header token"));
        return false;
      }
      // The name is all token characters: a control character (a bare CR or LF included) can
      // only be in the value.
      const value = valueAt(text, colon + 1, eol, false);
      if (!linesValid && HEADER_CONTROL.test(value)) {
        this.fail(parserError("Invalid header value char"));
        return false;
      }
      switch (name.length) {
        case 14:
          if (isNamed(name, "content-length")) {
            const n = LENGTH_DIGITS.test(value) ? Number(value) : -2;
            if (n === -2 || (contentLength !== -1 && contentLength !== n)) {
              this.fail(parserError(n === -2 ? "Invalid character in Content-Length" : "Duplicate Content-Length"));
              return false;
            }
            contentLength = n;
          }
          break;
        case 17:
          if (isNamed(name, "transfer-encoding")) {
            hasTransferEncoding = true;
            chunked = CHUNKED_LAST.test(value);
          }
          break;
        case 10:
          if (isNamed(name, "connection")) {
            if (CLOSE_TOKEN.test(value)) close = true;
          } else if (isNamed(name, "keep-alive")) {
            const hint = KEEP_ALIVE_TIMEOUT.exec(value);
            if (hint) this.keepAliveMs = Math.max(0, Number(hint[1]) * 1000 - KEEP_ALIVE_MARGIN_MS);
          }
          break;
      }
      rawHeaders.push(name, value);
    }
    if (code < 200) {
      // 100 Continue, 103 Early Hints: the final head follows.
      if (code === 101) {
        this.fail(codedError("unexpected upgrade", "UND_ERR_SOCKET", "SocketError"));
        return false;
      }
      return true;
    }
    if (hasTransferEncoding && contentLength !== -1) {
      this.fail(parserError("Content-Length can't be present with Transfer-Encoding"));
      return false;
    }
    if (close) this.keepAlive = false;
    const noBody = this.request.method === "HEAD" || code === 204 || code === 304;
    if (noBody) this.body = Body.None;
    else if (hasTransferEncoding) this.body = chunked ? Body.Chunked : Body.UntilClose;
    else if (contentLength >= 0) this.body = contentLength === 0 ? Body.None : Body.Length;
    else this.body = Body.UntilClose;
    if (this.body === Body.UntilClose) this.keepAlive = false;
    this.remaining = contentLength;
    this.phase = Phase.Body;
    this.socket!.setTimeout(this.pool.timeouts.bodyTimeout);
    const go = this.handler.onHeaders(code, rawHeaders, this.resume, statusText);
    if (this.finished) return false;
    if (!go) this.pause();
    if (this.body === Body.None) this.complete();
    return true;
  }

  private readonly resume = (): void => {
    if (!this.paused) return;
    this.paused = false;
    const socket = this.socket;
    if (socket && !socket.raw.destroyed) {
      socket.raw.resume();
      socket.rearmTimeout(this.pool.timeouts.bodyTimeout);
    }
  };

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket?.raw.pause();
  }

  private emit(piece: Buffer): void {
    if (piece.length === 0 || this.finished) return;
    if (!this.handler.onData(piece)) this.pause();
  }

  private readBody(chunk: Buffer): void {
    switch (this.body) {
      case Body.Length: {
        const take = Math.min(this.remaining, chunk.length);
        this.remaining -= take;
        this.emit(take === chunk.length ? chunk : chunk.subarray(0, take));
        if (this.remaining === 0) {
          if (take < chunk.length) this.keepAlive = false;
          this.complete();
        }
        return;
      }
      case Body.UntilClose:
        this.emit(chunk);
        return;
      case Body.Chunked:
        this.readChunked(chunk);
        return;
      default:
        this.keepAlive = false;
    }
  }

  private readChunked(chunk: Buffer): void {
    let i = 0;
    const length = chunk.length;
    while (i < length && this.phase === Phase.Body && !this.finished) {
      if (this.chunk === Chunk.Data) {
        const take = Math.min(this.remaining, length - i);
        const piece = chunk.subarray(i, i + take);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.chunk = Chunk.DataEnd;
        this.emit(piece);
        continue;
      }
      // Size, the CRLF after data, and trailer lines are read a line at a time.
      const lf = chunk.indexOf(0x0a, i);
      const end = lf === -1 ? length : lf;
      this.line += chunk.toString("latin1", i, end);
      if (this.line.length > MAX_RESPONSE_HEAD_BYTES) {
        this.fail(parserError("Chunk extensions overflow"));
        return;
      }
      if (lf === -1) return;
      i = lf + 1;
      const line = this.line.endsWith("\r") ? this.line.slice(0, -1) : this.line;
      this.line = "";
      if (this.chunk === Chunk.DataEnd) {
        if (line !== "") {
          this.fail(parserError("Expected LF after chunk data"));
          return;
        }
        this.chunk = Chunk.Size;
      } else if (this.chunk === Chunk.Size) {
        const semicolon = line.indexOf(";");
        const hex = (semicolon === -1 ? line : line.slice(0, semicolon)).trim();
        if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) {
          this.fail(parserError("Invalid character in chunk size"));
          return;
        }
        const size = Number.parseInt(hex, 16);
        if (size === 0) this.chunk = Chunk.Trailer;
        else {
          this.remaining = size;
          this.chunk = Chunk.Data;
        }
      } else if (line === "") {
        if (i < length) this.keepAlive = false;
        this.complete();
        return;
      }
    }
  }

  private complete(): void {
    if (this.finished) return;
    this.phase = Phase.Done;
    this.finished = true;
    if (this.paused) {
      // Paused for a slow client on the last bytes: nothing more comes on this response.
      this.paused = false;
      this.socket?.raw.resume();
    }
    this.handler.onComplete(null);
    if (this.bodySent) this.done();
    // else: the request body is still going up; the socket is released (or closed) once it is sent.
  }

  /** The exchange is over: the socket goes back to the pool or is closed. */
  private done(): void {
    const socket = this.socket;
    this.socket = undefined;
    if (socket === undefined || socket.request !== this) return;
    socket.request = undefined;
    if (this.keepAlive && !this.paused && socket.usable()) this.pool.release(socket, this.keepAliveMs);
    else socket.destroy();
  }

  upstreamEnded(): void {
    if (this.phase === Phase.Body && this.body === Body.UntilClose && !this.finished) {
      this.keepAlive = false;
      this.complete();
    }
  }

  socketClosed(err: Error | undefined): void {
    if (this.finished) return;
    const socket = this.socket;
    // A kept-alive socket the upstream closed before answering: once more on a fresh one, when
    // nothing was received and the request can be sent again unchanged.
    if (
      socket?.reused &&
      !this.gotBytes &&
      !this.retried &&
      !this.aborted &&
      (this.request.body === null || Buffer.isBuffer(this.request.body)) &&
      IDEMPOTENT.has(this.request.method)
    ) {
      this.retried = true;
      this.bodySent = false;
      this.phase = Phase.Head;
      this.attach(this.pool.open());
      return;
    }
    this.fail(
      err
        ? Object.assign(err, { code: (err as { code?: string }).code ?? "UND_ERR_SOCKET" })
        : codedError("other side closed", "UND_ERR_SOCKET", "SocketError"),
    );
  }

  timedOut(): void {
    if (this.finished || this.paused) return;
    if (this.phase === Phase.Head) {
      this.fail(codedError("Headers Timeout Error", "UND_ERR_HEADERS_TIMEOUT", "HeadersTimeoutError"));
    } else {
      this.fail(codedError("Body Timeout Error", "UND_ERR_BODY_TIMEOUT", "BodyTimeoutError"));
    }
  }

  private fail(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.phase = Phase.Done;
    this.stopBody?.();
    const socket = this.socket;
    this.socket = undefined;
    if (socket !== undefined) {
      socket.request = undefined;
      socket.destroy();
    }
    this.handler.onError(err);
  }
}

const IDEMPOTENT: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/**
 * The status code of a status line (`text` up to `eol`), -1 when the line is not
 * `HTTP/1.0` or `HTTP/1.1`, a space, three digits (the first not 0), then nothing or a space
 * and a reason without a bare CR or LF. By hand: a regular expression's match was the
 * largest allocation of a response head.
 */
function statusCode(text: string, eol: number): number {
  if (eol < 12 || !text.startsWith("HTTP/1.", 0)) return -1;
  const minor = text.charCodeAt(7);
  if ((minor !== 0x30 && minor !== 0x31) || text.charCodeAt(8) !== 0x20) return -1;
  const d1 = text.charCodeAt(9) - 0x30;
  const d2 = text.charCodeAt(10) - 0x30;
  const d3 = text.charCodeAt(11) - 0x30;
  if (d1 < 1 || d1 > 9 || d2 < 0 || d2 > 9 || d3 < 0 || d3 > 9) return -1;
  if (eol > 12) {
    if (text.charCodeAt(12) !== 0x20) return -1;
    for (let i = 13; i < eol; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x0d || c === 0x0a) return -1;
    }
  }
  return d1 * 100 + d2 * 10 + d3;
}
