import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { performance } from "node:perf_hooks";
import { newRequestId } from "../../common/ids.js";
import type { Logger } from "../../common/logger.js";
import type { ProviderAdapter } from "../providers/adapter.js";
import { openAiAdapter } from "../providers/openai.js";
import type { EventSink } from "./event-sink.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings } from "./settings.js";
import { Exchange, type Observation, type ProxyContext } from "./exchange.js";
import { type RequestHeaderFacts, upstreamRequestHeaders } from "./headers.js";
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
  /** Provider formats to observe; default OpenAI-compatible. */
  adapters?: readonly ProviderAdapter[];
}

export interface RunningProxy {
  /** http://host:port, what the app uses as its base URL (plus "/v1" for OpenAI clients). */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Observed request bodies are read whole to find model and stream; larger ones pass unobserved. */
export const MAX_OBSERVED_REQUEST_BYTES = 10 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
const REPORT_DELAY_MS = 1;
/** Pass-through request bodies up to this size, with a content-length, go upstream as one buffer (one write). */
const SMALL_BODY_BYTES = 64 * 1024;

export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const table = new UpstreamTable(options.upstreams, { timeoutMs: options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS });
  const context: ProxyContext = {
    sink: options.sink,
    orgId: options.orgId,
    app: options.app,
    logger: options.logger,
    settings: options.settings ?? (() => DEFAULT_PROXY_SETTINGS),
    reports: new ReportQueue(REPORT_DELAY_MS, (err) => options.logger.error({ err }, "building events failed")),
  };
  const proxy = new ProviderProxy(table, options.adapters ?? [openAiAdapter], context);
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, proxy.handle);
  // Keep-alive from the app's client pool: the socket idles between requests.
  server.headersTimeout = 66_000;

  const host = options.host ?? "127.0.0.1";
  try {
    await listen(server, host, options.port ?? 8080);
  } catch (err) {
    await table.close();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}`,
    port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await table.close();
      context.reports.flush();
    },
  };
}

function listen(server: Server, host: string, port: number): Promise<void> {
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
const PASS_THROUGH = { dropContentLength: false, identityEncoding: false } as const;

/** Routes each request to its upstream and starts its Exchange. */
class ProviderProxy {
  constructor(
    private readonly table: UpstreamTable,
    private readonly adapters: readonly ProviderAdapter[],
    private readonly context: ProxyContext,
  ) {}

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const startedAt = performance.now();
    // A client reset mid-upload must not become an unhandled 'error'.
    req.on("error", ignore);
    const target = requestTarget(req.url);
    const query = target.indexOf("?");
    const path = query === -1 ? target : target.slice(0, query);
    const method = req.method ?? "GET";
    const upstream = this.table.route(path);
    const adapter = this.adapterFor(method, path);
    if (adapter === undefined) {
      const exchange = new Exchange(this.context, upstream, res, newRequestId(), path, startedAt, undefined);
      const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
      const headers = upstreamRequestHeaders(req.rawHeaders, PASS_THROUGH, facts);
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
      if (rest) {
        // Too large to observe: forward what was read and stream the remainder.
        const exchange = new Exchange(this.context, upstream, res, requestId, path, startedAt, undefined);
        const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
        const headers = upstreamRequestHeaders(req.rawHeaders, PASS_THROUGH, facts);
        dispatch(upstream, exchange, method, target, headers, rest);
        return;
      }
      const rewrite = adapter.rewriteRequest(path, body);
      const observation: Observation = { adapter, requestBody: body, rewrite };
      const exchange = new Exchange(this.context, upstream, res, requestId, path, startedAt, observation);
      if (exchange.cancelled || res.destroyed) return;
      const facts: RequestHeaderFacts = { hasBody: false, contentLength: -1 };
      const headers = upstreamRequestHeaders(
        req.rawHeaders,
        { dropContentLength: true, identityEncoding: rewrite?.identityEncoding ?? false },
        facts,
      );
      dispatch(upstream, exchange, method, target, headers, rewrite ? rewrite.body : body.length > 0 ? body : null);
    });
  };

  private adapterFor(method: string, path: string): ProviderAdapter | undefined {
    for (const adapter of this.adapters) if (adapter.observes(method, path)) return adapter;
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
