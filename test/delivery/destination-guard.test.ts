import { describe, expect, it } from "vitest";
import {
  classifyAddress,
  DestinationGuard,
  DestinationRefusedError,
  parseAllowedNetworks,
} from "../../control-plane/delivery/destination-guard.js";

const strict = { requireHttps: true, allowedNetworks: [] };

describe("address classes", () => {
  it("knows private, loopback, link-local, unspecified and multicast ranges", () => {
    const cases: [string, string | undefined][] = [
      ["10.0.0.5", "private"],
      ["172.16.3.4", "private"],
      ["172.32.0.1", undefined],
      ["192.168.1.1", "private"],
      ["100.64.0.1", "private"],
      ["100.128.0.1", undefined],
      ["127.0.0.1", "loopback"],
      ["169.254.169.254", "link-local"],
      ["0.0.0.0", "unspecified"],
      ["224.0.0.1", "multicast"],
      ["8.8.8.8", undefined],
      ["::1", "loopback"],
      ["::", "unspecified"],
      ["fd12:3456::1", "private"],
      ["fe80::1", "link-local"],
      ["ff02::1", "multicast"],
      ["2606:4700::1111", undefined],
      ["::ffff:10.0.0.5", "private"],
      ["::ffff:7f00:1", "loopback"],
    ];
    for (const [ip, cls] of cases) expect(classifyAddress(ip), ip).toBe(cls);
  });

  it("rejects allowed_networks entries that are not CIDRs, naming the entry", () => {
    expect(() => parseAllowedNetworks(["127.0.0.0/8", "10.0.0.0/33"])).toThrow(/allowed_networks\[1\]: "10.0.0.0\/33"/);
    expect(() => parseAllowedNetworks(["localhost"])).toThrow(/allowed_networks\[0\]/);
    expect(parseAllowedNetworks(["127.0.0.1", "fd00::/8"]).check("fd00::1", "ipv6")).toBe(true);
  });
});

describe("DestinationGuard", () => {
  it("refuses plain http when require_https is true, and allows it when false", () => {
    expect(() => new DestinationGuard(strict).checkUrl("http://example.com/hook")).toThrow(/require_https/);
    expect(new DestinationGuard({ ...strict, requireHttps: false }).checkUrl("http://example.com/hook").host).toBe(
      "example.com",
    );
    expect(() => new DestinationGuard(strict).checkUrl("ftp://example.com/")).toThrow(/only https/);
    expect(() => new DestinationGuard(strict).checkUrl("not a url")).toThrow(/not a valid URL/);
  });

  it("refuses private IP literals before connecting, with a message that says how to allow them", () => {
    const guard = new DestinationGuard(strict);
    expect(() => guard.checkUrl("https://10.0.0.5/hook")).toThrow(
      "destination 10.0.0.5 is a private address; allow it with security.allowed_networks",
    );
    expect(() => guard.checkUrl("https://[::1]:8443/hook")).toThrow(/::1 is a loopback address/);
    // WHATWG URL normalises odd IPv4 spellings, so they cannot sneak past.
    expect(() => guard.checkUrl("https://0x7f.1/hook")).toThrow(/127.0.0.1 is a loopback/);
    expect(() => guard.checkUrl("https://169.254.169.254/latest/meta-data")).toThrow(/link-local/);
    expect(
      new DestinationGuard({ ...strict, allowedNetworks: ["10.0.0.0/8"] }).checkUrl("https://10.0.0.5/").host,
    ).toBe("10.0.0.5");
  });

  it("checks what a hostname resolves to, naming the host", async () => {
    const resolve = async (host: string) =>
      host === "hooks.internal" ? [{ address: "10.0.0.5", family: 4 }] : [{ address: "93.184.216.34", family: 4 }];
    const guard = new DestinationGuard(strict, { resolve });
    await expect(guard.resolveChecked("hooks.internal")).rejects.toThrow(
      "destination 10.0.0.5 (hooks.internal) is a private address; allow it with security.allowed_networks",
    );
    await expect(guard.resolveChecked("example.com")).resolves.toEqual([{ address: "93.184.216.34", family: 4 }]);
  });

  it("refuses a hostname resolving to 127.0.0.1 unless allowed_networks has 127.0.0.0/8 (system resolver)", async () => {
    await expect(new DestinationGuard(strict).resolveChecked("localhost")).rejects.toBeInstanceOf(
      DestinationRefusedError,
    );
    await expect(new DestinationGuard(strict).resolveChecked("localhost")).rejects.toThrow(
      /\(localhost\) is a loopback address/,
    );
    const allowed = await new DestinationGuard({ ...strict, allowedNetworks: ["127.0.0.0/8"] }).resolveChecked(
      "localhost",
    );
    expect(allowed.length).toBeGreaterThan(0);
    expect(allowed.every((a) => a.address.startsWith("127."))).toBe(true);
  });

  it("re-checks at every lookup, so a rebinding hostname is caught at connect time", async () => {
    let answer = "93.184.216.34";
    const guard = new DestinationGuard(strict, {
      resolve: async () => [{ address: answer, family: 4 }],
      cacheTtlMs: 1,
    });
    const lookup = (host: string) =>
      new Promise<string>((resolve, reject) =>
        guard.lookup(host, { all: false }, (err, address) => (err ? reject(err) : resolve(String(address)))),
      );
    await expect(lookup("rebind.example")).resolves.toBe("93.184.216.34");
    answer = "192.168.0.10";
    // Once the 1 ms cache entry has expired, the new answer is checked and refused.
    await expect
      .poll(() =>
        lookup("rebind.example").then(
          (a) => a,
          (err: Error) => err.message,
        ),
      )
      .toBe("destination 192.168.0.10 (rebind.example) is a private address; allow it with security.allowed_networks");
  });
});
