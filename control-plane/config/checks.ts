// Each check returns what is wrong and what is expected, or undefined when the value is fine.
// None echoes a URL or secret back: both can carry credentials, and problems get logged.
// Webhook URLs and signing secrets have their own rules in control-plane/security/.

/** RFC 9110 token: the characters a header field name may use. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
export const ENDPOINT_NAME = /^[a-z0-9_-]{1,64}$/;

export function checkHeaderName(name: string): string | undefined {
  if (HEADER_NAME.test(name)) return undefined;
  return `${JSON.stringify(name)} is not a valid HTTP header name; expected letters, digits and !#$%&'*+-.^_\`|~ without spaces or ":", e.g. "X-Webhook-Signature"`;
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

/** Org ids and app names, as endpoints, tokens and sidecars (--org, --app) name them. */
export const ORG_ID = /^[A-Za-z0-9._-]{1,128}$/;

export function checkOrgId(id: string): string | undefined {
  if (ORG_ID.test(id)) return undefined;
  return `${JSON.stringify(id.slice(0, 140))} is not an org id; expected 1-128 characters of A-Z, a-z, 0-9, ".", "_" and "-"`;
}

export function checkAppName(app: string): string | undefined {
  if (ORG_ID.test(app)) return undefined;
  return `${JSON.stringify(app.slice(0, 140))} is not an app name; expected 1-128 characters of A-Z, a-z, 0-9, ".", "_" and "-"`;
}
