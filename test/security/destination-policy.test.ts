import { BlockList } from "node:net";
import fc from "fast-check";
import ipaddr from "ipaddr.js";
import { describe, expect, it } from "vitest";
import { DestinationPolicy, type DestinationRules } from "../../control-plane/security/destination-policy.js";

const strict: DestinationRules = { requireHttps: true, allowedNetworks: [] };
const policy = new DestinationPolicy(strict);

/** The code and message the policy gives for a URL, or "ok". */
function verdict(url: string, p = policy): string {
  const problem = p.urlProblem(url);
  return problem === undefined ? "ok" : `${problem.code}: ${problem.message}`;
}

// Every form the issue lists, each with what the policy must say. Hosts go into an https
// URL as written here; the WHATWG URL parser normalises IPv4 spellings and IPv6 text first.
const REFUSED: [host: string, says: RegExp][] = [
  // loopback
  ["127.0.0.1", /127\.0\.0\.1 is a loopback address/],
  ["127.255.255.254", /loopback/],
  ["[::1]", /::1 is a loopback address/],
  ["localhost", /localhost is a loopback name/],
  ["LOCALHOST", /localhost is a loopback name/],
  ["api.localhost", /api\.localhost is a loopback name/],
  // private
  ["10.0.0.5", /10\.0\.0\.5 is a private address/],
  ["172.16.3.4", /private/],
  ["172.31.255.255", /private/],
  ["192.168.1.1", /private/],
  ["[fd12:3456::1]", /private \(unique local\)/],
  ["[fec0::1]", /private \(site-local\)/],
  // link-local, cloud metadata
  ["169.254.169.254", /169\.254\.169\.254 is a link-local address/],
  ["[fe80::1]", /link-local/],
  // carrier-grade NAT
  ["100.64.0.1", /carrier-grade NAT/],
  ["100.127.255.255", /carrier-grade NAT/],
  // multicast, broadcast
  ["224.0.0.1", /multicast/],
  ["239.255.255.250", /multicast/],
  ["[ff02::1]", /multicast/],
  ["255.255.255.255", /broadcast/],
  // reserved and other special-purpose
  ["240.0.0.1", /reserved/],
  ["192.0.0.8", /reserved/],
  ["192.0.2.10", /reserved/],
  ["198.18.0.1", /reserved/],
  ["198.51.100.7", /reserved/],
  ["203.0.113.9", /reserved/],
  ["192.88.99.1", /reserved/],
  ["192.175.48.1", /special-purpose/],
  ["192.52.193.1", /special-purpose/],
  ["[2001:db8::1]", /reserved/],
  ["[100::1]", /special-purpose/],
  ["[4000::1]", /unassigned/],
  ["[2001::1]", /Teredo/],
  // unspecified
  ["0.0.0.0", /unspecified/],
  ["0.1.2.3", /unspecified/],
  ["[::]", /unspecified/],
  // IPv4-mapped, in both spellings (the URL parser turns the dotted one into hex)
  ["[::ffff:127.0.0.1]", /::ffff:7f00:1 carries 127\.0\.0\.1, a loopback address/],
  ["[::ffff:7f00:1]", /carries 127\.0\.0\.1, a loopback address/],
  ["[::ffff:10.0.0.5]", /carries 10\.0\.0\.5, a private address/],
  ["[::ffff:169.254.169.254]", /carries 169\.254\.169\.254, a link-local address/],
  ["[0:0:0:0:0:ffff:7f00:1]", /carries 127\.0\.0\.1/],
  // IPv4-translated (RFC 6145)
  ["[::ffff:0:127.0.0.1]", /carries 127\.0\.0\.1/],
  // IPv4-compatible (deprecated)
  ["[::127.0.0.1]", /::7f00:1 carries 127\.0\.0\.1, a loopback address/],
  ["[::7f00:1]", /carries 127\.0\.0\.1/],
  ["[::10.0.0.5]", /carries 10\.0\.0\.5, a private address/],
  ["[::8.8.8.8]", /deprecated IPv4-compatible/],
  // NAT64
  ["[64:ff9b::127.0.0.1]", /64:ff9b::7f00:1 carries 127\.0\.0\.1, a loopback address/],
  ["[64:ff9b::7f00:1]", /carries 127\.0\.0\.1/],
  ["[64:ff9b::a9fe:a9fe]", /carries 169\.254\.169\.254, a link-local address/],
  ["[64:ff9b:1::1]", /local-use NAT64/],
  // 6to4
  ["[2002:7f00:1::]", /2002:7f00:1:: carries 127\.0\.0\.1, a loopback address/],
  ["[2002:a9fe:a9fe::1]", /carries 169\.254\.169\.254/],
  ["[2002:c0a8:101::1]", /carries 192\.168\.1\.1, a private address/],
  // decimal, hex and octal IPv4 spellings
  ["2130706433", /127\.0\.0\.1 is a loopback address/],
  ["0x7f000001", /127\.0\.0\.1 is a loopback address/],
  ["0x7f.1", /127\.0\.0\.1 is a loopback address/],
  ["0x7F.0x0.0x0.0x1", /127\.0\.0\.1 is a loopback address/],
  ["0177.0.0.1", /127\.0\.0\.1 is a loopback address/],
  ["017700000001", /127\.0\.0\.1 is a loopback address/],
  ["127.1", /127\.0\.0\.1 is a loopback address/],
  ["10.1", /10\.0\.0\.1 is a private address/],
  ["192.168.257", /192\.168\.1\.1 is a private address/],
  ["2852039166", /169\.254\.169\.254 is a link-local address/],
  ["%31%32%37.0.0.1", /127\.0\.0\.1 is a loopback address/],
  // trailing dots
  ["localhost.", /localhost\. ends with a dot; write the name without it \(localhost\)/],
  ["hooks.example.com.", /ends with a dot/],
  ["127.0.0.1.", /127\.0\.0\.1 is a loopback address/],
];

const ALLOWED = [
  "8.8.8.8",
  "93.184.216.34",
  "100.128.0.1",
  "172.32.0.1",
  "hooks.example.com",
  "hooks.example.com:8443",
  "[2606:4700::1111]",
  // IPv6 forms of a public IPv4 address are as public as it is.
  "[::ffff:8.8.8.8]",
  "[64:ff9b::808:808]",
  "[2002:808:808::1]",
];

describe("destination policy: the address forms probes tried", () => {
  it.each(REFUSED)("refuses https://%s/", (host, says) => {
    const text = verdict(`https://${host}/hook`);
    expect(text).toMatch(/^AIGW_DESTINATION_REFUSED: /);
    expect(text).toMatch(says);
    expect(text).toMatch(/allow it with security\.allowed_networks|ends with a dot/);
  });

  it.each(ALLOWED)("allows https://%s/", (host) => {
    expect(verdict(`https://${host}/hook`)).toBe("ok");
  });

  it("allows what allowed_networks lists, in every spelling of it", () => {
    const local = new DestinationPolicy({ requireHttps: false, allowedNetworks: ["127.0.0.0/8", "10.0.0.0/8"] });
    for (const host of [
      "127.0.0.1",
      "localhost",
      "2130706433",
      "[::ffff:127.0.0.1]",
      "[::127.0.0.1]",
      "[64:ff9b::7f00:1]",
      "[2002:7f00:1::]",
      "10.1.2.3",
    ]) {
      expect(verdict(`http://${host}:9000/`, local), host).toBe("ok");
    }
    expect(verdict("http://192.168.1.1/", local)).toMatch(/private/);
    expect(verdict("http://[::1]/", local)).toMatch(/loopback/);
    expect(verdict("http://localhost./", local)).toMatch(/ends with a dot/);
    const v6 = new DestinationPolicy({ requireHttps: false, allowedNetworks: ["fd00::/8", "::1/128"] });
    expect(verdict("http://[fd00::5]/", v6)).toBe("ok");
    expect(verdict("http://localhost/", v6)).toBe("ok");
  });

  it("judges resolved addresses the same way, naming the host", () => {
    expect(policy.addressProblem("10.0.0.5", "hooks.internal")?.message).toBe(
      "destination hooks.internal (10.0.0.5) is a private address; allow it with security.allowed_networks",
    );
    expect(policy.addressProblem("64:ff9b::7f00:1", "rebind.example")?.message).toBe(
      "destination rebind.example (64:ff9b::7f00:1) carries 127.0.0.1, a loopback address; allow it with security.allowed_networks",
    );
    expect(policy.addressProblem("93.184.216.34", "example.com")).toBeUndefined();
  });

  it("refuses what is not an https URL, saying what to do", () => {
    expect(verdict("http://example.com/hook")).toMatch(/^AIGW_DESTINATION_HTTPS_REQUIRED: uses http:\/\/ but security/);
    expect(verdict("http://example.com/hook", new DestinationPolicy({ ...strict, requireHttps: false }))).toBe("ok");
    expect(verdict("ftp://example.com/")).toMatch(/^AIGW_DESTINATION_INVALID: uses the unsupported scheme "ftp"/);
    expect(verdict("not a url")).toMatch(/^AIGW_DESTINATION_INVALID: is not a valid URL/);
    expect(verdict("")).toMatch(/^AIGW_DESTINATION_INVALID: is empty/);
    expect(verdict("https://user:hunter2@example.com/")).toMatch(/must not contain credentials/);
    expect(verdict("https://user:hunter2@example.com/")).not.toContain("hunter2");
    expect(verdict("https://example.com/#frag")).toMatch(/#fragment/);
    expect(verdict("https://example.com:0/hook")).toMatch(/^AIGW_DESTINATION_INVALID: has port 0/);
    expect(verdict("https://example.com:00/hook")).toMatch(/^AIGW_DESTINATION_INVALID: has port 0/);
    expect(verdict("https://example.com:8443/hook")).toBe("ok");
    expect(verdict(`https://example.com/${"a".repeat(2100)}`)).toMatch(/at most 2048/);
  });

  it("refuses allowed_networks entries that are not CIDRs, naming the entry", () => {
    expect(() => new DestinationPolicy({ ...strict, allowedNetworks: ["127.0.0.0/8", "10.0.0.0/33"] })).toThrow(
      /allowed_networks\[1\]: prefix "\/33" is out of range/,
    );
    expect(() => new DestinationPolicy({ ...strict, allowedNetworks: ["localhost"] })).toThrow(
      /allowed_networks\[0\]: "localhost" is not a CIDR/,
    );
    expect(() => new DestinationPolicy({ ...strict, allowedNetworks: ["127.1/8"] })).toThrow(/not an IPv4 or IPv6/);
  });
});

// ---- properties --------------------------------------------------------------------------------

/**
 * The IPv4 special-purpose ranges, written out independently of ipaddr.js (IANA's registry:
 * RFC 6890 and its updates). The README's destination table lists the same.
 */
const REFUSED_V4 = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.31.196.0/24",
  "192.52.193.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "192.175.48.0/24",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
];
const refusedV4 = new BlockList();
for (const cidr of REFUSED_V4) {
  const [net, bits] = cidr.split("/") as [string, string];
  refusedV4.addSubnet(net, Number(bits), "ipv4");
}

const toInt = (o: number[]) => ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
const dotted = (o: number[]) => o.join(".");
const hex16 = (o: number[]) => `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;

/** Every way to write an IPv4 address into a URL's host, plain or inside an IPv6 form. */
const SPELLINGS: [name: string, spell: (o: number[]) => string][] = [
  ["dotted", dotted],
  ["decimal", (o) => String(toInt(o))],
  ["hex", (o) => `0x${toInt(o).toString(16)}`],
  ["octal", (o) => `0${toInt(o).toString(8)}`],
  ["dotted hex", (o) => o.map((x) => `0x${x.toString(16)}`).join(".")],
  ["dotted octal", (o) => o.map((x) => `0${x.toString(8)}`).join(".")],
  ["a.b.c16", (o) => `${o[0]}.${o[1]}.${(o[2]! << 8) | o[3]!}`],
  ["a.b24", (o) => `${o[0]}.${((o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0}`],
  ["trailing dot", (o) => `${dotted(o)}.`],
  ["percent-encoded", (o) => [...dotted(o)].map((c) => `%${c.charCodeAt(0).toString(16)}`).join("")],
  ["mapped dotted", (o) => `[::ffff:${dotted(o)}]`],
  ["mapped hex", (o) => `[::ffff:${hex16(o)}]`],
  ["mapped long", (o) => `[0:0:0:0:0:ffff:${hex16(o)}]`],
  ["translated", (o) => `[::ffff:0:${dotted(o)}]`],
  ["compatible", (o) => `[::${dotted(o)}]`],
  ["NAT64", (o) => `[64:ff9b::${dotted(o)}]`],
  ["NAT64 hex", (o) => `[64:ff9b::${hex16(o)}]`],
  ["6to4", (o) => `[2002:${hex16(o)}::1]`],
];

const fromInt = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const octets = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((t) => [...t]);
/** ipaddr.js's own IPv4 ranges (what the policy uses), only as places to look: the oracle is REFUSED_V4. */
const LIBRARY_V4 = Object.values(
  (ipaddr.IPv4.prototype as unknown as { SpecialRanges: Record<string, [ipaddr.IPv4, number][]> }).SpecialRanges,
).flatMap((ranges) => ranges.map(([ip, bits]) => `${ip.toString()}/${bits}`));
/** Addresses near the edges of either list's ranges, where two lists of ranges would disagree. */
const nearEdges = fc
  .tuple(fc.constantFrom(...REFUSED_V4, ...LIBRARY_V4), fc.boolean(), fc.integer({ min: -300, max: 300 }))
  .map(([cidr, atEnd, offset]) => {
    const [net, bits] = cidr.split("/") as [string, string];
    const start = toInt(net.split(".").map(Number));
    const edge = atEnd ? start + 2 ** (32 - Number(bits)) : start;
    return fromInt(Math.min(2 ** 32 - 1, Math.max(0, edge + offset)) >>> 0);
  });
const refusedOctets = fc.tuple(fc.constantFrom(...REFUSED_V4), fc.nat()).map(([cidr, random]) => {
  const [net, bits] = cidr.split("/") as [string, string];
  const base = toInt(net.split(".").map(Number));
  const hostBits = 32 - Number(bits);
  const host = hostBits === 32 ? random >>> 0 : random % 2 ** hostBits;
  return fromInt((base + host) >>> 0);
});

describe("destination policy: properties", () => {
  it("refuses any IPv4 address of a refused range, in any spelling or IPv6 embedding", () => {
    fc.assert(
      fc.property(refusedOctets, fc.constantFrom(...SPELLINGS), (o, [name, spell]) => {
        const url = `https://${spell(o)}:8443/hook`;
        const problem = policy.urlProblem(url);
        expect(problem?.code, `${name}: ${url}`).toBe("AIGW_DESTINATION_REFUSED");
      }),
      { numRuns: 2000 },
    );
  });

  it("judges every IPv4 address as the independent list of special-purpose ranges does", () => {
    fc.assert(
      fc.property(fc.oneof(octets, nearEdges), (o) => {
        const special = refusedV4.check(dotted(o), "ipv4");
        expect(policy.addressProblem(dotted(o)) !== undefined, dotted(o)).toBe(special);
        // The IPv6 forms that carry it route to it: the same verdict (the compatible form aside, refused always).
        expect(policy.urlProblem(`https://[::ffff:${dotted(o)}]/`) !== undefined, `mapped ${dotted(o)}`).toBe(special);
        expect(policy.urlProblem(`https://[64:ff9b::${dotted(o)}]/`) !== undefined, `NAT64 ${dotted(o)}`).toBe(special);
      }),
      { numRuns: 3000 },
    );
  });

  it("allows any address inside security.allowed_networks, at the URL and at connect time", () => {
    const v4 = fc.tuple(octets, fc.integer({ min: 0, max: 32 }), fc.nat()).map(([o, bits, r]) => {
      const net = (toInt(o) & (bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0)) >>> 0;
      const hostBits = 32 - bits;
      const address = dotted(fromInt((net + (hostBits === 32 ? r >>> 0 : r % 2 ** hostBits)) >>> 0));
      return { cidr: `${dotted(o)}/${bits}`, address, host: address };
    });
    const v6 = fc
      .tuple(
        fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 0, max: 128 }),
        fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }),
      )
      .map(([parts, bits, random]) => {
        const address = parts
          .map((p, i) => {
            const keep = Math.max(0, Math.min(16, bits - i * 16));
            const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
            return ((p & mask) | (random[i]! & ~mask & 0xffff)).toString(16);
          })
          .join(":");
        return { cidr: `${parts.map((p) => p.toString(16)).join(":")}/${bits}`, address, host: `[${address}]` };
      });
    fc.assert(
      fc.property(fc.oneof(v4, v6), ({ cidr, address, host }) => {
        const p = new DestinationPolicy({ requireHttps: false, allowedNetworks: [cidr] });
        expect(p.urlProblem(`http://${host}:9000/hook`), `${address} in ${cidr}`).toBeUndefined();
        expect(p.addressProblem(address, "hooks.example"), `${address} in ${cidr}`).toBeUndefined();
      }),
      { numRuns: 2000 },
    );
  });
});
