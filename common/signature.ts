import { createHmac } from "node:crypto";

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): each key signs
 * "id.timestamp.body" with HMAC-SHA256; the header carries one `v1,<base64>` per key,
 * space-separated, so a receiver holding either key of a rotation verifies. The delivery
 * worker signs with this; common/verify.ts (the package's `aigw/verify`) checks with it.
 */

export const SECRET_PREFIX = "whsec_";
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class SigningSecretError extends Error {
  override readonly name = "SigningSecretError";
}

/**
 * The key bytes of a secret: `whsec_` + base64 is decoded (what standardwebhooks and svix
 * do); any other text is used as its raw UTF-8 bytes (DESIGN.md "Webhook request").
 */
export function parseSecret(secret: string): Buffer {
  if (secret.length === 0) throw new SigningSecretError("signing secret is empty");
  if (!secret.startsWith(SECRET_PREFIX)) return Buffer.from(secret, "utf8");
  const encoded = secret.slice(SECRET_PREFIX.length);
  // Buffer.from(…, "base64") silently skips bad characters; a typo must not become a different key.
  if (encoded.length === 0 || !BASE64.test(encoded)) {
    throw new SigningSecretError("signing secret starts with whsec_ but the rest is not base64");
  }
  return Buffer.from(encoded, "base64");
}

/** The HMAC-SHA256 of one message under one key (32 bytes). */
export function macWithKey(key: Uint8Array, id: string, timestampSeconds: number, body: string | Uint8Array): Buffer {
  const hmac = createHmac("sha256", key);
  if (typeof body === "string") return hmac.update(`${id}.${timestampSeconds}.${body}`, "utf8").digest();
  return hmac.update(`${id}.${timestampSeconds}.`, "utf8").update(body).digest();
}

/** The signature of one message under one key: `v1,<base64 HMAC-SHA256>`. */
export function signWithKey(key: Uint8Array, id: string, timestampSeconds: number, body: string): string {
  return `v1,${macWithKey(key, id, timestampSeconds, body).toString("base64")}`;
}

/** The `webhook-signature` value: one `v1,…` per secret, space-separated. */
export function sign(secrets: readonly string[], id: string, timestampSeconds: number, body: string): string {
  return new SigningKeyRing(secrets).sign(id, timestampSeconds, body);
}

/** The keys an endpoint signs with right now (more than one during a rotation's overlap). */
export class SigningKeyRing {
  private readonly keys: Buffer[];

  constructor(secrets: readonly string[]) {
    if (secrets.length === 0) throw new SigningSecretError("no signing key to sign with");
    this.keys = secrets.map(parseSecret);
  }

  get size(): number {
    return this.keys.length;
  }

  sign(id: string, timestampSeconds: number, body: string): string {
    if (!Number.isSafeInteger(timestampSeconds) || timestampSeconds < 0) {
      throw new RangeError(`webhook timestamp must be whole unix seconds, got ${timestampSeconds}`);
    }
    return this.keys.map((key) => signWithKey(key, id, timestampSeconds, body)).join(" ");
  }
}
