/**
 * Header handling at the proxy's two edges. Only connection-level (hop-by-hop) headers
 * are dropped (RFC 9110 7.6.1); everything else, authorization included, passes as is.
 */

export const REQUEST_ID_HEADER = "x-aigw-request-id";

/** A header name (RFC 9110 token). */
export const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Controls other than tab (a bare CR or LF included) in a header value: what llhttp refuses. */
export const HEADER_CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
/**
 * Every header line of a head at once, from `from` (the CRLF that ends its start line) to the
 * end: each line a token, a colon and a value without controls (tab allowed). The same as
 * HEADER_TOKEN on each name (the text before the line's first colon) and HEADER_CONTROL on
 * each value, in one pass instead of two regular expressions per header; lines end at CRLF,
 * so a bare CR or LF fails it as HEADER_CONTROL would. Where it fails, the per-line checks
 * find the line and say what is wrong with it.
 */
const HEADER_LINES = /(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)*$/y;

export function headerLinesValid(text: string, from: number): boolean {
  HEADER_LINES.lastIndex = from;
  return HEADER_LINES.test(text);
}

/** A Content-Length value both HTTP parsers accept. */
export const LENGTH_DIGITS = /^[0-9]{1,15}$/;

/**
 * A header value in `text` between `start` (after the colon) and `end` (its line's end),
 * without the spaces and tabs before it, and after it when `trimEnd`: node's server gives
 * request header values trimmed at both ends, undici gives response header values with what
 * follows them. One slice, no untrimmed copy.
 */
export function valueAt(text: string, start: number, end: number, trimEnd: boolean): string {
  let from = start;
  let to = end;
  for (let c = text.charCodeAt(from); from < to && (c === 0x20 || c === 0x09); c = text.charCodeAt(++from));
  if (trimEnd)
    for (let c = text.charCodeAt(to - 1); to > from && (c === 0x20 || c === 0x09); c = text.charCodeAt(--to - 1));
  return text.slice(from, to);
}

/** What the proxy does with a header, by name (see headerKind). */
enum Kind {
  Other,
  /** Connection-level (RFC 9110 7.6.1), dropped at both edges. */
  HopByHop,
  Connection,
  Host,
  Expect,
  ContentLength,
  TransferEncoding,
  AcceptEncoding,
  ContentType,
  ContentEncoding,
  RequestId,
}

/**
 * The kind of header `name` is, in any case: by its length first, then one comparison without
 * a lower-cased copy (a request's or a response's names were each lower-cased and looked up
 * in a set before).
 */
function headerKind(name: string): Kind {
  switch (name.length) {
    case 2:
      return isNamed(name, "te") ? Kind.HopByHop : Kind.Other;
    case 4:
      return isNamed(name, "host") ? Kind.Host : Kind.Other;
    case 6:
      return isNamed(name, "expect") ? Kind.Expect : Kind.Other;
    case 7:
      return isNamed(name, "trailer") || isNamed(name, "upgrade") ? Kind.HopByHop : Kind.Other;
    case 10:
      if (isNamed(name, "connection")) return Kind.Connection;
      return isNamed(name, "keep-alive") ? Kind.HopByHop : Kind.Other;
    case 12:
      return isNamed(name, "content-type") ? Kind.ContentType : Kind.Other;
    case 14:
      return isNamed(name, "content-length") ? Kind.ContentLength : Kind.Other;
    case 15:
      return isNamed(name, "accept-encoding") ? Kind.AcceptEncoding : Kind.Other;
    case 16:
      if (isNamed(name, "content-encoding")) return Kind.ContentEncoding;
      return isNamed(name, "proxy-connection") ? Kind.HopByHop : Kind.Other;
    case 17:
      if (isNamed(name, "transfer-encoding")) return Kind.TransferEncoding;
      return isNamed(name, REQUEST_ID_HEADER) ? Kind.RequestId : Kind.Other;
    case 18:
      return isNamed(name, "proxy-authenticate") ? Kind.HopByHop : Kind.Other;
    case 19:
      return isNamed(name, "proxy-authorization") ? Kind.HopByHop : Kind.Other;
    default:
      return Kind.Other;
  }
}

/** What the request's raw headers said about its body, read while copying them. */
export interface RequestHeaderFacts {
  /** The client sent a body (content-length > 0 or a transfer-encoding). */
  hasBody: boolean;
  /** The content-length the client sent; -1 when none (or a transfer-encoding). */
  contentLength: number;
}

export interface UpstreamHeaderOptions {
  /** The body is a buffer the client library sizes itself: drop the client's content-length. */
  dropContentLength: boolean;
  /** Ask for an uncompressed response (see UpstreamRewrite.identityEncoding). */
  identityEncoding: boolean;
}

/**
 * Request headers for the upstream, as a flat [name, value, …] list (undici's cheapest
 * form). `host` is left out so that the upstream's own host is sent; `expect` too, since
 * Node already answered "100-continue" to the client.
 */
export function upstreamRequestHeaders(
  raw: readonly string[],
  options: UpstreamHeaderOptions,
  facts: RequestHeaderFacts,
): string[] {
  const out: string[] = [];
  let connectionTokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    switch (headerKind(name)) {
      case Kind.Host:
      case Kind.Expect:
        continue;
      case Kind.ContentLength:
        if (value !== "0") facts.hasBody = true;
        if (facts.contentLength === -1) facts.contentLength = Number(value);
        if (options.dropContentLength) continue;
        break;
      case Kind.TransferEncoding:
        facts.hasBody = true;
        facts.contentLength = Number.NaN;
        continue;
      case Kind.AcceptEncoding:
        if (options.identityEncoding) continue;
        break;
      case Kind.Connection:
        connectionTokens = addConnectionTokens(connectionTokens, value);
        continue;
      case Kind.HopByHop:
        continue;
    }
    out.push(name, value);
  }
  if (connectionTokens) removeNamed(out, connectionTokens);
  if (options.identityEncoding) out.push("accept-encoding", "identity");
  return out;
}

/** The response head to send the client, and what the proxy needs to know from it. */
export interface ClientResponseHead {
  headers: string[];
  /** Lower-cased content-type, "" when absent. */
  contentType: string;
  /** Lower-cased content-encoding, "" when absent. */
  contentEncoding: string;
}

/**
 * Response headers for the client from undici's raw [name, value, …] buffers (or the lean
 * client's strings), plus
 * x-aigw-request-id. `dropContentLength` when the proxy edits the body on the way.
 */
export function clientResponseHead(
  raw: readonly (Buffer | string)[],
  requestId: string,
  dropContentLength: boolean,
): ClientResponseHead {
  const headers: string[] = [];
  let contentType = "";
  let contentEncoding = "";
  let connectionTokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const rawName = raw[i]!;
    const rawValue = raw[i + 1]!;
    const name = typeof rawName === "string" ? rawName : rawName.toString("latin1");
    const value = typeof rawValue === "string" ? rawValue : rawValue.toString("latin1");
    switch (headerKind(name)) {
      case Kind.ContentType:
        contentType = value.toLowerCase();
        break;
      case Kind.ContentEncoding:
        contentEncoding = value.trim().toLowerCase();
        break;
      case Kind.ContentLength:
        if (dropContentLength) continue;
        break;
      case Kind.RequestId:
        // An upstream that is itself an aigw sidecar: the id of this hop wins.
        continue;
      case Kind.TransferEncoding:
        // Hop-by-hop: the client's framing is the proxy's own.
        continue;
      case Kind.Connection:
        connectionTokens = addConnectionTokens(connectionTokens, value);
        continue;
      case Kind.HopByHop:
        continue;
    }
    headers.push(name, value);
  }
  if (connectionTokens) removeNamed(headers, connectionTokens);
  headers.push(REQUEST_ID_HEADER, requestId);
  return { headers, contentType, contentEncoding };
}

/** The first value of a header in a flat [name, value, …] list, by lower-case name. */
export function headerValue(headers: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === lowerName) return headers[i + 1];
  }
  return undefined;
}

/** Headers named in `Connection` are hop-by-hop too (RFC 9110 7.6.1). */
function addConnectionTokens(tokens: Set<string> | undefined, value: string): Set<string> | undefined {
  // The value nearly every peer sends (node's server on every kept-alive response): nothing
  // to add, no split, trim or lower-cased copies.
  if (isNamed(value, "keep-alive") || isNamed(value, "close")) return tokens;
  for (const token of value.split(",")) {
    const t = token.trim().toLowerCase();
    if (t === "" || t === "close" || t === "keep-alive") continue;
    tokens ??= new Set();
    tokens.add(t);
  }
  return tokens;
}

function removeNamed(headers: string[], lowerNames: ReadonlySet<string>): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (lowerNames.has(headers[i]!.toLowerCase())) headers.splice(i, 2);
  }
}

/** Bodies up to this size leave in one buffer with the head that goes before them (a copy cheaper than a second write). */
export const COALESCE_BYTES = 16 * 1024;

/** `head` (latin1, as node writes a head) followed by `body`, in one buffer. */
export function withHead(head: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(head.length + body.length);
  out.write(head, 0, "latin1");
  body.copy(out, head.length);
  return out;
}

/** Whether header `name` is `lower` (lower-case ASCII) in any case: no lower-cased copy made. */
export function isNamed(name: string, lower: string): boolean {
  const length = lower.length;
  if (name.length !== length) return false;
  for (let i = 0; i < length; i++) {
    const c = name.charCodeAt(i);
    if ((c >= 0x41 && c <= 0x5a ? c | 0x20 : c) !== lower.charCodeAt(i)) return false;
  }
  return true;
}
