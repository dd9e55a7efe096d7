/**
 * The request headers addressed to aigw rather than the provider: `Prefer: respond-async`
 * (RFC 7240) and `x-aigw-webhook-url`. Neither goes upstream.
 */

export const WEBHOOK_URL_HEADER = "x-aigw-webhook-url";
export const MAX_WEBHOOK_URL_LENGTH = 2048;
const PREFER = "prefer";
const RESPOND_ASYNC = "respond-async";

export interface RequestDirectives {
  /** `Prefer: respond-async`: answer 202 and finish the call in the sidecar. */
  respondAsync: boolean;
  /** A valid x-aigw-webhook-url: every event of this request carries it. */
  webhookUrl: string | undefined;
  /** Why x-aigw-webhook-url was refused; the request is then answered 400. */
  webhookUrlProblem: string | undefined;
}

/**
 * Reads the directives from a request's raw headers; undefined (the common case) when the
 * request has none. Hot path: names are compared by length before they are lower-cased.
 */
export function readRequestDirectives(raw: readonly string[]): RequestDirectives | undefined {
  let directives: RequestDirectives | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === PREFER.length) {
      if (name.toLowerCase() !== PREFER || !prefersRespondAsync(raw[i + 1]!)) continue;
      directives ??= { respondAsync: false, webhookUrl: undefined, webhookUrlProblem: undefined };
      directives.respondAsync = true;
    } else if (name.length === WEBHOOK_URL_HEADER.length && name.toLowerCase() === WEBHOOK_URL_HEADER) {
      directives ??= { respondAsync: false, webhookUrl: undefined, webhookUrlProblem: undefined };
      const value = raw[i + 1]!.trim();
      const problem = webhookUrlProblem(value);
      if (problem === undefined && directives.webhookUrl !== undefined && directives.webhookUrl !== value) {
        directives.webhookUrlProblem = `${WEBHOOK_URL_HEADER} was sent twice with different URLs`;
      } else if (problem !== undefined) {
        directives.webhookUrlProblem = problem;
      } else {
        directives.webhookUrl = value;
      }
    }
  }
  return directives;
}

/** Why a webhook URL is unusable, or undefined when it is an absolute http(s) URL of bounded length. */
export function webhookUrlProblem(value: string): string | undefined {
  if (value === "") return `${WEBHOOK_URL_HEADER} is empty (expected an absolute http:// or https:// URL)`;
  if (value.length > MAX_WEBHOOK_URL_LENGTH) {
    return `${WEBHOOK_URL_HEADER} is ${value.length} characters long; at most ${MAX_WEBHOOK_URL_LENGTH} are allowed`;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `${WEBHOOK_URL_HEADER} ${JSON.stringify(shorten(value))} is not an absolute URL (expected e.g. https://example.com/hooks)`;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return `${WEBHOOK_URL_HEADER} must be an http:// or https:// URL, got ${url.protocol}`;
  }
  if (url.hostname === "") return `${WEBHOOK_URL_HEADER} has no host`;
  // Credentials in a URL end up in logs and stored events; receivers authenticate by signature.
  if (url.username !== "" || url.password !== "") return `${WEBHOOK_URL_HEADER} must not carry credentials`;
  return undefined;
}

/**
 * Removes the directives from headers bound upstream (a flat [name, value, …] list, in
 * place): the webhook URL entirely, and from Prefer only `respond-async` and its `wait`
 * (RFC 7240 4.3), since the sidecar honours them itself.
 */
export function stripDirectiveHeaders(headers: string[]): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    const lower = headers[i]!.toLowerCase();
    if (lower === WEBHOOK_URL_HEADER) {
      headers.splice(i, 2);
    } else if (lower === PREFER) {
      const kept = preferences(headers[i + 1]!).filter((p) => p.name !== RESPOND_ASYNC && p.name !== "wait");
      if (kept.length === 0) headers.splice(i, 2);
      else headers[i + 1] = kept.map((p) => p.text).join(", ");
    }
  }
}

function prefersRespondAsync(value: string): boolean {
  if (!value.toLowerCase().includes(RESPOND_ASYNC)) return false;
  return preferences(value).some((p) => p.name === RESPOND_ASYNC);
}

interface Preference {
  /** Lower-cased token before any "=" or ";". */
  name: string;
  text: string;
}

function preferences(value: string): Preference[] {
  const out: Preference[] = [];
  for (const part of value.split(",")) {
    const text = part.trim();
    if (text === "") continue;
    const end = text.search(/[=;\s]/);
    out.push({ name: (end === -1 ? text : text.slice(0, end)).toLowerCase(), text });
  }
  return out;
}

function shorten(value: string): string {
  return value.length > 80 ? `${value.slice(0, 77)}...` : value;
}
