import { timingSafeEqual } from "node:crypto";
import { AigwError, type ErrorCode } from "./errors.js";
import { macWithKey, parseSecret } from "./signature.js";

/**
 * Verifying an aigw webhook in a receiver: `import { verifyWebhook } from "aigw/verify"`.
 *
 *   const event = verifyWebhook(rawBody, req.headers, { secret: process.env.WEBHOOK_SECRET });
 *
 * Checks, in order: the three Standard Webhooks headers are there, webhook-timestamp is
 * whole unix seconds, one `v1,` signature in webhook-signature is the HMAC-SHA256 of
 * "id.timestamp.body" under one of the secrets (compared in constant time; give the new
 * and the old secret during a key rotation, either matches), webhook-timestamp is within
 * the tolerance of now (security.timestamp_tolerance_ms, default 5 minutes: a captured
 * webhook cannot be replayed later), and the body is JSON. Returns the parsed body, or
 * throws WebhookVerificationError whose `code` says which check failed.
 *
 * Pass the body exactly as received (bytes or the undecoded text), never re-serialised JSON.
 */

export const DEFAULT_TIMESTAMP_TOLERANCE_MS = 300_000;

export type WebhookHeaders =
  | { get(name: string): string | null }
  | Readonly<Record<string, string | readonly string[] | undefined>>;

export interface VerifyOptions {
  /** The endpoint's secret ("whsec_…" or raw text), or several: any one matching passes (key rotation). */
  secret: string | readonly string[];
  /** How far webhook-timestamp may be from now, either way; default 300000 (5 minutes). */
  toleranceMs?: number;
  /** Now, in milliseconds since the epoch; default Date.now(). */
  now?: number;
}

/** The body of an aigw webhook: `event` is its type, `id` its event id (README "Webhooks"). */
export type WebhookEvent = Record<string, unknown> & { event?: string; id?: string };

export interface VerifiedWebhook {
  /** webhook-id: the event id, the same on every attempt; dedupe by it. */
  id: string;
  /** webhook-timestamp, unix seconds of the attempt. */
  timestamp: number;
  /** now − timestamp, in milliseconds (negative when the timestamp is ahead). */
  ageMs: number;
  /** Index into the secrets of the one whose signature matched. */
  secretIndex: number;
  event: WebhookEvent;
}

type VerificationCode = Extract<ErrorCode, `AIGW_WEBHOOK_${string}`>;

export class WebhookVerificationError extends AigwError {
  override readonly name = "WebhookVerificationError";
  declare readonly code: VerificationCode;
  constructor(code: VerificationCode, message: string) {
    super(code, message);
  }
}

/** Verifies a webhook and returns its parsed body; throws WebhookVerificationError saying why not. */
export function verifyWebhook(
  body: string | Uint8Array,
  headers: WebhookHeaders,
  options: VerifyOptions,
): WebhookEvent {
  return verifyWebhookDetails(body, headers, options).event;
}

/** verifyWebhook, also saying which secret matched and how old the timestamp is. */
export function verifyWebhookDetails(
  body: string | Uint8Array,
  headers: WebhookHeaders,
  options: VerifyOptions,
): VerifiedWebhook {
  const secrets = typeof options.secret === "string" ? [options.secret] : [...options.secret];
  if (secrets.length === 0 || secrets.some((s) => s === "")) {
    throw new TypeError("verifyWebhook: options.secret must be a secret, or a list of secrets, none empty");
  }
  const toleranceMs = options.toleranceMs ?? DEFAULT_TIMESTAMP_TOLERANCE_MS;
  if (!(toleranceMs >= 0)) throw new TypeError("verifyWebhook: options.toleranceMs must be 0 or more");

  const id = header(headers, "webhook-id");
  const timestampText = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  const missing = [
    ["webhook-id", id],
    ["webhook-timestamp", timestampText],
    ["webhook-signature", signatures],
  ].filter(([, v]) => v === undefined || v === "");
  if (missing.length > 0) {
    throw new WebhookVerificationError(
      "AIGW_WEBHOOK_HEADERS_MISSING",
      `missing ${missing.map(([name]) => name).join(", ")}; pass the request's headers as received`,
    );
  }
  if (!/^\d{1,15}$/.test(timestampText!)) {
    throw new WebhookVerificationError(
      "AIGW_WEBHOOK_TIMESTAMP_INVALID",
      `webhook-timestamp ${JSON.stringify(timestampText!.slice(0, 40))} is not whole unix seconds`,
    );
  }
  const timestamp = Number(timestampText);

  const given = signatures!
    .split(" ")
    .filter((part) => part.startsWith("v1,"))
    .map((part) => Buffer.from(part.slice(3), "base64"));
  let secretIndex = -1;
  for (let i = 0; i < secrets.length && secretIndex < 0; i++) {
    const expected = macWithKey(parseSecret(secrets[i]!), id!, timestamp, body);
    // Every candidate is compared in full; only the length (public: 32 bytes) short-cuts.
    for (const candidate of given) {
      if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) secretIndex = i;
    }
  }
  if (secretIndex < 0) {
    const what = given.length === 0 ? "webhook-signature has no v1 signature" : "no signature matches";
    const keys = secrets.length === 1 ? "the secret" : `any of the ${secrets.length} secrets`;
    throw new WebhookVerificationError(
      "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
      `${what} under ${keys}: the body, webhook-id or webhook-timestamp was altered, or the secret is not this endpoint's`,
    );
  }

  const now = options.now ?? Date.now();
  const ageMs = now - timestamp * 1000;
  if (ageMs > toleranceMs) {
    throw new WebhookVerificationError(
      "AIGW_WEBHOOK_TIMESTAMP_EXPIRED",
      `the signature matches, but webhook-timestamp ${timestamp} is ${seconds(ageMs)} old, more than the tolerance of ${seconds(toleranceMs)}`,
    );
  }
  if (-ageMs > toleranceMs) {
    throw new WebhookVerificationError(
      "AIGW_WEBHOOK_TIMESTAMP_FUTURE",
      `the signature matches, but webhook-timestamp ${timestamp} is ${seconds(-ageMs)} ahead of this clock, more than the tolerance of ${seconds(toleranceMs)}`,
    );
  }

  let event: unknown;
  try {
    event = JSON.parse(typeof body === "string" ? body : Buffer.from(body).toString("utf8"));
  } catch {
    throw new WebhookVerificationError("AIGW_WEBHOOK_BODY_NOT_JSON", "the signature matches, but the body is not JSON");
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw new WebhookVerificationError(
      "AIGW_WEBHOOK_BODY_NOT_JSON",
      "the signature matches, but the body is not a JSON object",
    );
  }
  return { id: id!, timestamp, ageMs, secretIndex, event: event as WebhookEvent };
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === "function") {
    return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  }
  const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  let value = record[name];
  if (value === undefined) {
    const key = Object.keys(record).find((k) => k.toLowerCase() === name);
    value = key === undefined ? undefined : record[key];
  }
  // A header sent twice: Node joins most, but keeps arrays for some; the first is what was signed.
  return Array.isArray(value) ? value[0] : (value as string | undefined);
}

function seconds(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 7200 ? `${Math.round(s / 360) / 10} h (${s} s)` : `${s} s`;
}
