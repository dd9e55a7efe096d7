import { createServer, type Server, type Socket } from "node:net";
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { DestinationGuard, DestinationRefusedError } from "../../control-plane/delivery/destination-guard.js";

// The destination rule itself (every address form) is tested in test/security; this is the
// connect-time part: names resolved, checked, and only allowed addresses dialled.
const strict = { requireHttps: true, allowedNetworks: [] };

const REFUSED_TAIL = "allow it with security.allowed_networks";

describe("DestinationGuard", () => {
  it("checks what a hostname resolves to, naming the host", async () => {
    const resolve = async (host: string) =>
      host === "hooks.internal" ? [{ address: "10.0.0.5", family: 4 }] : [{ address: "93.184.216.34", family: 4 }];
    const guard = new DestinationGuard(strict, { resolve });
    await expect(guard.resolveChecked("hooks.internal")).rejects.toThrow(
      `destination hooks.internal (10.0.0.5) is a private address; ${REFUSED_TAIL}`,
    );
    await expect(guard.resolveChecked("example.com")).resolves.toEqual([{ address: "93.184.216.34", family: 4 }]);
  });

  it("refuses names resolving to IPv6 forms of loopback (IPv4-compatible, NAT64, mapped)", async () => {
    for (const address of ["::7f00:1", "64:ff9b::7f00:1", "::ffff:7f00:1", "::1"]) {
      const guard = new DestinationGuard(strict, { resolve: async () => [{ address, family: 6 }] });
      await expect(guard.resolveChecked("rebind.example"), address).rejects.toBeInstanceOf(DestinationRefusedError);
    }
  });

  it("drops the disallowed addresses of a name and keeps the allowed ones", async () => {
    const guard = new DestinationGuard(
      { ...strict, allowedNetworks: ["127.0.0.0/8"] },
      {
        resolve: async () => [
          { address: "::1", family: 6 },
          { address: "127.0.0.1", family: 4 },
        ],
      },
    );
    expect(await guard.resolveChecked("localhost")).toEqual([{ address: "127.0.0.1", family: 4 }]);
  });

  it("refuses a hostname resolving to 127.0.0.1 unless allowed_networks has 127.0.0.0/8 (system resolver)", async () => {
    await expect(new DestinationGuard(strict).resolveChecked("localhost")).rejects.toThrow(
      /destination localhost \(127\.0\.0\.1\) is a loopback address/,
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
      .toBe(`destination rebind.example (192.168.0.10) is a private address; ${REFUSED_TAIL}`);
  });
});

describe("DestinationGuard on a real socket", () => {
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
  });

  it("never connects to a loopback listener a name rebinds to, and does once it is allowed", async () => {
    let connections = 0;
    server = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.end("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const request = async (allowedNetworks: string[]) => {
      const guard = new DestinationGuard(
        { requireHttps: false, allowedNetworks },
        { resolve: async () => [{ address: "127.0.0.1", family: 4 }] },
      );
      const agent = new Agent({ connect: { lookup: guard.lookup } });
      try {
        const res = await agent.request({ origin: `http://rebind.example:${port}`, path: "/", method: "POST" });
        await res.body.dump();
        return res.statusCode;
      } catch (err) {
        return err as Error;
      } finally {
        await agent.close();
      }
    };
    const refused = await request([]);
    expect(refused).toBeInstanceOf(Error);
    expect(String((refused as Error).message)).toBe(
      `destination rebind.example (127.0.0.1) is a loopback address; ${REFUSED_TAIL}`,
    );
    expect(connections).toBe(0);
    expect(await request(["127.0.0.0/8"])).toBe(200);
    expect(connections).toBe(1);
  });
});
