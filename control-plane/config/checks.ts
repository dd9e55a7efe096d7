import { isIP } from "node:net";

// Each check returns what is wrong and what is expected, or undefined when the value is fine.
// None echoes a URL or secret back: both can carry credentials, and problems get logged.

/** RFC 9110 token: the characters a header field name may use. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
export const ENDPOINT_NAME = /^[a-z0-9_-]{1,64}$/;
export const MIN_SECRET_BYTES = 16;

export function checkWebhookUrl(text: string, requireHttps: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'is not a valid URL; expected an absolute http(s) URL such as "https://api.example.com/webhooks"';
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return `uses the unsupported scheme "${url.protocol.slice(0, -1)}"; expected an https:// (or http://) URL`;
  }
  if (url.username !== "" || url.password !== "") {
    return "must not contain credentials (user:password@); receivers authenticate deliveries by their signature";
  }
  if (url.protocol === "http:" && requireHttps) {
    return (
      "uses http:// but security.require_https is true; use an https:// URL, or set " +
      "security.require_https: false to allow plain HTTP (e.g. for local test receivers)"
    );
  }
  return undefined;
}

export function checkHeaderName(name: string): string | undefined {
  if (HEADER_NAME.test(name)) return undefined;
  return `${JSON.stringify(name)} is not a valid HTTP header name; expected letters, digits and !#$%&'*+-.^_\`|~ without spaces or ":", e.g. "X-Webhook-Signature"`;
}

export function checkCidr(text: string): string | undefined {
  const expected = 'expected ADDRESS/PREFIX such as "127.0.0.0/8", "10.0.0.0/8" or "::1/128"';
  const slash = text.indexOf("/");
  if (slash < 0) return `${JSON.stringify(text)} is not a CIDR (no /prefix); ${expected}`;
  const address = text.slice(0, slash);
  const prefix = text.slice(slash + 1);
  const family = isIP(address);
  if (family === 0) return `${JSON.stringify(address)} is not an IPv4 or IPv6 address; ${expected}`;
  const maxPrefix = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix)) return `prefix "/${prefix}" is not a number; expected /0 to /${maxPrefix}`;
  if (Number(prefix) > maxPrefix) {
    return `prefix "/${prefix}" is out of range for an IPv${family} address; expected /0 to /${maxPrefix}`;
  }
  return undefined;
}

/**
 * Standard Webhooks secrets are "whsec_" + base64 of the key; anything else is used as raw
 * bytes. The base64 must be canonical (padded) because receivers' libraries decode it strictly.
 */
export function checkSigningSecret(secret: string): string | undefined {
  if (secret.trim() === "") return 'is empty; expected "whsec_" + base64 of at least 16 bytes, or non-empty raw text';
  if (!secret.startsWith("whsec_")) return undefined;
  const encoded = secret.slice("whsec_".length);
  if (encoded === "" || !BASE64.test(encoded)) {
    return (
      'is not valid base64 after "whsec_"; expected standard base64 (A-Z a-z 0-9 + /, padded with = to a ' +
      'multiple of 4 characters), e.g. "whsec_" + the output of "openssl rand -base64 32"'
    );
  }
  const bytes = Buffer.from(encoded, "base64").length;
  if (bytes < MIN_SECRET_BYTES) {
    return `decodes to ${bytes} bytes after "whsec_"; expected at least ${MIN_SECRET_BYTES} bytes (24 or 32 are usual)`;
  }
  return undefined;
}

export function checkStorageUrl(text: string): string | undefined {
  const expected = 'expected "sqlite:PATH" (e.g. "sqlite:.aigw/aigw.db") or a "postgres://" / "postgresql://" URL';
  if (text.startsWith("sqlite:")) {
    return text.length > "sqlite:".length ? undefined : `has no path after "sqlite:"; ${expected}`;
  }
  if (text.startsWith("postgres://") || text.startsWith("postgresql://")) {
    try {
      const url = new URL(text);
      return url.hostname !== "" || url.searchParams.has("host") ? undefined : `names no host; ${expected}`;
    } catch {
      return `is not a valid PostgreSQL URL; ${expected}`;
    }
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text)?.[1];
  return `${scheme ? `has the unsupported scheme "${scheme}"` : "is not a storage URL"}; ${expected}`;
}

export function checkEncryptionKey(key: string): string | undefined {
  const expected =
    'expected 32 bytes in base64 (e.g. from "openssl rand -base64 32"), or "" for a key file beside the SQLite file';
  if (!BASE64.test(key)) return `is not valid base64; ${expected}`;
  const bytes = Buffer.from(key, "base64").length;
  return bytes === 32 ? undefined : `decodes to ${bytes} bytes; ${expected}`;
}
