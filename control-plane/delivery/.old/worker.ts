import { Agent, errors as undiciErrors } from "undici";
import { DestinationGuard, DestinationRefusedError } from "./destination-guard.js";
import { parseRetryAfter } from "./retry-policy.js";
import { SigningKeyRing, SigningSecretError } from "./signing.js";
import type { DeliveryResult, DeliveryTask } from "./task.js";

/**
 * A piscina worker: one signed POST per task. It never throws out of a task; every
 * failure, including garbage from the receiver, becomes a result the retry policy reads.
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

function transportFor(task: DeliveryTask): Transport {
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
  const elapsed = () => Math.round(performance.now() - started);
  let transport: Transport;
  let url: URL;
  let signature: string;
  // This attempt's time: receivers reject old timestamps, so a retry is signed afresh.
  const timestamp = Math.floor(Date.now() / 1000);
  try {
    transport = transportFor(task);
    url = transport.guard.checkUrl(task.url);
    signature = keyRingFor(task.secrets).sign(task.webhookId, timestamp, task.body);
  } catch (err) {
    return refusedResult(err, elapsed());
  }

  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new Error(`no complete response within ${task.timeoutMs} ms`));
  }, task.timeoutMs);
  try {
    // undici 7 never follows redirects unless a redirect interceptor is composed in: a 3xx
    // comes back as the result, and the policy fails the delivery.
    const response = await transport.agent.request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": task.userAgent,
        "webhook-id": task.webhookId,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": signature,
        [task.signatureHeader.toLowerCase()]: signature,
      },
      body: task.body,
      signal: controller.signal,
      headersTimeout: task.timeoutMs,
      bodyTimeout: task.timeoutMs,
    });
    const latencyMs = elapsed();
    const responseBody = await readHead(response.body);
    const retryAfterHeader = response.headers["retry-after"];
    const retryAfterMs = parseRetryAfter(Array.isArray(retryAfterHeader) ? retryAfterHeader[0] : retryAfterHeader);
    return {
      statusCode: response.statusCode,
      latencyMs,
      error: "",
      responseBody,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      timedOut: false,
      networkError: false,
      refused: false,
    };
  } catch (err) {
    return failureResult(err, elapsed(), timedOut, task.timeoutMs);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The first 1 KiB of the body as text. Decoding never throws (bad UTF-8 becomes U+FFFD);
 * a body that fails or stalls mid-way keeps what arrived: the status already decided.
 */
async function readHead(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }): Promise<string> {
  const head: Buffer[] = [];
  let headBytes = 0;
  let total = 0;
  try {
    for await (const chunk of body) {
      total += chunk.length;
      if (headBytes < RESPONSE_BODY_LIMIT) {
        const part = chunk.subarray(0, RESPONSE_BODY_LIMIT - headBytes);
        head.push(part);
        headBytes += part.length;
      }
      if (total > DRAIN_LIMIT) {
        body.destroy();
        break;
      }
    }
  } catch {
    // keep what arrived
  }
  return Buffer.concat(head).toString("utf8").replaceAll("\u0000", "");
}

function refusedResult(err: unknown, latencyMs: number): DeliveryResult {
  const message =
    err instanceof DestinationRefusedError || err instanceof SigningSecretError
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
  const refusal = findCause(err, (e) => e instanceof DestinationRefusedError || hasCode(e, "AIGW_DESTINATION_REFUSED"));
  if (refusal) return { ...base, error: refusal.message, timedOut: false, networkError: false, refused: true };
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
