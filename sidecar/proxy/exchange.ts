import { performance } from "node:perf_hooks";
import type { Dispatcher } from "undici";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import type { Logger } from "../../common/logger.js";
import {
  estimatedUsage,
  type ProviderAdapter,
  type RequestFacts,
  type ResponseBodyFilter,
  type ResponseFacts,
  STREAM_KEY,
  type UpstreamRewrite,
} from "../providers/adapter.js";
import type { EventSink } from "./event-sink.js";
import type { ProxySettings } from "./settings.js";
import {
  classifyStatus,
  classifyStreamError,
  completionEvent,
  type ErrorClass,
  errorEvent,
  type EventOrigin,
  NETWORK_ERROR,
  rateLimitEvent,
  retryAfterSeconds,
  TIMEOUT_ERROR,
} from "./events.js";
import { gatewayErrorBody, type GatewayFailure, upstreamFailure } from "./gateway-errors.js";
import { clientResponseHead, headerValue, REQUEST_ID_HEADER } from "./headers.js";
import type { ProxyMetrics } from "./proxy-metrics.js";
import type { ReportQueue } from "./report-queue.js";
import { providerRateLimitsOf, rateLimitsOfResponse } from "./provider-rate-limits.js";
import { ResponseCopy } from "./response-copy.js";
import { StreamingEvents } from "./streaming-events.js";
import type { Upstream } from "./upstreams.js";

/** What every exchange of one proxy shares. */
export interface ProxyContext {
  readonly sink: EventSink;
  readonly orgId: string;
  readonly app: string;
  readonly logger: Logger;
  /** The latest settings from the control plane (read per request; never blocks). */
  readonly settings: () => ProxySettings;
  readonly reports: ReportQueue;
  readonly metrics: ProxyMetrics;
}

/**
 * What the exchange uses of the client's response: a node ServerResponse, or the capture
 * of an async request (sidecar/async), which keeps the body for the status URL instead.
 */
export interface ClientResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  readonly writableFinished: boolean;
  readonly socket: { end(): unknown } | null;
  writeHead(statusCode: number, headers: string[]): unknown;
  writeHead(statusCode: number, statusText: string, headers: string[]): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: Buffer): unknown;
  flushHeaders(): void;
  once(event: "close" | "drain", listener: () => void): unknown;
  on(event: "close" | "drain", listener: () => void): unknown;
  destroy(): unknown;
}

/** Per-request changes to what the exchange reports (async calls, x-aigw-webhook-url, gateway limits). */
export interface ExchangeOptions {
  /** Event types to build for this request instead of the settings' wanted types. */
  readonly wantedEventTypes?: ReadonlySet<EventType>;
  /** Sees (and may amend) each event of this request before it is published; false drops it. */
  readonly onEvent?: (event: Event) => boolean;
}

/** How the exchange ended, as the completion event's finish_reason says it. */
type Ending = "complete" | "client_disconnected" | "upstream_disconnected" | "upstream_failed";

/** What aigw observes of one request; absent for pass-through paths. */
export interface Observation {
  readonly adapter: ProviderAdapter;
  /** The request body as the client sent it (bounded), read off the response path. */
  readonly requestBody: Buffer;
  readonly rewrite: UpstreamRewrite | undefined;
}

/**
 * One request through the proxy, and the undici dispatch handler for its upstream leg.
 * The response path (onHeaders, onData, onComplete) only forwards and keeps references;
 * everything aigw learns is worked out in `report`, scheduled after the client has its bytes.
 */
export class Exchange implements Dispatcher.DispatchHandler {
  private abortUpstream: ((err?: Error) => void) | undefined;
  private resumeUpstream: (() => void) | undefined;
  private status = 0;
  private responseHeaders: string[] | undefined;
  private firstByteAt = 0;
  /** Body bytes went to the client (the head with the first of them). */
  private bodyWritten = false;
  private endedAt = 0;
  private copy: ResponseCopy | undefined;
  private filter: ResponseBodyFilter | undefined;
  private ending: Ending | undefined;
  private failure: GatewayFailure | undefined;
  private clientGone = false;
  private streaming: StreamingEvents | undefined;
  private request: RequestFacts | undefined;
  private eventStream = false;

  constructor(
    private readonly context: ProxyContext,
    private readonly upstream: Upstream,
    private readonly res: ClientResponse,
    readonly requestId: string,
    /** Path without query string, as the client sent it. */
    private readonly path: string,
    private readonly startedAt: number,
    private readonly observation: Observation | undefined,
    private readonly options: ExchangeOptions | undefined = undefined,
  ) {
    res.once("close", this.onClientClose);
  }

  /** The client went away before the request could be sent (while its body was read). */
  get cancelled(): boolean {
    return this.clientGone;
  }

  /** The request is handed to the upstream pool now: what the proxy added before it. */
  dispatched(): void {
    this.context.metrics.added(performance.now() - this.startedAt);
  }

  // undici's dispatch handler (the legacy form, which undici 7's pool calls directly).

  onConnect(abort: (err?: Error) => void): void {
    if (this.clientGone) abort(clientGoneError());
    else this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: (Buffer | string)[], resume: () => void, statusText: string): boolean {
    if (this.clientGone) return false;
    // An informational head (103 Early Hints) is followed by the real one: not forwarded.
    if (statusCode < 200) return true;
    this.status = statusCode;
    this.context.metrics.status(this.upstream.name, statusCode);
    this.resumeUpstream = resume;
    const observation = this.observation;
    const filterFactory = observation?.rewrite?.responseFilter;
    const head = clientResponseHead(rawHeaders, this.requestId, filterFactory !== undefined);
    this.responseHeaders = head.headers;
    const isEventStream = head.contentType.startsWith("text/event-stream");
    this.eventStream = isEventStream;
    if (filterFactory && statusCode < 300 && isEventStream) this.filter = filterFactory();
    if (observation && (statusCode < 300 || statusCode >= 400) && this.bodyNeeded(statusCode, isEventStream)) {
      if (isEventStream && statusCode < 300) this.streaming = this.streamingEvents();
      const observer = observation.adapter.observeResponse(
        { path: this.path, status: statusCode, contentType: head.contentType },
        this.streaming,
      );
      this.copy = new ResponseCopy(observer, head.contentEncoding, isEventStream);
    }
    const res = this.res;
    if (statusText) res.writeHead(statusCode, statusText, head.headers);
    else res.writeHead(statusCode, head.headers);
    // A stream's head goes out without waiting for the body: clients start reading a stream on
    // its headers. Not here, though: the upstream client calls onData for body bytes that came
    // in the same read right after this returns, and the head leaves with them, one write (and
    // one packet for the app to read) instead of two. A head that came alone is flushed in a
    // microtask, before the event loop waits for more input. Other heads leave with the first
    // body chunk.
    if (isEventStream) queueMicrotask(this.flushStreamHead);
    return true;
  }

  /**
   * Whether an event may need this response's body. Not a plain (non-stream) success when no
   * completion is wanted: only a stream can carry a provider error inside a 2xx, so the body is
   * neither copied nor parsed (a request that mentions "stream" keeps it, in case it asked for
   * one and got JSON).
   */
  private bodyNeeded(statusCode: number, isEventStream: boolean): boolean {
    if (statusCode >= 300 || isEventStream) return true;
    const wanted = this.options?.wantedEventTypes ?? this.context.settings().wantedEventTypes;
    if (wanted.has(EventType.COMPLETION)) return true;
    return wanted.has(EventType.ERROR) && this.observation?.requestBody?.includes(STREAM_KEY) === true;
  }

  /** A stream's head, when no body bytes came with it (they would have taken it along). */
  private readonly flushStreamHead = (): void => {
    if (this.bodyWritten || this.ending !== undefined || this.clientGone) return;
    const res = this.res;
    if (!res.destroyed) res.flushHeaders();
  };

  onData(chunk: Buffer): boolean {
    if (this.firstByteAt === 0) this.firstByteAt = performance.now();
    const out = this.filter ? this.filter.transform(chunk) : chunk;
    let ok = true;
    if (out !== undefined && out.length > 0) {
      this.bodyWritten = true;
      ok = this.res.write(out);
    }
    this.copy?.push(chunk);
    // A slow client pauses the upstream read until its socket drains (backpressure end to end).
    if (!ok) this.res.once("drain", this.onClientDrain);
    return ok;
  }

  onComplete(): void {
    this.endedAt = performance.now();
    this.ending = "complete";
    const rest = this.filter?.flush();
    if (rest) this.res.write(rest);
    this.res.end();
    this.scheduleReport();
  }

  onError(err: Error): void {
    this.endedAt = performance.now();
    if (this.clientGone) {
      this.ending = "client_disconnected";
    } else if (this.status === 0) {
      this.ending = "upstream_failed";
      this.failure = upstreamFailure(err);
      this.context.metrics.failure(this.upstream.name, this.failure.kind);
      this.context.logger.warn(
        {
          requestId: this.requestId,
          upstream: this.upstream.name,
          code: (err as { code?: string }).code,
          err: err.message,
        },
        "upstream request failed",
      );
      this.sendGatewayError(this.failure);
    } else {
      // Mid-body: the client must see a broken response, not a short one that looks whole.
      // Ending the socket (no final chunk) does that after flushing what was already written.
      this.ending = "upstream_disconnected";
      const rest = this.filter?.flush();
      if (rest) this.res.write(rest);
      const socket = this.res.socket;
      if (socket) socket.end();
      else this.res.destroy();
    }
    this.scheduleReport();
  }

  /** For a failure before the request reached undici (e.g. invalid headers). */
  fail(err: Error): void {
    this.onError(err);
  }

  private sendGatewayError(failure: GatewayFailure): void {
    const res = this.res;
    if (res.headersSent || res.destroyed) return;
    const body = gatewayErrorBody(failure, this.upstream.name);
    res.writeHead(failure.status, [
      "content-type",
      "application/json",
      "content-length",
      String(body.length),
      REQUEST_ID_HEADER,
      this.requestId,
    ]);
    res.end(body);
  }

  private readonly onClientDrain = (): void => {
    this.resumeUpstream?.();
  };

  private readonly onClientClose = (): void => {
    if (this.ending !== undefined || this.res.writableFinished) return;
    this.clientGone = true;
    this.abortUpstream?.(clientGoneError());
  };

  private scheduleReport(): void {
    if (this.observation) this.context.reports.add(this.report);
  }

  /**
   * Off the response path: read the copy, build events, hand them to the sink. At once when
   * the copy needs no decompressing (no promise per request); once the decoder is done otherwise.
   */
  private readonly report = (): void => {
    const copy = this.copy;
    if (copy !== undefined && !copy.ready) {
      // Once finish() has resolved, the copy is ready.
      copy.finish().then(this.report, (err: unknown) => this.reportFailed(err));
      return;
    }
    try {
      this.buildEvents();
    } catch (err) {
      this.reportFailed(err);
    }
  };

  private reportFailed(err: unknown): void {
    this.context.logger.error({ err, requestId: this.requestId }, "building events failed");
  }

  /** The response's facts, read once from the copy (streaming events and the report share them). */
  private facts(): ResponseFacts {
    return this.copy === undefined ? NO_FACTS : this.copy.finishNow();
  }

  private buildEvents(): void {
    const observation = this.observation;
    if (!observation) return;
    const wanted = this.options?.wantedEventTypes ?? this.context.settings().wantedEventTypes;
    const status = this.status;
    const isSuccess = status >= 200 && status < 300;
    const wantsCompletion = wanted.has(EventType.COMPLETION);
    const wantsError = wanted.has(EventType.ERROR);
    if (status !== 0 && wanted.has(EventType.RATE_LIMIT)) this.reportRateLimits(status);
    if (this.streaming) this.streaming.finish(this.streamFinishReason(this.facts()), undefined);
    if (isSuccess ? !wantsCompletion && !wantsError : !wantsError) return;
    if (status !== 0 && !isSuccess && status < 400) return;
    if (status === 0 && this.ending === "client_disconnected") return;

    // A success whose body was not copied: no completion is wanted and no stream error can be.
    if (isSuccess && this.copy === undefined && !wantsCompletion) return;

    const facts = this.facts();
    const origin = this.origin();
    const latencyMs = this.endedAt - this.startedAt;
    // The request body is parsed only when the response did not say the model (a JSON parse
    // per request saved: the provider names the model in every response it completes).
    const model = facts.model ?? this.requestFacts().model;

    if (isSuccess) {
      const stream = this.eventStream || this.requestAskedToStream();
      const complete = this.ending === "complete";
      // A provider error inside a 200 stream (Anthropic's `event: error`, e.g. overloaded_error).
      const streamError = stream ? facts.errorMessage : undefined;
      if (wantsCompletion) {
        // The provider's final usage, when it was read (a stream cut after its usage chunk
        // included); otherwise what was read plus an estimate, said to be so.
        const usageKnown = facts.usage !== undefined && facts.usage.partial !== true;
        this.publish(
          completionEvent(origin, {
            requestId: this.requestId,
            model,
            usage: usageKnown ? facts.usage : estimatedUsage(facts.usage, facts.contentDeltas ?? 0),
            usageKnown,
            latencyMs,
            ttftMs: stream && this.firstByteAt !== 0 ? this.firstByteAt - this.startedAt : undefined,
            stream,
            statusCode: status,
            path: this.path,
            finishReason: !complete ? this.ending : streamError !== undefined ? STREAM_ERROR_FINISH : undefined,
          }),
        );
      }
      if (wantsError && streamError !== undefined) {
        this.publish(
          errorEvent(origin, {
            requestId: this.requestId,
            errorClass: classifyStreamError(facts.errorType),
            errorMessage: streamError,
            statusCode: status,
            retryAfter: undefined,
            model,
            path: this.path,
            latencyMs,
          }),
        );
      }
      return;
    }

    let errorClass: ErrorClass;
    let message: string;
    let retryAfter: number | undefined;
    if (status === 0) {
      const failure = this.failure!;
      errorClass = failure.kind === "timeout" ? TIMEOUT_ERROR : NETWORK_ERROR;
      message = failure.message;
    } else {
      const headers = this.responseHeaders ?? [];
      errorClass = classifyStatus(status);
      message = facts.errorMessage ?? `upstream answered ${status}`;
      retryAfter = retryAfterSeconds(headerValue(headers, "retry-after"), headerValue(headers, "retry-after-ms"));
    }
    this.publish(
      errorEvent(origin, {
        requestId: this.requestId,
        errorClass,
        errorMessage: message,
        statusCode: status,
        retryAfter,
        model,
        path: this.path,
        latencyMs,
      }),
    );
  }

  /** Reads the request body once, off the response path. */
  private requestFacts(): RequestFacts {
    const observation = this.observation;
    this.request ??= observation
      ? observation.adapter.readRequest(this.path, observation.requestBody)
      : { model: "", stream: false };
    return this.request;
  }

  private origin(): EventOrigin {
    return {
      orgId: this.context.orgId,
      app: this.context.app,
      provider: eventProvider(this.upstream, this.observation),
    };
  }

  /** `streaming` events for this stream, when someone wants them (on the head, once per stream). */
  private streamingEvents(): StreamingEvents | undefined {
    const settings = this.context.settings();
    const wanted = this.options?.wantedEventTypes ?? settings.wantedEventTypes;
    if (!wanted.has(EventType.STREAMING)) return undefined;
    return new StreamingEvents({
      origin: this.origin(),
      requestId: this.requestId,
      coalesceMs: settings.streamingCoalesceMs,
      publish: (event) => this.publish(event),
      requestModel: () => this.requestFacts().model,
    });
  }

  /** The last streaming event's finish_reason: how the stream was cut, else the provider's. */
  private streamFinishReason(facts: ResponseFacts): string {
    if (this.ending !== "complete" && this.ending !== undefined) return this.ending;
    if (facts.errorMessage !== undefined) return STREAM_ERROR_FINISH;
    return facts.finishReason ?? "stop";
  }

  /** rate_limit events from the response's status and rate-limit headers. */
  private reportRateLimits(status: number): void {
    const headers = this.responseHeaders;
    if (headers === undefined) return;
    const reports = rateLimitsOfResponse(providerRateLimitsOf(this.context), {
      upstream: this.upstream.name,
      requestId: this.requestId,
      status,
      headers,
      warningShare: this.context.settings().rateLimitWarningShare,
    });
    for (const fields of reports) this.publish(rateLimitEvent(this.origin(), fields));
  }

  /** `"stream": true` in the request; the body is parsed only if it has a "stream" key at all. */
  private requestAskedToStream(): boolean {
    const body = this.observation?.requestBody;
    if (!body?.includes(STREAM_KEY)) return false;
    return this.requestFacts().stream;
  }

  private publish(event: Parameters<EventSink["publish"]>[0]): void {
    try {
      if (this.options?.onEvent && !this.options.onEvent(event)) return;
      this.context.sink.publish(event);
    } catch (err) {
      // The sink's trouble is aigw's, never the app's.
      this.context.logger.warn({ err, requestId: this.requestId }, "event sink refused an event");
    }
  }
}

/** The facts of an exchange without a response copy. */
const NO_FACTS: ResponseFacts = Object.freeze({});

/** finish_reason of a stream the provider ended with an error event. */
const STREAM_ERROR_FINISH = "upstream_error";

function clientGoneError(): Error {
  const err = new Error("client disconnected");
  err.name = "ClientDisconnectedError";
  return err;
}

/** The upstream names that say which provider they are (a single `--upstream URL` is "openai"). */
const PROVIDER_NAMES: ReadonlySet<string> = new Set(["openai", "anthropic"]);

/**
 * The events' provider: the upstream's name, unless that name is a provider's and the
 * request was in another provider's format (one `--upstream` serving every path, an
 * Anthropic `/v1/messages` call through it): then the format's. A custom name ("azure") stays.
 */
export function eventProvider(upstream: Upstream, observation: Pick<Observation, "adapter"> | undefined): string {
  const format = observation?.adapter.name;
  return format !== undefined && PROVIDER_NAMES.has(upstream.name) && PROVIDER_NAMES.has(format)
    ? format
    : upstream.name;
}
