import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { LRUCache } from "lru-cache";

/**
 * Keeps signed webhooks away from addresses an operator did not mean to reach (SSRF):
 * private, loopback, link-local, unspecified, multicast and reserved addresses are refused
 * unless they fall inside security.allowed_networks. The check runs at connect time on the
 * addresses actually dialled, so a hostname that resolves to a public address when an
 * endpoint is created and to 10.0.0.5 later (DNS rebinding) is still refused.
 */

export interface DestinationPolicy {
  requireHttps: boolean;
  /** CIDRs exempt from the private-address guard, e.g. "127.0.0.0/8". */
  allowedNetworks: readonly string[];
}

export type AddressClass = "private" | "loopback" | "link-local" | "unspecified" | "multicast" | "reserved";

export class DestinationRefusedError extends Error {
  override readonly name = "DestinationRefusedError";
  readonly code = "AIGW_DESTINATION_REFUSED";
}

const SPECIAL_RANGES: readonly [cidr: string, family: "ipv4" | "ipv6", cls: AddressClass][] = [
  ["0.0.0.0/8", "ipv4", "unspecified"],
  ["10.0.0.0/8", "ipv4", "private"],
  ["100.64.0.0/10", "ipv4", "private"], // CGNAT shared address space (RFC 6598)
  ["127.0.0.0/8", "ipv4", "loopback"],
  ["169.254.0.0/16", "ipv4", "link-local"], // includes cloud metadata services (169.254.169.254)
  ["172.16.0.0/12", "ipv4", "private"],
  ["192.0.0.0/24", "ipv4", "reserved"],
  ["192.168.0.0/16", "ipv4", "private"],
  ["198.18.0.0/15", "ipv4", "reserved"],
  ["224.0.0.0/4", "ipv4", "multicast"],
  ["240.0.0.0/4", "ipv4", "reserved"], // includes 255.255.255.255 broadcast
  ["::/128", "ipv6", "unspecified"],
  ["::1/128", "ipv6", "loopback"],
  ["fc00::/7", "ipv6", "private"], // unique local addresses
  ["fe80::/10", "ipv6", "link-local"],
  ["ff00::/8", "ipv6", "multicast"],
];

const CLASS_LISTS: readonly [AddressClass, BlockList][] = (() => {
  const byClass = new Map<AddressClass, BlockList>();
  for (const [cidr, family, cls] of SPECIAL_RANGES) {
    let list = byClass.get(cls);
    if (!list) {
      list = new BlockList();
      byClass.set(cls, list);
    }
    const [net, prefix] = cidr.split("/") as [string, string];
    list.addSubnet(net, Number(prefix), family);
  }
  return [...byClass.entries()];
})();

/** An IPv4-mapped IPv6 address (::ffff:10.0.0.5 or ::ffff:a00:5) as the IPv4 address it carries. */
function unmapIPv4(address: string): string {
  const lower = address.toLowerCase();
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted?.[1] && isIP(dotted[1]) === 4) return dotted[1];
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex?.[1] && hex[2]) {
    const hi = Number.parseInt(hex[1], 16);
    const lo = Number.parseInt(hex[2], 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return address;
}

/** The special class of an IP address, or undefined for an ordinary public address. */
export function classifyAddress(address: string): AddressClass | undefined {
  const ip = unmapIPv4(address);
  const family = isIP(ip);
  if (family === 0) return undefined;
  const type = family === 4 ? "ipv4" : "ipv6";
  for (const [cls, list] of CLASS_LISTS) if (list.check(ip, type)) return cls;
  return undefined;
}

/** security.allowed_networks as a BlockList; throws naming the entry that is not a CIDR. */
export function parseAllowedNetworks(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  cidrs.forEach((cidr, i) => {
    const [net = "", prefixText, extra] = cidr.trim().split("/");
    const family = isIP(net);
    const max = family === 4 ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (family === 0 || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > max) {
      throw new DestinationRefusedError(
        `security.allowed_networks[${i}]: "${cidr}" is not a CIDR (expected e.g. 127.0.0.0/8 or fd00::/8)`,
      );
    }
    list.addSubnet(net, prefix, family === 4 ? "ipv4" : "ipv6");
  });
  return list;
}

type Resolver = (hostname: string) => Promise<LookupAddress[]>;

const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses)));
  });

export interface DestinationGuardOptions {
  /** How long resolved addresses are reused; short, so DNS changes are seen soon. */
  cacheTtlMs?: number;
  cacheMax?: number;
  /** Name resolution; default the system resolver (getaddrinfo, so /etc/hosts counts). */
  resolve?: Resolver;
}

export class DestinationGuard {
  private readonly allowed: BlockList;
  private readonly resolve: Resolver;
  private readonly cache: LRUCache<string, LookupAddress[]>;

  constructor(
    readonly policy: DestinationPolicy,
    options: DestinationGuardOptions = {},
  ) {
    this.allowed = parseAllowedNetworks(policy.allowedNetworks);
    this.resolve = options.resolve ?? systemResolver;
    this.cache = new LRUCache({ max: options.cacheMax ?? 1000, ttl: options.cacheTtlMs ?? 30_000 });
  }

  /**
   * Checks what can be checked before connecting: the URL parses, is http(s), https when
   * required, and an IP-literal host is allowed (net.connect skips lookup for those).
   */
  checkUrl(url: string): URL {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new DestinationRefusedError(`destination URL is not a valid URL: ${JSON.stringify(url.slice(0, 200))}`);
    }
    if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
      throw new DestinationRefusedError(`destination ${parsed.origin} uses ${parsed.protocol}; only https is allowed`);
    }
    if (parsed.protocol === "http:" && this.policy.requireHttps) {
      throw new DestinationRefusedError(
        `destination ${parsed.host} uses plain http but security.require_https is true; use an https URL`,
      );
    }
    const host = bareHost(parsed.hostname);
    if (isIP(host) !== 0) this.checkAddress(host, host);
    return parsed;
  }

  /** Throws DestinationRefusedError when `address` (which `host` resolved to) is off limits. */
  checkAddress(address: string, host: string): void {
    const cls = classifyAddress(address);
    if (cls === undefined || this.isAllowed(address)) return;
    const what = host === address ? `destination ${address}` : `destination ${address} (${host})`;
    const article = cls === "unspecified" ? "an" : "a";
    throw new DestinationRefusedError(`${what} is ${article} ${cls} address; allow it with security.allowed_networks`);
  }

  private isAllowed(address: string): boolean {
    const ip = unmapIPv4(address);
    const family = isIP(ip);
    return this.allowed.check(ip, family === 6 ? "ipv6" : "ipv4");
  }

  /**
   * Resolves a hostname (cached briefly) to the addresses that may be dialled. Addresses
   * off limits are dropped (localhost's ::1 when only 127.0.0.0/8 is allowed); when none is
   * left the destination is refused, naming the first address that was not allowed.
   */
  async resolveChecked(hostname: string): Promise<LookupAddress[]> {
    const host = bareHost(hostname);
    if (isIP(host) !== 0) {
      this.checkAddress(host, host);
      return [{ address: host, family: isIP(host) }];
    }
    let addresses = this.cache.get(host);
    if (!addresses) {
      addresses = await this.resolve(host);
      if (addresses.length === 0) throw new Error(`destination ${host} resolved to no address`);
      this.cache.set(host, addresses);
    }
    const permitted: LookupAddress[] = [];
    let refusal: DestinationRefusedError | undefined;
    for (const a of addresses) {
      try {
        this.checkAddress(a.address, host);
        permitted.push(a);
      } catch (err) {
        refusal ??= err as DestinationRefusedError;
      }
    }
    if (permitted.length === 0 && refusal) throw refusal;
    return permitted;
  }

  /** A net.connect `lookup` that only ever hands out checked addresses. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    const cb = callback as (
      err: NodeJS.ErrnoException | null,
      address: string | LookupAddress[],
      family?: number,
    ) => void;
    this.resolveChecked(hostname).then(
      (all) => {
        const wanted =
          options.family === 4 || options.family === 6 ? all.filter((a) => a.family === options.family) : all;
        if (wanted.length === 0) {
          cb(
            Object.assign(new Error(`destination ${hostname} has no IPv${options.family} address`), {
              code: "ENOTFOUND",
            }),
            "",
          );
          return;
        }
        if (options.all) cb(null, wanted);
        else cb(null, wanted[0]!.address, wanted[0]!.family);
      },
      (err: NodeJS.ErrnoException) => cb(err, ""),
    );
  };
}

function bareHost(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}
