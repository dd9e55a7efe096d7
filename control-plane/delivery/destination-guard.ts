import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { LRUCache } from "lru-cache";
import { DestinationPolicy, DestinationRefusedError, type DestinationRules } from "../security/destination-policy.js";

/**
 * The destination rule (control-plane/security/destination-policy.ts) at connect time:
 * names are resolved here, briefly cached, and only addresses the rule allows are handed
 * to the socket, so a name that resolves to a public address when an endpoint is created
 * and to 10.0.0.5 later (DNS rebinding) is still refused. IP literals are judged from the
 * URL (net.connect skips lookup for those).
 */

export { DestinationRefusedError };

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
  readonly policy: DestinationPolicy;
  private readonly resolve: Resolver;
  private readonly cache: LRUCache<string, LookupAddress[]>;
  /** checkUrl's verdicts (read-only URLs: callers take origin, pathname and search). */
  private readonly urls = new LRUCache<string, URL | Error>({ max: 1000 });

  constructor(rules: DestinationRules, options: DestinationGuardOptions = {}) {
    this.policy = new DestinationPolicy(rules);
    this.resolve = options.resolve ?? systemResolver;
    this.cache = new LRUCache({ max: options.cacheMax ?? 1000, ttl: options.cacheTtlMs ?? 30_000 });
  }

  /**
   * What can be judged before connecting: the URL, and the host when it is an IP literal.
   * The verdict of a URL string never changes under one rule set, so it is kept (parsing
   * the URL and its address was a measurable part of each attempt's CPU in a worker).
   */
  checkUrl(url: string): URL {
    const known = this.urls.get(url);
    if (known instanceof URL) return known;
    if (known !== undefined) throw known;
    try {
      const checked = this.policy.checkUrl(url);
      this.urls.set(url, checked);
      return checked;
    } catch (err) {
      if (err instanceof Error) this.urls.set(url, err);
      throw err;
    }
  }

  /**
   * Resolves a hostname (cached briefly) to the addresses that may be dialled. Addresses
   * off limits are dropped (localhost's ::1 when only 127.0.0.0/8 is allowed); when none is
   * left the destination is refused, naming the first address that was not allowed.
   */
  async resolveChecked(hostname: string): Promise<LookupAddress[]> {
    const host = hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
    if (isIP(host) !== 0) {
      this.policy.checkAddress(host);
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
      const problem = this.policy.addressProblem(a.address, host);
      if (problem === undefined) permitted.push(a);
      else refusal ??= new DestinationRefusedError(problem);
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
