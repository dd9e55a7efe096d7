import { randomBytes } from "node:crypto";
import { SECRET_PREFIX } from "../../common/signature.js";

/**
 * Signing secrets: the one check for every secret aigw accepts (webhooks.NAME.secret in the
 * config, endpoint.secret and RotateSigningKey's secret in the Admin API) and the one
 * generator for every secret it makes (key rotation, org keys of one-off endpoints).
 *
 * A secret is "whsec_" + standard padded base64 of the key (Standard Webhooks), or any
 * other text, used as its UTF-8 bytes. Either way the key must have MIN_SECRET_BYTES (16,
 * the least the config file ever took for a "whsec_" secret; an HMAC-SHA256 key shorter
 * than that is guessable offline from one captured webhook). Generated keys have 32.
 */

export const MIN_SECRET_BYTES = 16;
/** Bytes of a generated key: SHA-256's block-size half, as svix and Standard Webhooks make them. */
export const GENERATED_SECRET_BYTES = 32;
/** Long enough for any real key, short enough that a row stays small. */
export const MAX_SECRET_LENGTH = 1024;

/** Canonical padded base64: what receivers' libraries (standardwebhooks, svix) decode without complaint. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface SecretProblem {
  code: "AIGW_SECRET_INVALID";
  message: string;
}

/** What is wrong with a secret, or undefined; never echoes the secret. */
export function signingSecretProblem(secret: string): SecretProblem | undefined {
  const problem = (message: string): SecretProblem => ({ code: "AIGW_SECRET_INVALID", message });
  const expected = `expected "whsec_" + base64 of at least ${MIN_SECRET_BYTES} random bytes (aigw keys rotate generates one)`;
  if (secret.trim() === "") return problem(`is empty; ${expected}`);
  if (secret.length > MAX_SECRET_LENGTH)
    return problem(`is ${secret.length} characters long; at most ${MAX_SECRET_LENGTH}`);
  if (secret !== secret.trim()) {
    return problem("starts or ends with whitespace, which would become part of the key; remove it");
  }
  if (!secret.startsWith(SECRET_PREFIX)) {
    const bytes = Buffer.byteLength(secret, "utf8");
    if (bytes < MIN_SECRET_BYTES) return problem(`is ${bytes} bytes of text; ${expected}`);
    return undefined;
  }
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (encoded === "" || !BASE64.test(encoded)) {
    return problem(
      'is not valid base64 after "whsec_"; expected standard base64 (A-Z a-z 0-9 + /, padded with = to a ' +
        'multiple of 4 characters), e.g. "whsec_" + the output of "openssl rand -base64 32"',
    );
  }
  const bytes = Buffer.from(encoded, "base64").length;
  if (bytes < MIN_SECRET_BYTES) return problem(`decodes to ${bytes} bytes after "whsec_"; ${expected}`);
  return undefined;
}

/** A fresh Standard Webhooks secret from the CSPRNG: "whsec_" + base64 of 32 random bytes. */
export function generateSigningSecret(): string {
  return SECRET_PREFIX + randomBytes(GENERATED_SECRET_BYTES).toString("base64");
}

/**
 * The longest a rotated-out key keeps signing: long enough for every receiver to take the
 * new secret, short enough that a leaked secret does not stay valid for years.
 */
export const MAX_KEY_OVERLAP_SECONDS = 30 * 24 * 60 * 60;

/** What is wrong with a rotation's overlap (0 asks for the default), or undefined. */
export function keyOverlapProblem(seconds: number): string | undefined {
  if (seconds <= MAX_KEY_OVERLAP_SECONDS) return undefined;
  return `must be at most ${MAX_KEY_OVERLAP_SECONDS} (30 days), got ${seconds}; 0 for the default of 24 hours`;
}
