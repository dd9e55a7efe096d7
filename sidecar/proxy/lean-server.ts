import { EventEmitter } from "node:events";
import { STATUS_CODES, type Server as HttpServer } from "node:http";
import { createServer as createNetServer, type Server as NetServer, Socket } from "node:net";
import { Readable } from "node:stream";
import { READ_BUFFER, readBytes } from "./read-buffer.js";
import { COALESCE_BYTES, headerLinesValid, isNamed, LENGTH_DIGITS, valueAt, withHead } from "./headers.js";
import { turnWrites } from "./turn-writes.js";

/**
 * A lean HTTP/1.1 server for the proxy's common case, on node:net. It parses request heads
 * and bodies (Content-Length or chunked) in JS and answers through `LeanResponse`, which
 * writes what node's ServerResponse writes for the proxy's calls (the same head, framing
 * and keep-alive). Anything else — HTTP/1.0, Upgrade, Expect, CONNECT, an absolute or odd
 * target, an odd Transfer-Encoding or Content-Length, a missing Host, an oversized head,
 * bytes llhttp might judge differently, the sidecar's own paths and `Prefer` requests — is
 * handed, at a request boundary and with the bytes not yet used, to the node:http server on
 * the same socket, which then serves the connection exactly as it does without this server.
 */

/** node:http's default --max-http-header-size: longer heads go to node (which answers 431). */
export const MAX_LEAN_HEAD_BYTES = 16 * 1024;
/** node:http's default maxHeadersCount. */
const MAX_HEADERS = 2000;
/** Bytes of a pipelined next request held while the current one is answered; past this the socket pauses. */
const MAX_BUFFERED_BYTES = 64 * 1024;

export interface LeanServerOptions {
  /** Idle time between requests on a kept-alive connection (node's keepAliveTimeout); then the socket is closed. */
  keepAliveTimeoutMs: number;
  /**
   * Time allowed for a request head to arrive, counted from its first byte (from the
   * connection's start for the first request): node's headersTimeout; then 408 and close.
   */
  headersTimeoutMs: number;
  /** Time allowed for a whole request (head and body) to arrive: node's requestTimeout; 0 for none. */
  requestTimeoutMs: number;
  /** How often the deadlines above are checked (node's connectionsCheckingInterval; node checks every 30 s). */
  checkIntervalMs: number;
}

export type LeanHandler = (req: LeanRequest, res: LeanResponse) => void;

export interface LeanServer {
  readonly server: NetServer;
  /** Destroys every connection this server still owns. */
  closeAllConnections(): void;
}

export function createLeanServer(handler: LeanHandler, fallback: HttpServer, options: LeanServerOptions): LeanServer {
  // Every socket accepted, whether served here or handed to node:http (which, not listening
  // itself, does not track the connections it is given).
  const sockets = new Set<Socket>();
  // The connections served here, for the deadline check: one interval for the server, no
  // timer per request or per socket (node's server checks its connections the same way).
  const connections = new Set<LeanConnection>();
  const server = createNetServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    new LeanConnection(socket, handler, fallback, options, connections);
  });
  const check = setInterval(() => {
    const now = Date.now();
    for (const connection of connections) connection.checkDeadlines(now);
  }, options.checkIntervalMs);
  check.unref();
  server.once("close", () => clearInterval(check));
  return {
    server,
    closeAllConnections() {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
  };
}

const CRLF2 = Buffer.from("\r\n\r\n");
const METHOD = /^[A-Z]+$/;
const TARGET = /^\/[\x21-\x7e\x80-\xff]*$/;
const AIGW_PATH = "/aigw/";

enum State {
  Head,
  Body,
  /** The request was read; its response is being written. */
  Answering,
  Done,
}

enum Framing {
  None,
  Length,
  Chunked,
}

enum Chunk {
  Size,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  Trailer,
}

interface ParsedHead {
  method: string;
  url: string;
  rawHeaders: string[];
  framing: Framing;
  contentLength: number;
  keepAlive: boolean;
}

class LeanConnection {
  private buffered: Buffer | undefined;
  private state = State.Head;
  private request: LeanRequest | undefined;
  private response: LeanResponse | undefined;
  private framing = Framing.None;
  private remaining = 0;
  private chunk = Chunk.Size;
  private chunkSizeText = "";
  private trailerLine = 0;
  /** The current request's body is read but nobody wants it any more (its response ended first). */
  private discarding = false;
  private pausedForBuffer = false;
  private pausedForRequest = false;
  /** The last read was refused (paused): the socket stopped reading until `resumeReading`. */
  private readStopped = false;
  /** When the current request's first byte came (the connection's start for the first one); 0 when none is being read. */
  private requestStartedAt: number;
  /** The socket reads into READ_BUFFER (readIntoSharedBuffer). */
  private readonly sharedBuffer: boolean;
  /** When the connection went idle after a response (keep-alive); 0 while not idle. */
  private idleSince = 0;

  constructor(
    readonly socket: Socket,
    private readonly handler: LeanHandler,
    private readonly fallback: HttpServer,
    private readonly options: LeanServerOptions,
    private readonly connections: Set<LeanConnection>,
  ) {
    // Reads come to `pushed` (the socket's push, which node's read callback calls with each
    // read), not through the Readable's buffer, a 'data' event and a nextTick per read: that
    // machinery was ~5 % of the sidecar's main thread under load.
    (socket as unknown as { push: unknown }).push = this.pushed;
    this.sharedBuffer = readIntoSharedBuffer(socket, this.pushed);
    socket.on("end", this.onEnd);
    socket.on("error", this.onError);
    socket.on("close", this.onClose);
    socket.on("drain", this.onDrain);
    this.requestStartedAt = Date.now();
    connections.add(this);
  }

  /**
   * Each read, as node's read callback hands it to the socket's `push`. False (the socket
   * stops reading until `resumeReading`) while paused, as a full Readable would answer. The
   * end of the stream goes to the Readable as usual ('end', then node's half-close handling).
   */
  private readonly pushed = (chunk: Buffer | null, encoding?: BufferEncoding): boolean => {
    const socket = this.socket;
    if (chunk === null) return Readable.prototype.push.call(socket, chunk, encoding);
    // As a push through the Readable would: the read asked for is done, so a later
    // `read(0)` may ask again.
    (socket as unknown as { _readableState: { reading: boolean } })._readableState.reading = false;
    // The connection is closing: what the client still sends is dropped (read on, so its end is seen).
    if (this.state === State.Done) return true;
    this.onData(chunk);
    // (The handler may have handed the connection over or closed it meanwhile.)
    if ((this.pausedForBuffer || this.pausedForRequest) && (this.state as State) !== State.Done) {
      this.readStopped = true;
      return false;
    }
    return true;
  };

  /** Reads again after a pause, once neither the pipelined bytes nor the request body hold it. */
  private resumeReading(): void {
    if (this.pausedForBuffer || this.pausedForRequest || !this.readStopped) return;
    this.readStopped = false;
    this.socket.read(0);
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.idleSince !== 0) {
      this.idleSince = 0;
      this.requestStartedAt = Date.now();
    }
    const buffered = this.buffered;
    this.buffered = buffered === undefined || buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    this.process();
  };

  private process(): void {
    for (;;) {
      const buffered = this.buffered;
      if (buffered === undefined || buffered.length === 0) return;
      if (this.state === State.Head) {
        if (!this.readHead(buffered)) return;
      } else if (this.state === State.Body) {
        if (this.pausedForRequest) return;
        this.readBody(buffered);
      } else {
        if (this.state === State.Answering && buffered.length > MAX_BUFFERED_BYTES) this.pausedForBuffer = true;
        return;
      }
    }
  }

  /** Parses a head out of the buffer; false when more bytes are needed or the connection was handed over. */
  private readHead(buffered: Buffer): boolean {
    const end = buffered.indexOf(CRLF2);
    if (end === -1) {
      if (buffered.length > MAX_LEAN_HEAD_BYTES) this.handOver();
      return false;
    }
    if (end + 4 > MAX_LEAN_HEAD_BYTES) {
      this.handOver();
      return false;
    }
    const head = parseHead(buffered.toString("latin1", 0, end));
    if (head === undefined) {
      this.handOver();
      return false;
    }
    const rest = buffered.subarray(end + 4);
    this.buffered = rest;
    const request = new LeanRequest(head.method, head.url, head.rawHeaders, this);
    const response = new LeanResponse(this, head.method === "HEAD", head.keepAlive, this.options.keepAliveTimeoutMs);
    this.request = request;
    this.response = response;
    this.discarding = false;
    this.framing = head.framing;
    if (head.framing === Framing.Length && rest.length >= head.contentLength) {
      // The whole body came with the head (the common case: a JSON body in the same packet).
      // The handler may take it at once (takeWholeBody) instead of reading the stream: no
      // stream events, no ticks. Untaken, it goes through the stream as any body would.
      const length = head.contentLength;
      const body = rest.length === length ? rest : rest.subarray(0, length);
      this.buffered = rest.length === length ? undefined : rest.subarray(length);
      this.state = State.Answering;
      this.requestStartedAt = 0;
      request.wholeBody = body;
      this.handler(request, response);
      if (request.wholeBody !== undefined) {
        request.wholeBody = undefined;
        request.push(body);
        request.push(null);
      } else {
        // Taken: the stream is empty and ends when someone reads it (a push(null) now costs a
        // tick per request for a stream nobody reads).
        request.endOnRead = true;
      }
      return true;
    }
    if (head.framing === Framing.None) {
      this.state = State.Answering;
      this.requestStartedAt = 0;
      request.push(null);
    } else {
      this.state = State.Body;
      this.remaining = head.contentLength;
      this.chunk = Chunk.Size;
      this.chunkSizeText = "";
    }
    this.handler(request, response);
    return true;
  }

  private readBody(buffered: Buffer): void {
    if (this.framing === Framing.Length) {
      const take = Math.min(this.remaining, buffered.length);
      const piece = take === buffered.length ? buffered : buffered.subarray(0, take);
      this.buffered = take === buffered.length ? undefined : buffered.subarray(take);
      this.remaining -= take;
      this.deliver(piece);
      if (this.remaining === 0) this.bodyDone();
      return;
    }
    this.readChunked(buffered);
  }

  /** Chunked request body: the decoded bytes go to the request; a malformed frame ends the connection. */
  private readChunked(buffered: Buffer): void {
    let i = 0;
    const length = buffered.length;
    while (i < length && this.state === State.Body) {
      switch (this.chunk) {
        case Chunk.Size: {
          const c = buffered[i]!;
          i++;
          if (c === 0x0d) {
            this.chunk = Chunk.SizeLf;
          } else if (this.chunkSizeText.length > 64) {
            this.badRequest();
            return;
          } else {
            this.chunkSizeText += String.fromCharCode(c);
          }
          break;
        }
        case Chunk.SizeLf: {
          if (buffered[i] !== 0x0a) {
            this.badRequest();
            return;
          }
          i++;
          const sizeText = this.chunkSizeText;
          this.chunkSizeText = "";
          const semicolon = sizeText.indexOf(";");
          const hex = (semicolon === -1 ? sizeText : sizeText.slice(0, semicolon)).trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) {
            this.badRequest();
            return;
          }
          const size = Number.parseInt(hex, 16);
          if (size === 0) {
            this.chunk = Chunk.Trailer;
            this.trailerLine = 0;
          } else {
            this.remaining = size;
            this.chunk = Chunk.Data;
          }
          break;
        }
        case Chunk.Data: {
          const take = Math.min(this.remaining, length - i);
          this.deliver(buffered.subarray(i, i + take));
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.chunk = Chunk.DataCr;
          break;
        }
        case Chunk.DataCr:
          if (buffered[i] !== 0x0d) {
            this.badRequest();
            return;
          }
          i++;
          this.chunk = Chunk.DataLf;
          break;
        case Chunk.DataLf:
          if (buffered[i] !== 0x0a) {
            this.badRequest();
            return;
          }
          i++;
          this.chunk = Chunk.Size;
          break;
        case Chunk.Trailer: {
          // Trailer fields are read and dropped (node's request does not pass them on either).
          const c = buffered[i]!;
          i++;
          if (c === 0x0a) {
            if (this.trailerLine <= 1) {
              this.buffered = buffered.subarray(i);
              this.bodyDone();
              return;
            }
            this.trailerLine = 0;
          } else if (c !== 0x0d || this.trailerLine > 0) {
            this.trailerLine++;
            if (this.trailerLine > MAX_LEAN_HEAD_BYTES) {
              this.badRequest();
              return;
            }
          } else {
            this.trailerLine = 1;
          }
          break;
        }
      }
    }
    this.buffered = i >= length ? undefined : buffered.subarray(i);
  }

  private deliver(piece: Buffer): void {
    if (piece.length === 0 || this.discarding) return;
    const request = this.request!;
    if (!request.push(piece)) this.pausedForRequest = true;
  }

  /** The request stream wants more (its consumer read what was pushed). */
  requestWantsMore(): void {
    if (!this.pausedForRequest) return;
    this.pausedForRequest = false;
    this.resumeReading();
    if (this.state === State.Body) this.process();
  }

  private bodyDone(): void {
    this.requestStartedAt = 0;
    // The request stream may have been full when its last bytes came (the socket paused for
    // it); its end will not ask for more, and what follows is the next request's: read on.
    if (this.pausedForRequest) {
      this.pausedForRequest = false;
      this.resumeReading();
    }
    if (!this.discarding) this.request!.push(null);
    if (this.response!.ended) {
      this.nextRequest();
    } else {
      this.state = State.Answering;
    }
  }

  /** The current response was written whole: next request, or close. */
  responseEnded(keepAlive: boolean): void {
    if (!keepAlive) {
      this.state = State.Done;
      this.socket.end();
      return;
    }
    if (this.state === State.Body) {
      // The response did not wait for the whole body (an early error): read it past, as node does.
      this.discarding = true;
      if (this.pausedForRequest) {
        this.pausedForRequest = false;
        this.resumeReading();
      }
      return;
    }
    this.nextRequest();
  }

  private nextRequest(): void {
    this.state = State.Head;
    this.request = undefined;
    this.response = undefined;
    if (this.pausedForBuffer) {
      this.pausedForBuffer = false;
      this.resumeReading();
    }
    // Pipelined bytes already here are read on a fresh tick, after the response's writes.
    if (this.buffered !== undefined && this.buffered.length > 0) {
      this.requestStartedAt = Date.now();
      setImmediate(this.processLater);
    } else {
      this.idleSince = Date.now();
    }
  }

  private readonly processLater = (): void => {
    if (this.state === State.Head && !this.socket.destroyed) this.process();
  };

  /** node:http serves the rest of this connection, starting with the bytes not yet used. */
  private handOver(): void {
    const socket = this.socket;
    this.state = State.Done;
    this.detach();
    this.pausedForBuffer = false;
    this.pausedForRequest = false;
    this.readStopped = false;
    socket.pause();
    const rest = this.buffered;
    this.buffered = undefined;
    if (rest !== undefined && rest.length > 0) socket.unshift(rest);
    this.fallback.emit("connection", socket);
    socket.resume();
  }

  private detach(): void {
    const socket = this.socket;
    // Reads go through the Readable again (node's server reads the socket itself).
    delete (socket as unknown as { push?: unknown }).push;
    // Still into the shared buffer (a handle cannot be given its own allocations back), but
    // each read is pushed to the Readable, as node's read callback does without one.
    if (this.sharedBuffer) setReadCallback(socket, (chunk) => socket.push(chunk));
    socket.off("end", this.onEnd);
    socket.off("error", this.onError);
    socket.off("close", this.onClose);
    socket.off("drain", this.onDrain);
    this.connections.delete(this);
  }

  private badRequest(): void {
    this.state = State.Done;
    const response = this.response;
    if (response !== undefined && !response.headersSent) {
      this.socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    } else {
      this.socket.destroy();
    }
    this.request?.destroy(new Error("malformed chunked request body"));
  }

  /** The client closed its side: as node's server, the request in flight is aborted and the socket ended. */
  private readonly onEnd = (): void => {
    const request = this.request;
    if (request !== undefined && !request.readableEnded) request.destroy(new Error("aborted"));
    this.state = State.Done;
    this.socket.end();
  };

  private readonly onError = (): void => {
    // 'close' follows; a reset client is not the proxy's error.
  };

  private readonly onClose = (): void => {
    this.state = State.Done;
    this.connections.delete(this);
    const request = this.request;
    if (request !== undefined && !request.readableEnded) request.destroy(new Error("aborted"));
    this.response?.socketClosed();
  };

  /**
   * The server's periodic check, as node's: a kept-alive connection idle past keepAliveTimeout
   * is closed; a head not whole within headersTimeout of its first byte (of the connection's
   * start, for the first request), or a request not whole within requestTimeout, is answered
   * 408 (when no response has started) and the connection closed. A slow client cannot hold
   * a socket by trickling bytes: the deadlines count from the start, not from the last byte.
   */
  checkDeadlines(now: number): void {
    if (this.state === State.Done) return;
    if (this.idleSince !== 0) {
      if (now - this.idleSince >= this.options.keepAliveTimeoutMs) {
        this.state = State.Done;
        this.socket.destroy();
      }
      return;
    }
    const startedAt = this.requestStartedAt;
    if (startedAt === 0) return;
    const { headersTimeoutMs, requestTimeoutMs } = this.options;
    const late =
      (this.state === State.Head && headersTimeoutMs > 0 && now - startedAt >= headersTimeoutMs) ||
      (requestTimeoutMs > 0 && now - startedAt >= requestTimeoutMs);
    if (!late) return;
    this.state = State.Done;
    const socket = this.socket;
    const response = this.response;
    if (socket.writable && (response === undefined || !response.headWritten)) {
      socket.write("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n");
    }
    socket.destroy();
    const request = this.request;
    if (request !== undefined && !request.readableEnded) request.destroy(new Error("request timeout"));
  }

  private readonly onDrain = (): void => {
    this.response?.emit("drain");
  };
}

/** Parses a request head (without its blank line); undefined for anything node should judge. */
function parseHead(text: string): ParsedHead | undefined {
  // Read in place: a line at a time by index (lines end at CRLF; a bare CR or LF is inside a
  // line), no split, no line strings, names compared without lower-cased copies.
  const length = text.length;
  let eol = text.indexOf("\r\n");
  if (eol === -1) eol = length;
  const sp1 = text.indexOf(" ");
  const sp2 = text.lastIndexOf(" ", eol);
  if (sp1 <= 0 || sp1 >= eol || sp2 === sp1) return undefined;
  if (sp2 + 9 !== eol || !text.startsWith("HTTP/1.1", sp2 + 1)) return undefined;
  const method = text.slice(0, sp1);
  const url = text.slice(sp1 + 1, sp2);
  if (!METHOD.test(method) || method === "CONNECT" || method === "PRI") return undefined;
  if (!TARGET.test(url) || url.startsWith(AIGW_PATH)) return undefined;
  const rawHeaders: string[] = [];
  let contentLength = -1;
  let chunked = false;
  let host = false;
  let keepAlive = true;
  // Every name a token and no value with a control character (a bare CR or LF included),
  // checked in one pass; a head that fails it is node's to judge.
  if (!headerLinesValid(text, eol)) return undefined;
  while (eol < length) {
    if (rawHeaders.length >= MAX_HEADERS * 2) return undefined;
    const start = eol + 2;
    eol = text.indexOf("\r\n", start);
    if (eol === -1) eol = length;
    const colon = text.indexOf(":", start);
    if (colon <= start || colon >= eol) return undefined;
    const name = text.slice(start, colon);
    const value = valueAt(text, colon + 1, eol, true);
    switch (name.length) {
      case 4:
        if (isNamed(name, "host")) {
          if (host) return undefined;
          host = true;
        }
        break;
      case 6:
        if (isNamed(name, "expect") || isNamed(name, "prefer")) return undefined;
        break;
      case 7:
        if (isNamed(name, "upgrade")) return undefined;
        break;
      case 10:
        if (isNamed(name, "connection")) {
          for (const token of value.toLowerCase().split(",")) {
            const t = token.trim();
            if (t === "close") keepAlive = false;
            else if (t === "upgrade") return undefined;
          }
        }
        break;
      case 14:
        if (isNamed(name, "content-length")) {
          // A length followed by spaces or tabs: node's call (Node 20 refuses it, Node 24 serves it).
          const last = text.charCodeAt(eol - 1);
          if (contentLength !== -1 || !LENGTH_DIGITS.test(value) || last === 0x20 || last === 0x09) return undefined;
          contentLength = Number(value);
        }
        break;
      case 17:
        if (isNamed(name, "transfer-encoding")) {
          if (chunked || value.toLowerCase() !== "chunked") return undefined;
          chunked = true;
        }
        break;
    }
    rawHeaders.push(name, value);
  }
  if (!host || (chunked && contentLength !== -1)) return undefined;
  const framing = chunked ? Framing.Chunked : contentLength > 0 ? Framing.Length : Framing.None;
  return { method, url, rawHeaders, framing, contentLength, keepAlive };
}

/** The request as the proxy reads it: what node's IncomingMessage offers it, body as a stream. */
export class LeanRequest extends Readable {
  /** The whole body, while it can be taken at once (see takeWholeBody). */
  wholeBody: Buffer | undefined = undefined;
  /** The body was taken whole: the stream ends at its first read. */
  endOnRead = false;

  constructor(
    readonly method: string,
    readonly url: string,
    readonly rawHeaders: string[],
    private readonly connection: LeanConnection,
  ) {
    super();
  }

  override _read(): void {
    if (this.endOnRead) {
      this.endOnRead = false;
      this.push(null);
      return;
    }
    this.connection.requestWantsMore();
  }
}

/**
 * The request's whole body when it came with the head and nobody read the stream yet (a lean
 * request, during the handler's first call); the stream then ends empty. Undefined otherwise:
 * read the stream.
 */
export function takeWholeBody(req: unknown): Buffer | undefined {
  if (!(req instanceof LeanRequest)) return undefined;
  const body = req.wholeBody;
  req.wholeBody = undefined;
  return body;
}

let dateSecond = -1;
let dateText = "";

/** node's Date header, computed once per second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(second * 1000).toUTCString();
  }
  return dateText;
}

/**
 * The client's response: writes what node's ServerResponse writes for the calls the proxy
 * makes (writeHead with a flat header list, write, end, flushHeaders): the status line, the
 * headers as given, Date when absent, Connection/Keep-Alive, and chunked framing when the
 * response has no Content-Length and may have a body.
 */
export class LeanResponse extends EventEmitter {
  headersSent = false;
  destroyed = false;
  writableFinished = false;
  ended = false;
  private head: string | undefined;
  /** The head went to the socket (node's _headerSent). */
  headWritten = false;
  private chunked = false;
  private hasBody: boolean;
  private hasLength = false;
  private closed = false;

  constructor(
    private readonly connection: LeanConnection,
    headRequest: boolean,
    private keepAlive: boolean,
    private readonly keepAliveTimeoutMs: number,
  ) {
    super();
    this.hasBody = !headRequest;
  }

  get socket(): Socket | null {
    return this.closed ? null : this.connection.socket;
  }

  writeHead(statusCode: number, statusTextOrHeaders: string | string[], maybeHeaders?: string[]): this {
    const headers = typeof statusTextOrHeaders === "string" ? maybeHeaders! : statusTextOrHeaders;
    const statusText =
      typeof statusTextOrHeaders === "string" ? statusTextOrHeaders : (STATUS_CODES[statusCode] ?? "unknown");
    if (statusCode === 204 || statusCode === 304 || (statusCode >= 100 && statusCode <= 199)) this.hasBody = false;
    let head = `HTTP/1.1 ${statusCode} ${statusText}\r\n`;
    let hasDate = false;
    let hasLength = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      if (isNamed(name, "date")) hasDate = true;
      else if (isNamed(name, "content-length")) hasLength = true;
      head += `${name}: ${value}\r\n`;
    }
    if (!hasDate) head += `Date: ${httpDate()}\r\n`;
    if (this.keepAlive) {
      head += `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(this.keepAliveTimeoutMs / 1000)}\r\n`;
    } else {
      head += "Connection: close\r\n";
    }
    this.hasLength = hasLength;
    if (!hasLength && this.hasBody) {
      head += "Transfer-Encoding: chunked\r\n";
      this.chunked = true;
    }
    this.head = `${head}\r\n`;
    this.headersSent = true;
    return this;
  }

  flushHeaders(): void {
    if (this.head === undefined || this.headWritten || this.closed) return;
    this.headWritten = true;
    this.connection.socket.write(this.head, "latin1");
  }

  write(chunk: Buffer): boolean {
    if (this.closed || this.ended) return false;
    const socket = this.connection.socket;
    if (!this.hasBody) {
      this.flushHeaders();
      return true;
    }
    if (chunk.length === 0) {
      this.flushHeaders();
      return true;
    }
    if (!this.headWritten && !this.chunked && chunk.length <= COALESCE_BYTES) {
      // The head and a small body in one buffer: one plain write instead of a corked pair.
      this.headWritten = true;
      return turnWrites.write(socket, withHead(this.head!, chunk));
    }
    socket.cork();
    if (!this.headWritten) {
      this.headWritten = true;
      socket.write(this.head!, "latin1");
    }
    let ok: boolean;
    if (this.chunked) {
      socket.write(`${chunk.length.toString(16)}\r\n`, "latin1");
      socket.write(chunk);
      ok = socket.write("\r\n", "latin1");
    } else {
      ok = socket.write(chunk);
    }
    socket.uncork();
    return ok;
  }

  end(chunk?: Buffer): this {
    if (this.ended) return this;
    if (this.closed) {
      this.ended = true;
      return this;
    }
    const socket = this.connection.socket;
    socket.cork();
    if (chunk !== undefined && chunk.length > 0) this.write(chunk);
    else this.flushHeaders();
    if (this.chunked) socket.write("0\r\n\r\n", "latin1");
    this.ended = true;
    // Without a length, a body that is not chunked ends with the connection.
    if (this.hasBody && !this.chunked && !this.hasLength) this.keepAlive = false;
    socket.uncork();
    this.writableFinished = true;
    this.connection.responseEnded(this.keepAlive);
    this.emit("finish");
    this.emit("close");
    return this;
  }

  destroy(): this {
    if (!this.closed) this.connection.socket.destroy();
    return this;
  }

  /** The connection closed: a response not yet ended is cut. */
  socketClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    if (!this.ended) this.emit("close");
  }
}

/**
 * Client sockets read into the proxy's one read buffer (read-buffer.ts), as node:net's `onread`
 * makes the upstream's do: without it each read allocates 64 KiB, shrinks it to what was read
 * and makes an ArrayBuffer of it, and every scavenge then sweeps those one by one
 * (`scavenge.sweep_array_buffers`, about half of each pause at 16 connections, measured with
 * `--trace-gc-nvp`). A server's sockets have no such option, so the socket is given the buffer
 * and callback `onread` would give it: node:net's own slots for them, found by name on a socket
 * made for the purpose. Where this Node has no such slots, or the handle cannot read into a
 * buffer of ours, reads come as before.
 */
interface UserBufferSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

const USER_BUFFER_SLOTS = userBufferSlots();

function userBufferSlots(): UserBufferSlots | undefined {
  try {
    const probe = new Socket();
    const symbols = Object.getOwnPropertySymbols(probe);
    const find = (name: string) => symbols.find((s) => s.description === name);
    const buffer = find("kBuffer");
    const callback = find("kBufferCb");
    const generator = find("kBufferGen");
    probe.destroy();
    return buffer && callback && generator ? { buffer, callback, generator } : undefined;
  } catch {
    return undefined;
  }
}

/** Has `socket` read into READ_BUFFER, handing each read to `onRead`; false where it cannot. Exported for tests. */
export function readIntoSharedBuffer(socket: Socket, onRead: (chunk: Buffer) => boolean): boolean {
  const slots = USER_BUFFER_SLOTS;
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (buffer: Uint8Array) => void } })._handle;
  if (slots === undefined || typeof handle?.useUserBuffer !== "function") return false;
  const target = socket as unknown as Record<symbol, unknown>;
  if (target[slots.buffer] !== null || target[slots.callback] !== null) return false;
  handle.useUserBuffer(READ_BUFFER);
  target[slots.buffer] = READ_BUFFER;
  target[slots.generator] = null;
  setReadCallback(socket, onRead);
  return true;
}

/** Where a socket reading into READ_BUFFER hands its reads from now on. Exported for tests. */
export function setReadCallback(socket: Socket, onRead: (chunk: Buffer) => boolean): void {
  const slots = USER_BUFFER_SLOTS!;
  (socket as unknown as Record<symbol, unknown>)[slots.callback] = (bytes: number): boolean => onRead(readBytes(bytes));
}
