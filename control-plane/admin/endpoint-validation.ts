import { BlockList, isIP } from "node:net";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import type { SecurityConfig } from "../config/types.js";

/**
 * Checks of what the Admin API accepts for an endpoint. Pure functions: each returns the
 * problem as text (without the field path, which the caller knows) or undefined when the
 * value is fine, so the RPC layer decides how to report it.
 */

export const ENDPOINT_NAME_PATTERN = /^[a-z0-9_-]{1,64}$/;

/** Long enough for any real receiver URL, short enough that a row stays small. */
const MAX_URL_LENGTH = 2048;
const MAX_SECRET_LENGTH = 1024;

export function checkEndpointName(name: string): string | undefined {
  if (name === "") return "required";
  if (!ENDPOINT_NAME_PATTERN.test(name)) return "must match [a-z0-9_-]{1,64}";
  return undefined;
}

/**
 * The destination guard proper runs at connect time on resolved addresses (DNS can
 * change); this refuses early what can already be seen in the URL text: a non-http(s)
 * scheme, plain http while `require_https` holds, credentials, and literal private,
 * loopback or link-local addresses outside `allowed_networks`.
 */
export function checkEndpointUrl(raw: string, security: SecurityConfig): string | undefined {
  if (raw === "") return "required";
  if (raw.length > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return security.requireHttps ? "must be an absolute https URL" : "must be an absolute http or https URL";
  }
  if (security.requireHttps && url.protocol !== "https:") {
    return "must be an absolute https URL (security.require_https is true)";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "must be an absolute http or https URL";
  if (url.username !== "" || url.password !== "") return "must not contain credentials";
  if (url.hash !== "") return "must not contain a fragment";
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const kind = privateAddressKind(host);
  if (kind !== undefined && !isAllowedNetwork(host, security.allowedNetworks)) {
    return `destination ${host} is ${kind} (not in security.allowed_networks)`;
  }
  return undefined;
}

/** "whsec_" + base64 (the Standard Webhooks form), or raw text used as bytes. */
export function checkSecret(secret: string): string | undefined {
  if (secret === "") return "required";
  if (secret.length > MAX_SECRET_LENGTH) return `must be at most ${MAX_SECRET_LENGTH} characters`;
  if (secret.startsWith("whsec_")) {
    const b64 = secret.slice("whsec_".length);
    if (b64 === "" || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || Buffer.from(b64, "base64").length === 0) {
      return 'must be "whsec_" followed by base64';
    }
  }
  return undefined;
}

const KNOWN_EVENT_TYPES = new Set<number>([
  EventType.COMPLETION,
  EventType.ERROR,
  EventType.STREAMING,
  EventType.BUDGET,
  EventType.RATE_LIMIT,
]);

/** Index of the first event type that is not a known one (UNSPECIFIED included), or -1. */
export function firstUnknownEventType(types: readonly EventType[]): number {
  return types.findIndex((t) => !KNOWN_EVENT_TYPES.has(t));
}

const PRIVATE_V4: [string, number, string][] = [
  ["0.0.0.0", 8, "an unspecified address"],
  ["10.0.0.0", 8, "a private address"],
  ["100.64.0.0", 10, "a private address"],
  ["127.0.0.0", 8, "a loopback address"],
  ["169.254.0.0", 16, "a link-local address"],
  ["172.16.0.0", 12, "a private address"],
  ["192.168.0.0", 16, "a private address"],
];
const PRIVATE_V6: [string, number, string][] = [
  ["::", 128, "an unspecified address"],
  ["::1", 128, "a loopback address"],
  ["fc00::", 7, "a private address"],
  ["fe80::", 10, "a link-local address"],
];

function privateAddressKind(host: string): string | undefined {
  if (host === "localhost" || host.endsWith(".localhost")) return "a loopback address";
  const family = isIP(host);
  if (family === 0) return undefined;
  const v4 = family === 4 ? host : mappedV4(host);
  if (v4 !== undefined) {
    for (const [net, prefix, kind] of PRIVATE_V4) if (inSubnet(v4, net, prefix, "ipv4")) return kind;
    return undefined;
  }
  for (const [net, prefix, kind] of PRIVATE_V6) if (inSubnet(host, net, prefix, "ipv6")) return kind;
  return undefined;
}

/** "::ffff:10.0.0.1" reaches 10.0.0.1; judge it as that. */
function mappedV4(host: string): string | undefined {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  return m?.[1];
}

function inSubnet(address: string, net: string, prefix: number, type: "ipv4" | "ipv6"): boolean {
  const list = new BlockList();
  list.addSubnet(net, prefix, type);
  return list.check(address, type);
}

function isAllowedNetwork(host: string, allowedNetworks: readonly string[]): boolean {
  const address = host === "localhost" || host.endsWith(".localhost") ? "127.0.0.1" : (mappedV4(host) ?? host);
  const type = isIP(address) === 6 ? "ipv6" : "ipv4";
  const list = new BlockList();
  for (const cidr of allowedNetworks) {
    const [net = "", bits] = cidr.split("/");
    const netType = isIP(net) === 6 ? "ipv6" : isIP(net) === 4 ? "ipv4" : undefined;
    if (netType === undefined) continue; // the config loader reports malformed CIDRs
    const prefix = bits === undefined ? (netType === "ipv6" ? 128 : 32) : Number(bits);
    if (!Number.isInteger(prefix)) continue;
    list.addSubnet(net, prefix, netType);
  }
  return list.check(address, type);
}
