import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Server as NetServer } from "node:net";
import { Readable } from "node:stream";
import { performance } from "node:perf_hooks";
import { newRequestId } from "../../common/ids.js";
import type { Logger } from "../../common/logger.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { ASYNC_STATUS_PATH, type AsyncRequestLimits, AsyncRequests } from "../async/async-requests.js";
import { answerRefusal, GatewayPolicy, type Refusal } from "../policy/gateway-policy.js";
import { errorFormatFor, sendProviderError } from "../policy/provider-errors.js";
import {
  type RequestDirectives,
  readRequestDirectives,
  stripDirectiveHeaders,
  WEBHOOK_URL_HEADER,
} from "../policy/request-directives.js";
import { requestEventOptions } from "../policy/request-events.js";
import type { ProviderAdapter } from "../providers/adapter.js";
import { DEFAULT_ADAPTERS } from "../providers/defaults.js";
import type { EventSink } from "./event-sink.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings } from "./settings.js";
import { Exchange, type ExchangeOptions, eventProvider, type Observation, type ProxyContext } from "./exchange.js";
import { REQUEST_ID_HEADER, type RequestHeaderFacts, upstreamRequestHeaders } from "./headers.js";
import { createLeanServer, type LeanHandler, takeWholeBody } from "./lean-server.js";
import { ProxyMetrics } from "./proxy-metrics.js";
import { ReportQueue } from "./report-queue.js";
import { type Upstream, UpstreamTable } from "./upstreams.js";

export interface ProxyOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Upstream name → origin URL (an optional path prefix is kept): "openai" is the default route, "anthropic" takes /v1/messages. */
  upstreams: Record<string, string>;
  sink: EventSink;
  orgId: string;
  app: string;
  logger: Logger;
  /** The control plane's latest settings (config snapshot); default DEFAULT_PROXY_SETTINGS. */
  settings?: () => ProxySettings;
  /** Upstream silent this long (before its head, or between body chunks) → 504 / cut. Default 10 minutes. */
  requestTimeoutMs?: number;
  /** Provider formats to observe; default OpenAI-compatible and Anthropic Messages. */
  adapters?: readonly ProviderAdapter[];
  /** Bounds of the in-memory results of `Prefer: respond-async` calls. */
  asyncRequests?: AsyncRequestLimits;
  /** Where the request counters go (the sidecar's /metrics); default a fresh one. */
  metrics?: ProxyMetrics;
  /** An upstream connection (TCP, and TLS for https) not up this long → 502; default 10 s (undici's). */
  connectTimeoutMs?: number;
  /**
   * "lean": the lean HTTP/1.1 server (lean-server.ts) and upstream client (lean-upstream.ts)
   * serve the common case; the server hands the rest to node:http on the same connection.
   * "node": node:http and undici serve every request. Default from AIGW_SIDECAR_ENGINE,
   * else "lean".
   */
  engine?: ProxyEngine;
  /** The app-facing server's timeouts, in either engine (tests shorten them); defaults below. */
  clientTimeouts?: Partial<ClientTimeouts>;
}

export type ProxyEngine = "node" | "lean";

/** node:http's server timeouts, which the lean server keeps too. */
export interface ClientTimeouts {
  /** Idle time allowed between requests on a kept-alive connection; then it is closed. */
  keepAliveTimeoutMs: number;
  /** A request head not whole this long after its first byte → 408 and close. */
  headersTimeoutMs: number;
  /** A request (head and body) not whole this long after its first byte → 408 and close. */
  requestTimeoutMs: number;
  /** How often the two above are checked. */
  checkIntervalMs: number;
}

const DEFAULT_CLIENT_TIMEOUTS: ClientTimeouts = {
  // Keep-alive from the app's client pool: the socket idles between requests.
  keepAliveTimeoutMs: 65_000,
  headersTimeoutMs: 66_000,
  // node:http's default.
  requestTimeoutMs: 300_000,
  checkIntervalMs: 1_000,
};

function engineFromEnvironment(): ProxyEngine {
  const value = process.env.AIGW_SIDECAR_ENGINE;
  if (value === undefined || value === "" || value === "lean") return "lean";
  if (value === "node") return "node";
  throw new Error(`AIGW_SIDECAR_ENGINE: ${JSON.stringify(value)} is not an engine (expected "node" or "lean")`);
}

export interface RunningProxy {
  /** http://host:port, what the app uses as its base URL (plus "/v1" for OpenAI clients). */
  url: string;
  port: number;
  metrics: ProxyMetrics;
  close(): Promise<void>;
}

/** Observed request bodies are read whole to find model and stream; larger ones pass unobserved. */
export const MAX_OBSERVED_REQUEST_BYTES = 10 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
/** Pass-through request bodies up to this size, with a content-length, go upstream as one buffer (one write). */
const SMALL_BODY_BYTES = 64 * 1024;

export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const engine = options.engine ?? engineFromEnvironment();
  const table = new UpstreamTable(options.upstreams, {
    timeoutMs: options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    connectTimeoutMs: options.connectTimeoutMs,
    client: engine === "lean" ? "lean" : "undici",
  });
  const context: ProxyContext = {
    sink: options.sink,
    orgId: options.orgId,
    app: options.app,
    logger: options.logger,
    settings: options.settings ?? (() => DEFAULT_PROXY_SETTINGS),
    reports: new ReportQueue((err) => options.logger.error({ err }, "building events failed")),
    metrics: options.metrics ?? new ProxyMetrics(),
  };
  const asyncRequests = new AsyncRequests(options.asyncRequests);
  const policy = new GatewayPolicy(options.orgId, options.app);
  const proxy = new ProviderProxy(table, options.adapters ?? DEFAULT_ADAPTERS, context, policy, asyncRequests);
  const timeouts = { ...DEFAULT_CLIENT_TIMEOUTS, ...options.clientTimeouts };
  const server = createServer(
    {
      noDelay: true,
      keepAliveTimeout: timeouts.keepAliveTimeoutMs,
      headersTimeout: timeouts.headersTimeoutMs,
      requestTimeout: timeouts.requestTimeoutMs,
      connectionsCheckingInterval: timeouts.checkIntervalMs,
    },
    proxy.handle,
  );
  // The lean server listens and hands what it does not serve to `server`, which then does not listen.
  const lean =
    engine === "lean"
      ? createLeanServer(proxy.handle as unknown as LeanHandler, server, {
          keepAliveTimeoutMs: timeouts.keepAliveTimeoutMs,
          headersTimeoutMs: timeouts.headersTimeoutMs,
          requestTimeoutMs: timeouts.requestTimeoutMs,
          checkIntervalMs: timeouts.checkIntervalMs,
        })
      : undefined;
  // node:http tracks its connections' head and request deadlines from 'listening' on; the
  // connections the lean server hands it need them too.
  if (lean) server.emit("listening");
  const listening = lean?.server ?? server;

  const host = options.host ?? "127.0.0.1";
  try {
    await listen(listening, host, options.port ?? 8080);
  } catch (err) {
    await table.close();
    throw err;
  }
  const port = (listening.address() as AddressInfo).port;
  const shownHost = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}`,
    port,
    metrics: context.metrics,
    async close() {
      const closed = new Promise<void>((resolve) => listening.close(() => resolve()));
      lean?.closeAllConnections();
      server.closeAllConnections();
      // Not listening in the lean engine: this stops its connection check (and reports ERR_SERVER_NOT_RUNNING).
      if (lean) server.close(ignore);
      await closed;
      asyncRequests.abortAll();
      await table.close();
      context.reports.flush();
    },
  };
}

function listen(server: Server | NetServer, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) =>
      reject(new Error(`sidecar proxy: cannot listen on ${host}:${port}: ${err.message}`));
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

const ignore = (): void => {};
const EMPTY_BODY = Buffer.alloc(0);
const PASS_THROUGH = { dropContentLength: false, identityEncoding: false } as const;
/** The sidecar's own API; never proxied. */
const AIGW_PATH = "/aigw/";

/** Routes each request to its upstream and starts its Exchange. */
class ProviderProxy {
  constructor(
    private readonly table: UpstreamTable,
    private readonly adapters: readonly ProviderAdapter[],
    private readonly context: ProxyContext,
    private readonly policy: GatewayPolicy,
    private readonly asyncRequests: AsyncRequests,
  ) {}

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const startedAt = performance.now();
    // A client reset mid-upload must not become an unhandled 'error'.
    req.on("error", ignore);
    const target = requestTarget(req.url);
    const query = target.indexOf("?");
    const path = query === -1 ? target : target.slice(0, query);
    const method = req.method ?? "GET";
    if (path.startsWith(AIGW_PATH)) {
      this.context.metrics.request("aigw");
      this.serveAigw(method, path, res);
      return;
    }
    const directives = readRequestDirectives(req.rawHeaders);
    if (directives?.webhookUrlProblem !== undefined) {
      sendProviderError(
        res,
        400,
        errorFormatFor(path),
        {
          message: `aigw: ${directives.webhookUrlProblem}`,
          openAiType: "invalid_request_error",
          code: "invalid_webhook_url",
          param: WEBHOOK_URL_HEADER,
          anthropicType: "invalid_request_error",
        },
        newRequestId(),
      );
      return;
    }
    const upstream = this.table.route(path);
    this.context.metrics.request(upstream.name);
    const adapter = this.adapterFor(method, path);
    if (adapter === undefined) {
      if (directives?.respondAsync) {
        readObservedBody(req, (body, rest) => {
          const request = { method, target, path, startedAt, requestId: newRequestId(), directives };
          if (rest) this.refuseTooLargeForAsync(res, request);
          else this.startAsync(req, res, upstream, request, undefined, body);
        });
        return;
      }
      const exchange = new Exchange(this.context, upstream, res, newRequestId(), path, startedAt, undefined);
      const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
      const headers = upstreamRequestHeaders(req.rawHeaders, PASS_THROUGH, facts);
      if (directives) stripDirectiveHeaders(headers);
      if (!facts.hasBody) {
        dispatch(upstream, exchange, method, target, headers, null);
      } else if (facts.contentLength > 0 && facts.contentLength <= SMALL_BODY_BYTES) {
        readObservedBody(req, (body) => {
          if (!exchange.cancelled && !res.destroyed) dispatch(upstream, exchange, method, target, headers, body);
        });
      } else {
        dispatch(upstream, exchange, method, target, headers, req);
      }
      return;
    }
    readObservedBody(req, (body, rest) => {
      const requestId = newRequestId();
      const settings = this.context.settings();
      const refusal = this.policy.admit(settings, Date.now());
      if (refusal !== undefined) {
        this.refuse(
          refusal,
          res,
          { method, target, path, startedAt, requestId, directives },
          adapter,
          rest ? undefined : body,
        );
        return;
      }
      if (directives?.respondAsync) {
        const request = { method, target, path, startedAt, requestId, directives };
        if (rest) this.refuseTooLargeForAsync(res, request);
        else this.startAsync(req, res, upstream, request, adapter, body);
        return;
      }
      if (rest) {
        // Too large to hold: what was read and the remainder stream upstream unchanged. The
        // response is still observed (usage, model and errors are the provider's answer).
        const observation: Observation = { adapter, requestBody: EMPTY_BODY, rewrite: undefined };
        const options = this.eventOptions(settings, directives, undefined);
        const exchange = new Exchange(this.context, upstream, res, requestId, path, startedAt, observation, options);
        const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
        const headers = upstreamRequestHeaders(req.rawHeaders, PASS_THROUGH, facts);
        if (directives) stripDirectiveHeaders(headers);
        dispatch(upstream, exchange, method, target, headers, rest);
        return;
      }
      const rewrite = adapter.rewriteRequest(path, body);
      const observation: Observation = { adapter, requestBody: body, rewrite };
      const options = this.eventOptions(settings, directives, undefined);
      const exchange = new Exchange(this.context, upstream, res, requestId, path, startedAt, observation, options);
      if (exchange.cancelled || res.destroyed) return;
      const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
      const headers = upstreamRequestHeaders(
        req.rawHeaders,
        { dropContentLength: true, identityEncoding: rewrite?.identityEncoding ?? false },
        facts,
      );
      if (directives) stripDirectiveHeaders(headers);
      dispatch(upstream, exchange, method, target, headers, rewrite ? rewrite.body : body.length > 0 ? body : null);
    });
  };

  private adapterFor(method: string, path: string): ProviderAdapter | undefined {
    for (const adapter of this.adapters) if (adapter.observes(method, path)) return adapter;
    return undefined;
  }

  /** Undefined (no per-request work) unless the request has directives or tokens are metered. */
  private eventOptions(
    settings: ProxySettings,
    directives: RequestDirectives | undefined,
    asyncRequest: Parameters<typeof requestEventOptions>[0]["asyncRequest"],
  ): ExchangeOptions | undefined {
    const meters = this.policy.metersTokens(settings, Date.now());
    if (directives === undefined && !meters) return undefined;
    return requestEventOptions({
      wanted: settings.wantedEventTypes,
      webhookUrl: directives?.webhookUrl,
      asyncRequest,
      meterTokens: meters ? this.meterTokens : undefined,
    });
  }

  private readonly meterTokens = (tokens: number): void => {
    this.policy.recordTokens(tokens, Date.now());
  };

  /**
   * `Prefer: respond-async`: answers 202 with the status URL, then makes the call with the
   * sidecar as its client. The response is read whole (uncompressed, usage chunk kept) into
   * the async request, and its completion or error goes out by webhook.
   */
  private startAsync(
    req: IncomingMessage,
    res: ServerResponse,
    upstream: Upstream,
    request: RequestLine,
    adapter: ProviderAdapter | undefined,
    body: Buffer,
  ): void {
    if (res.destroyed) return;
    const { method, target, path, startedAt, requestId, directives } = request;
    const asyncRequest = this.asyncRequests.create(requestId, method, path, adapter);
    let observation: Observation | undefined;
    let upstreamBody: Buffer | null = body.length > 0 ? body : null;
    if (adapter) {
      const rewrite = adapter.rewriteRequest(path, body);
      // The async result keeps what the upstream sent (a stream's usage chunk included).
      observation = { adapter, requestBody: body, rewrite: rewrite && { ...rewrite, responseFilter: undefined } };
      if (rewrite) upstreamBody = rewrite.body;
    }
    const options = this.eventOptions(this.context.settings(), directives, asyncRequest);
    const exchange = new Exchange(
      this.context,
      upstream,
      asyncRequest.capture,
      requestId,
      path,
      startedAt,
      observation,
      options,
    );
    const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
    // Uncompressed: the sidecar reads the whole body for the status URL and the webhook.
    const headers = upstreamRequestHeaders(req.rawHeaders, { dropContentLength: true, identityEncoding: true }, facts);
    stripDirectiveHeaders(headers);

    const accepted = Buffer.from(
      JSON.stringify({ request_id: requestId, status: "received", status_url: asyncRequest.statusUrl }),
    );
    res.writeHead(202, [
      "content-type",
      "application/json",
      "content-length",
      String(accepted.length),
      REQUEST_ID_HEADER,
      requestId,
      "preference-applied",
      "respond-async",
      "location",
      asyncRequest.statusUrl,
    ]);
    res.end(accepted);
    asyncRequest.status = "processing";
    dispatch(upstream, exchange, method, target, headers, upstreamBody);
  }

  private refuseTooLargeForAsync(res: ServerResponse, request: RequestLine): void {
    sendProviderError(
      res,
      413,
      errorFormatFor(request.path),
      {
        message: `aigw: a request body over ${MAX_OBSERVED_REQUEST_BYTES} bytes cannot be made async (Prefer: respond-async); send it without`,
        openAiType: "invalid_request_error",
        code: "request_too_large",
        param: null,
        anthropicType: "request_too_large",
      },
      request.requestId,
    );
  }

  /** Budget or gateway limit: 429 in the provider's format, events, and no upstream call. */
  private refuse(
    refusal: Refusal,
    res: ServerResponse,
    request: RequestLine,
    adapter: ProviderAdapter,
    body: Buffer | undefined,
  ): void {
    const settings = this.context.settings();
    answerRefusal(refusal, {
      res,
      format: errorFormatFor(request.path),
      requestId: request.requestId,
      origin: {
        orgId: this.context.orgId,
        app: this.context.app,
        provider: eventProvider(this.table.route(request.path), { adapter }),
      },
      path: request.path,
      model: body ? adapter.readRequest(request.path, body).model : "",
      latencyMs: performance.now() - request.startedAt,
      webhookUrl: request.directives?.webhookUrl,
      wanted: settings.wantedEventTypes,
      publish: this.publish,
    });
  }

  private readonly publish = (event: Event): void => {
    try {
      this.context.sink.publish(event);
    } catch (err) {
      this.context.logger.warn({ err }, "event sink refused an event");
    }
  };

  /** The sidecar's own API: GET /aigw/v1/requests/{id}. */
  private serveAigw(method: string, path: string, res: ServerResponse): void {
    if (!path.startsWith(ASYNC_STATUS_PATH) || path.length === ASYNC_STATUS_PATH.length) {
      sendJson(res, 404, { error: { message: `aigw: no such path ${path}`, code: "not_found" } });
      return;
    }
    if (method !== "GET" && method !== "HEAD") {
      sendJson(res, 405, { error: { message: `aigw: ${method} ${path}: only GET`, code: "method_not_allowed" } }, [
        "allow",
        "GET, HEAD",
      ]);
      return;
    }
    const id = decodeURIComponentSafe(path.slice(ASYNC_STATUS_PATH.length));
    const request = id === undefined ? undefined : this.asyncRequests.get(id);
    if (request === undefined) {
      sendJson(res, 404, {
        error: {
          message: `aigw: no async request ${JSON.stringify(id ?? path)} on this sidecar (results are kept in its memory for a limited time)`,
          code: "not_found",
        },
      });
      return;
    }
    sendJsonText(res, 200, request.statusJson(), method === "HEAD");
  }
}

/** What the proxy knows of a request once its head is read. */
interface RequestLine {
  method: string;
  target: string;
  path: string;
  startedAt: number;
  requestId: string;
  directives: RequestDirectives | undefined;
}

function sendJson(res: ServerResponse, status: number, value: unknown, extraHeaders: readonly string[] = []): void {
  sendJsonText(res, status, JSON.stringify(value), false, extraHeaders);
}

function sendJsonText(
  res: ServerResponse,
  status: number,
  text: string,
  headOnly: boolean,
  extraHeaders: readonly string[] = [],
): void {
  const body = Buffer.from(text);
  res.writeHead(status, [
    "content-type",
    "application/json",
    "content-length",
    String(body.length),
    "cache-control",
    "no-store",
    ...extraHeaders,
  ]);
  res.end(headOnly ? undefined : body);
}

function decodeURIComponentSafe(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function dispatch(
  upstream: Upstream,
  exchange: Exchange,
  method: string,
  target: string,
  headers: string[],
  body: Buffer | Readable | null,
): void {
  try {
    exchange.dispatched();
    upstream.pool.dispatch({ path: upstream.pathPrefix + target, method, headers, body }, exchange);
  } catch (err) {
    exchange.fail(err instanceof Error ? err : new Error(String(err)));
  }
}

/** Origin-form targets are kept as sent; an absolute-form one (proxy style) keeps its path and query. */
function requestTarget(url: string | undefined): string {
  if (url === undefined || url === "") return "/";
  if (url.charCodeAt(0) === 0x2f /* "/" */) return url;
  try {
    const parsed = new URL(url);
    return parsed.pathname + parsed.search;
  } catch {
    return `/${url}`;
  }
}

/**
 * Reads an observed request's body. Calls back with the whole body, or, past
 * MAX_OBSERVED_REQUEST_BYTES, with an iterable of what was read and the rest of the stream.
 */
function readObservedBody(req: IncomingMessage, done: (body: Buffer, rest?: Readable) => void): void {
  // The lean server's request whose body came whole with its head (at most the head's read,
  // far below the bound): at once, no stream events.
  const whole = takeWholeBody(req);
  if (whole !== undefined) {
    done(whole);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer): void => {
    size += chunk.length;
    chunks.push(chunk);
    if (size > MAX_OBSERVED_REQUEST_BYTES) {
      req.off("data", onData);
      req.off("end", onEnd);
      req.pause();
      done(Buffer.alloc(0), Readable.from(concatStreams(chunks, req), { objectMode: false }));
    }
  };
  const onEnd = (): void => {
    done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
  };
  req.on("data", onData);
  req.on("end", onEnd);
}

async function* concatStreams(head: Buffer[], rest: IncomingMessage): AsyncIterable<Buffer> {
  yield* head;
  for await (const chunk of rest) yield chunk as Buffer;
}
