import ipaddr from "ipaddr.js";
import { AigwError, type ErrorCode } from "../../common/errors.js";

/**
 * Where signed webhooks may go: the one destination rule of aigw (README "Destination
 * rules"), applied at config load, at every Admin API endpoint change, to each request's
 * x-aigw-webhook-url, and by the delivery worker at connect time on the addresses a name
 * resolves to (so a name that later resolves to 10.0.0.5, DNS rebinding, is still refused).
 *
 * Only public (global unicast) addresses are destinations. Everything else is refused
 * unless it falls inside security.allowed_networks: loopback, private, link-local (cloud
 * metadata at 169.254.169.254), carrier-grade NAT, multicast, broadcast, reserved,
 * unspecified and other special-purpose ranges (IANA's registries, as ipaddr.js keeps
 * them). IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, translated, the
 * deprecated compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by the
 * IPv4 address inside. IPv4 spelled in decimal, hex or octal (2130706433, 0x7f.1, 0177.1)
 * is what the URL parser and ipaddr.js read as the dotted address, and judged as that.
 * Names ending in a dot (`localhost.`) are refused outright: they bypass name checks and
 * no receiver needs one. Redirects are never followed (the worker's undici agent has no
 * redirect interceptor), so a 3xx cannot lead a delivery anywhere this rule did not check.
 */

export interface DestinationRules {
  /** security.require_https: plain http:// is refused. */
  requireHttps: boolean;
  /** security.allowed_networks: CIDRs exempt from the address rule, e.g. "127.0.0.0/8". */
  allowedNetworks: readonly string[];
}

/** What is wrong, with its catalogue code; messages never echo a whole URL (it may carry a token). */
export interface DestinationProblem {
  code: Extract<ErrorCode, `AIGW_DESTINATION_${string}`>;
  message: string;
}

export class DestinationRefusedError extends AigwError {
  override readonly name = "DestinationRefusedError";
  constructor(problem: DestinationProblem) {
    super(problem.code, problem.message);
  }
}

/** Long enough for any real receiver URL, short enough that a row stays small. */
export const MAX_URL_LENGTH = 2048;

type IP = ipaddr.IPv4 | ipaddr.IPv6;
type Cidr = [IP, number];

/**
 * Why an address is not a destination: what it is ("a loopback address"), and the IPv4
 * address inside an IPv6 form when that is what decided it. undefined: a public address.
 */
export interface AddressVerdict {
  kind: string;
  /** The IPv4 address an IPv6 form carries, when the verdict is about it. */
  embedded?: string;
}

const IPV4_KINDS: Record<string, string | undefined> = {
  unicast: undefined,
  unspecified: "an unspecified address",
  broadcast: "the broadcast address",
  multicast: "a multicast address",
  linkLocal: "a link-local address (cloud metadata services answer at 169.254.169.254)",
  loopback: "a loopback address",
  carrierGradeNat: "a carrier-grade NAT address (100.64.0.0/10)",
  private: "a private address",
  reserved: "a reserved address",
};

const IPV6_KINDS: Record<string, string | undefined> = {
  unicast: undefined,
  unspecified: "an unspecified address",
  linkLocal: "a link-local address",
  multicast: "a multicast address",
  loopback: "a loopback address",
  uniqueLocal: "a private (unique local) address",
  deprecatedSiteLocal: "a private (site-local) address",
  teredo: "a Teredo tunnel address",
  reserved: "a reserved address",
};

/** IPv6 global unicast space; anything outside it that ipaddr.js calls "unicast" is unassigned. */
const GLOBAL_UNICAST_V6: Cidr = ipaddr.parseCIDR("2000::/3");
const NAT64_WELL_KNOWN: Cidr = ipaddr.parseCIDR("64:ff9b::/96");

function v4FromParts(hi: number, lo: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([hi >> 8, hi & 255, lo >> 8, lo & 255]);
}

/** The IPv4 address an IPv6 address carries, for the forms that carry one. */
export function embeddedIPv4(ip: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  const p = ip.parts as [number, number, number, number, number, number, number, number];
  const range = ip.range();
  if (range === "ipv4Mapped" || range === "rfc6145") return v4FromParts(p[6], p[7]);
  if (range === "rfc6052" && ip.match(NAT64_WELL_KNOWN)) return v4FromParts(p[6], p[7]);
  if (range === "6to4") return v4FromParts(p[1], p[2]);
  // IPv4-compatible (::a.b.c.d, deprecated by RFC 4291): everything in ::/96 but :: and ::1.
  if (p.slice(0, 6).every((x) => x === 0) && (p[6] !== 0 || p[7] > 1)) return v4FromParts(p[6], p[7]);
  return undefined;
}

function classifyIPv4(ip: ipaddr.IPv4): string | undefined {
  const range = ip.range();
  return range in IPV4_KINDS ? IPV4_KINDS[range] : "a special-purpose address";
}

/** The verdict on one parsed address (before allowed_networks). */
export function classify(ip: IP): AddressVerdict | undefined {
  if (ip.kind() === "ipv4") {
    const kind = classifyIPv4(ip as ipaddr.IPv4);
    return kind === undefined ? undefined : { kind };
  }
  const v6 = ip as ipaddr.IPv6;
  const inner = embeddedIPv4(v6);
  if (inner !== undefined) {
    const kind = classifyIPv4(inner);
    if (kind !== undefined) return { kind, embedded: inner.toString() };
    // ::8.8.8.8 has had no meaning since 2006; the other forms of a public IPv4 are routable.
    return v6.range() === "unicast" ? { kind: "a deprecated IPv4-compatible address" } : undefined;
  }
  const range = v6.range();
  if (range === "rfc6052") return { kind: "a local-use NAT64 address (64:ff9b:1::/48)" };
  if (range in IPV6_KINDS) {
    const kind = IPV6_KINDS[range];
    if (kind !== undefined) return { kind };
    return v6.match(GLOBAL_UNICAST_V6) ? undefined : { kind: "an unassigned address (outside 2000::/3)" };
  }
  return { kind: "a special-purpose address" };
}

/** An IP address in any spelling ipaddr.js reads (also 0x7f.1, 2130706433), or undefined for a name. */
export function parseAddress(text: string): IP | undefined {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  try {
    return ipaddr.parse(bare);
  } catch {
    return undefined;
  }
}

/**
 * Problem with a CIDR of security.allowed_networks, or undefined. Address in the usual
 * notation (dotted IPv4 or IPv6) and an explicit prefix: "127.0.0.0/8", "fd00::/8".
 */
export function cidrProblem(text: string): string | undefined {
  const expected = 'expected ADDRESS/PREFIX such as "127.0.0.0/8", "10.0.0.0/8" or "::1/128"';
  const slash = text.indexOf("/");
  if (slash < 0) return `${JSON.stringify(text)} is not a CIDR (no /prefix); ${expected}`;
  const address = text.slice(0, slash);
  const prefix = text.slice(slash + 1);
  const family = ipaddr.IPv4.isValidFourPartDecimal(address) ? 4 : ipaddr.IPv6.isValid(address) ? 6 : 0;
  if (family === 0) return `${JSON.stringify(address)} is not an IPv4 or IPv6 address; ${expected}`;
  const maxPrefix = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix)) return `prefix "/${prefix}" is not a number; expected /0 to /${maxPrefix}`;
  if (Number(prefix) > maxPrefix) {
    return `prefix "/${prefix}" is out of range for an IPv${family} address; expected /0 to /${maxPrefix}`;
  }
  return undefined;
}

/** Names that mean this machine whatever DNS says (RFC 6761). */
function isLocalhostName(host: string): boolean {
  return host === "localhost" || host.endsWith(".localhost");
}

const LOOPBACK_V4 = ipaddr.parse("127.0.0.1");
const LOOPBACK_V6 = ipaddr.parse("::1");

export class DestinationPolicy {
  private readonly allowed: Cidr[];

  /** Throws DestinationRefusedError naming a CIDR that is not one (the config loader reports those first). */
  constructor(readonly rules: DestinationRules) {
    this.allowed = rules.allowedNetworks.map((cidr, i) => {
      const problem = cidrProblem(cidr.trim());
      if (problem !== undefined) {
        throw new DestinationRefusedError({
          code: "AIGW_DESTINATION_INVALID",
          message: `security.allowed_networks[${i}]: ${problem}`,
        });
      }
      return ipaddr.parseCIDR(cidr.trim());
    });
  }

  /** Inside security.allowed_networks: the address itself, or the IPv4 address it carries. */
  isAllowed(ip: IP): boolean {
    const candidates: IP[] = [ip];
    if (ip.kind() === "ipv6") {
      const inner = embeddedIPv4(ip as ipaddr.IPv6);
      if (inner) candidates.push(inner);
    } else {
      candidates.push((ip as ipaddr.IPv4).toIPv4MappedAddress());
    }
    return candidates.some((c) => this.allowed.some(([net, bits]) => net.kind() === c.kind() && c.match(net, bits)));
  }

  /** Why `address` (what `host` resolved to, or the literal host itself) may not be dialled. */
  addressProblem(address: string, host = address): DestinationProblem | undefined {
    const ip = parseAddress(address);
    if (ip === undefined) {
      return { code: "AIGW_DESTINATION_REFUSED", message: `destination ${host}: ${address} is not an IP address` };
    }
    const verdict = classify(ip);
    if (verdict === undefined || this.isAllowed(ip)) return undefined;
    const shown = ip.toString();
    const what = host === address || bare(host) === shown ? `destination ${shown}` : `destination ${host} (${shown})`;
    const why = verdict.embedded ? `carries ${verdict.embedded}, ${verdict.kind}` : `is ${verdict.kind}`;
    return {
      code: "AIGW_DESTINATION_REFUSED",
      message: `${what} ${why}; allow it with security.allowed_networks`,
    };
  }

  /** Why a destination URL is refused, from its text alone; undefined when it passes. */
  urlProblem(raw: string): DestinationProblem | undefined {
    const invalid = (message: string): DestinationProblem => ({ code: "AIGW_DESTINATION_INVALID", message });
    if (raw === "") return invalid("is empty; expected an absolute https:// URL");
    if (raw.length > MAX_URL_LENGTH) return invalid(`is ${raw.length} characters long; at most ${MAX_URL_LENGTH}`);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return invalid('is not a valid URL; expected an absolute URL such as "https://api.example.com/webhooks"');
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      return invalid(`uses the unsupported scheme "${url.protocol.slice(0, -1)}"; expected an https:// URL`);
    }
    if (url.protocol === "http:" && this.rules.requireHttps) {
      return {
        code: "AIGW_DESTINATION_HTTPS_REQUIRED",
        message:
          "uses http:// but security.require_https is true; use an https:// URL, or set " +
          "security.require_https: false to allow plain HTTP (e.g. for local test receivers)",
      };
    }
    if (url.username !== "" || url.password !== "") {
      return invalid("must not contain credentials (user:password@); receivers authenticate deliveries by signature");
    }
    if (url.hash !== "") return invalid("must not contain a #fragment (it is never sent); remove it");
    // The parser takes :0 (and keeps it), but nothing can be dialled there.
    if (url.port === "0") return invalid("has port 0, where nothing can be reached; give the receiver's port");
    return this.hostProblem(url.hostname);
  }

  /** Throws DestinationRefusedError when the URL is refused; the parsed URL otherwise. */
  checkUrl(raw: string): URL {
    const problem = this.urlProblem(raw);
    if (problem !== undefined) throw new DestinationRefusedError(problem);
    return new URL(raw);
  }

  /** Throws DestinationRefusedError when `address` (what `host` resolved to) may not be dialled. */
  checkAddress(address: string, host = address): void {
    const problem = this.addressProblem(address, host);
    if (problem !== undefined) throw new DestinationRefusedError(problem);
  }

  /** The host part: a literal address is judged here; a name is judged at connect time on what it resolves to. */
  private hostProblem(hostname: string): DestinationProblem | undefined {
    const host = bare(hostname).toLowerCase();
    if (host === "") return { code: "AIGW_DESTINATION_INVALID", message: "has no host" };
    if (host.endsWith(".")) {
      return {
        code: "AIGW_DESTINATION_REFUSED",
        message: `destination ${host} ends with a dot; write the name without it (${host.replace(/\.+$/, "")})`,
      };
    }
    if (isLocalhostName(host)) {
      if (this.isAllowed(LOOPBACK_V4) || this.isAllowed(LOOPBACK_V6)) return undefined;
      return {
        code: "AIGW_DESTINATION_REFUSED",
        message: `destination ${host} is a loopback name; allow it with security.allowed_networks (127.0.0.0/8)`,
      };
    }
    return parseAddress(host) === undefined ? undefined : this.addressProblem(host);
  }
}

function bare(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}
