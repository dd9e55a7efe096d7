import { setMaxListeners } from "node:events";
import { fromBinary } from "@bufbuild/protobuf";
import { EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { webhookBody } from "../../common/webhook-body.js";
import type { Readable } from "node:stream";
import { Agent, errors as undiciErrors } from "undici";
import { errorCodeOf, isErrorCode } from "../../common/errors.js";
import { DestinationGuard } from "./destination-guard.js";
import { parseRetryAfter } from "./retry-policy.js";
import { SigningKeyRing, SigningSecretError } from "../../common/signature.js";
import type { BatchResults, DeliveryBatch, DeliveryBatchMessage, DeliveryResult, DeliveryTask } from "./task.js";

/**
 * A piscina worker: one signed POST per task (default export), or a batch of them
 * (deliverBatch). It never throws out of a task; every failure, including garbage from the
 * receiver, becomes a result the retry policy reads.
 */

const RESPONSE_BODY_LIMIT = 1024;
/** Read (and discard) up to this much of a response so its connection can be reused. */
const DRAIN_LIMIT = 64 * 1024;

interface Transport {
  guard: DestinationGuard;
  agent: Agent;
}

// One keep-alive Agent per destination policy. The policy changes only on a config
// update, so there are rarely more than one or two; older ones are closed.
const transports = new Map<string, Transport>();
const MAX_TRANSPORTS = 4;

function transportFor(task: Pick<DeliveryTask, "requireHttps" | "allowedNetworks" | "timeoutMs">): Transport {
  const key = `${task.requireHttps}|${task.allowedNetworks.join(",")}`;
  const existing = transports.get(key);
  if (existing) return existing;
  const guard = new DestinationGuard({ requireHttps: task.requireHttps, allowedNetworks: task.allowedNetworks });
  const agent = new Agent({
    keepAliveTimeout: 10_000,
    keepAliveMaxTimeout: 60_000,
    // The guard's lookup runs for every new connection: the rebinding check happens here.
    connect: { lookup: guard.lookup, timeout: Math.min(task.timeoutMs, 10_000) },
  });
  transports.set(key, { guard, agent });
  while (transports.size > MAX_TRANSPORTS) {
    const [oldestKey, oldest] = transports.entries().next().value as [string, Transport];
    transports.delete(oldestKey);
    void oldest.agent.close().catch(() => {});
  }
  return { guard, agent };
}

// Parsed keys by secret list: decoding base64 and allocating keys per attempt is avoidable
// work at thousands of deliveries a second. Bounded; secrets stay in this thread only.
const keyRings = new Map<string, SigningKeyRing>();
const MAX_KEY_RINGS = 256;

function keyRingFor(secrets: readonly string[]): SigningKeyRing {
  const key = secrets.join("\n");
  let ring = keyRings.get(key);
  if (!ring) {
    ring = new SigningKeyRing(secrets);
    if (keyRings.size >= MAX_KEY_RINGS) keyRings.delete(keyRings.keys().next().value as string);
    keyRings.set(key, ring);
  }
  return ring;
}

export default async function deliver(task: DeliveryTask): Promise<DeliveryResult> {
  const started = performance.now();
  let transport: Transport;
  let url: URL;
  let ring: SigningKeyRing;
  try {
    transport = transportFor(task);
    url = transport.guard.checkUrl(task.url);
    ring = keyRingFor(task.secrets);
  } catch (err) {
    return refusedResult(err, Math.round(performance.now() - started));
  }
  const deadline = new Deadline(task.timeoutMs, 1);
  try {
    return await post(transport, { url, ring }, task.body, task.webhookId, task, started, deadline);
  } finally {
    deadline.clear();
  }
}

/**
 * The time bound of attempts that start together: one timer and one abort signal for a
 * whole batch instead of one per request. Every attempt of a batch starts in the same
 * turn right after the timer, so each gets its timeout less the microseconds that turn
 * takes; an attempt that already ended is unaffected when the signal fires.
 */
class Deadline {
  readonly controller = new AbortController();
  expired = false;
  private readonly timer: NodeJS.Timeout;

  constructor(timeoutMs: number, attempts: number) {
    // undici adds one abort listener per request in flight on the shared signal.
    setMaxListeners(attempts + 10, this.controller.signal);
    this.timer = setTimeout(() => {
      this.expired = true;
      this.controller.abort(new Error(`no complete response within ${timeoutMs} ms`));
    }, timeoutMs);
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}

/**
 * Runs a batch's attempts at once and posts each result on the batch's port as soon as it
 * is known; results that end in the same event-loop turn share one message. Resolves with
 * the number of attempts once every result has been posted.
 */
export async function deliverBatch(batch: DeliveryBatchMessage): Promise<number> {
  const port = batch.results;
  let pending: BatchResults = [];
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    if (pending.length === 0) return;
    const out = pending;
    pending = [];
    port.postMessage(out);
  };
  const report = (index: number, result: DeliveryResult) => {
    pending.push([index, result]);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  };
  try {
    await attemptAll(batch, report);
    flush();
    return batch.items.length;
  } finally {
    port.close();
  }
}

/**
 * A batch of one attempt, its result the task's own: no result port to make and transfer,
 * which is most of a worker round trip's cost when deliveries go one at a time (low rates).
 */
export async function deliverOne(batch: DeliveryBatch): Promise<DeliveryResult> {
  let result: DeliveryResult | undefined;
  await attemptAll(batch, (_index, r) => {
    result = r;
  });
  if (result === undefined) throw new Error("deliverOne: a batch of one attempt gave no result");
  return result;
}

/** Runs a batch's attempts at once; `report` gets each result as soon as it is known. */
async function attemptAll(
  batch: DeliveryBatch,
  report: (index: number, result: DeliveryResult) => void,
): Promise<void> {
  const started = performance.now();
  let transport: Transport | undefined;
  let refusal: unknown;
  try {
    transport = transportFor(batch);
  } catch (err) {
    refusal = err;
  }
  // URL checks and key parsing once per endpoint of the batch, not per attempt.
  const targets = batch.destinations.map((d): Target | { refused: unknown } => {
    if (!transport) return { refused: refusal };
    try {
      return { url: transport.guard.checkUrl(d.url), ring: keyRingFor(d.secrets) };
    } catch (err) {
      return { refused: err };
    }
  });
  const deadline = new Deadline(batch.timeoutMs, batch.items.length);
  try {
    await Promise.all(
      batch.items.map(async (item, index) => {
        const target = targets[item.destination];
        let result: DeliveryResult;
        const webhook = transport && target && !("refused" in target) ? render(item.event) : undefined;
        if (!transport || !target || "refused" in target) {
          const why = target && "refused" in target ? target.refused : (refusal ?? new Error("no such destination"));
          result = refusedResult(why, Math.round(performance.now() - started));
        } else if (webhook === undefined || "error" in webhook) {
          result = refusedResult(webhook?.error, Math.round(performance.now() - started));
        } else {
          result = await post(transport, target, webhook.body, webhook.id, batch, performance.now(), deadline);
        }
        report(index, result);
      }),
    );
  } finally {
    deadline.clear();
  }
}

interface Target {
  url: URL;
  ring: SigningKeyRing;
}

/** The webhook of a stored event: its id (webhook-id) and JSON body; an event that cannot be read fails alone. */
function render(event: Uint8Array): { id: string; body: string } | { error: Error } {
  try {
    const decoded = fromBinary(EventSchema, event);
    return { id: decoded.id, body: JSON.stringify(webhookBody(decoded)) };
  } catch (err) {
    return { error: new Error(`cannot build the webhook: ${err instanceof Error ? err.message : String(err)}`) };
  }
}

type RequestSettings = Pick<DeliveryTask, "signatureHeader" | "timeoutMs" | "userAgent">;

/** One signed POST. Never throws: every failure is a result the retry policy reads. */
async function post(
  transport: Transport,
  target: Target,
  body: string,
  webhookId: string,
  settings: RequestSettings,
  started: number,
  deadline: Deadline,
): Promise<DeliveryResult> {
  const elapsed = () => Math.round(performance.now() - started);
  const { timeoutMs } = settings;
  // This attempt's time: receivers reject old timestamps, so a retry is signed afresh.
  const timestamp = Math.floor(Date.now() / 1000);
  let signature: string;
  try {
    signature = target.ring.sign(webhookId, timestamp, body);
  } catch (err) {
    return refusedResult(err, elapsed());
  }
  const { url } = target;

  try {
    // undici 7 never follows redirects unless a redirect interceptor is composed in: a 3xx
    // comes back as the result, and the policy fails the delivery.
    const response = await transport.agent.request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": settings.userAgent,
        "webhook-id": webhookId,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": signature,
        [settings.signatureHeader.toLowerCase()]: signature,
      },
      body,
      signal: deadline.controller.signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    const latencyMs = elapsed();
    let responseBody = "";
    // Most receivers answer with an empty body: let it end without the reader's promise and listeners.
    if (response.headers["content-length"] === "0") response.body.resume();
    else responseBody = await readHead(response.body);
    const retryAfterHeader = response.headers["retry-after"];
    const retryAfterMs = parseRetryAfter(Array.isArray(retryAfterHeader) ? retryAfterHeader[0] : retryAfterHeader);
    // Assigned rather than spread in: an object spread is a slow clone at this rate.
    const result: DeliveryResult = {
      statusCode: response.statusCode,
      latencyMs,
      error: "",
      responseBody,
      timedOut: false,
      networkError: false,
      refused: false,
    };
    if (retryAfterMs !== undefined) result.retryAfterMs = retryAfterMs;
    return result;
  } catch (err) {
    return failureResult(err, elapsed(), deadline.expired, timeoutMs);
  }
}

/**
 * The first 1 KiB of the body as text. Decoding never throws (bad UTF-8 becomes U+FFFD);
 * a body that fails or stalls mid-way keeps what arrived: the status already decided.
 */
function readHead(body: Readable): Promise<string> {
  // Listeners rather than for-await: an async iterator per response is measurable CPU at
  // thousands of deliveries a second, and most receivers answer with an empty body.
  return new Promise((resolve) => {
    const head: Buffer[] = [];
    let headBytes = 0;
    let total = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      body.off("data", onData);
      resolve(head.length === 0 ? "" : Buffer.concat(head).toString("utf8").replaceAll("\u0000", ""));
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (headBytes < RESPONSE_BODY_LIMIT) {
        const part = chunk.subarray(0, RESPONSE_BODY_LIMIT - headBytes);
        head.push(part);
        headBytes += part.length;
      }
      if (total > DRAIN_LIMIT) {
        finish();
        body.destroy();
      }
    };
    body.on("data", onData);
    body.once("end", finish);
    // A body that fails or stalls mid-way keeps what arrived: the status already decided.
    body.once("error", finish);
    body.once("close", finish);
  });
}

function refusedResult(err: unknown, latencyMs: number): DeliveryResult {
  const code = errorCodeOf(err);
  const message =
    code !== undefined
      ? `${code}: ${(err as Error).message}`
      : err instanceof SigningSecretError
        ? err.message
        : `request not sent: ${errorText(err)}`;
  return {
    statusCode: 0,
    latencyMs,
    error: message,
    responseBody: "",
    timedOut: false,
    networkError: false,
    refused: true,
  };
}

function failureResult(err: unknown, latencyMs: number, timedOut: boolean, timeoutMs: number): DeliveryResult {
  const base = { statusCode: 0, latencyMs, responseBody: "" };
  // The destination rule refused what a name resolved to (the guard's lookup, at connect time).
  const refusal = findCause(err, (e) => ownCode(e)?.startsWith("AIGW_DESTINATION_") === true);
  if (refusal) {
    const error = `${ownCode(refusal)}: ${refusal.message}`;
    return { ...base, error, timedOut: false, networkError: false, refused: true };
  }
  if (
    timedOut ||
    findCause(
      err,
      (e) =>
        hasCode(e, "UND_ERR_HEADERS_TIMEOUT") ||
        hasCode(e, "UND_ERR_BODY_TIMEOUT") ||
        hasCode(e, "UND_ERR_CONNECT_TIMEOUT"),
    )
  ) {
    return { ...base, error: `timed out after ${timeoutMs} ms`, timedOut: true, networkError: false, refused: false };
  }
  // A request undici refuses to build (e.g. a bad signature_header name) will not improve on retry.
  if (err instanceof undiciErrors.InvalidArgumentError) {
    return {
      ...base,
      error: `request not sent: ${errorText(err)}`,
      timedOut: false,
      networkError: false,
      refused: true,
    };
  }
  return { ...base, error: errorText(err), timedOut: false, networkError: true, refused: false };
}

function ownCode(err: unknown): string | undefined {
  const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return isErrorCode(code) ? code : undefined;
}

function hasCode(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}

function findCause(err: unknown, match: (e: unknown) => boolean): Error | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current; depth++) {
    if (match(current)) return current as Error;
    if (current instanceof AggregateError) {
      for (const inner of current.errors) if (match(inner)) return inner as Error;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const cause = err.cause instanceof Error && err.cause.message !== err.message ? `: ${err.cause.message}` : "";
  const text = `${err.message}${cause}`;
  return typeof code === "string" && !text.includes(code) ? `${text} (${code})` : text;
}

/** Closes this thread's keep-alive agents (tests that call deliver() in-process). */
export async function closeTransports(): Promise<void> {
  const all = [...transports.values()];
  transports.clear();
  await Promise.allSettled(all.map((t) => t.agent.close()));
}
