import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { LeanPool, type LeanPoolOptions } from "../../sidecar/proxy/lean-upstream.js";
import { leanGet, waitFor } from "./harness.js";

// The lean upstream client's timers: it sets no timer per request (a socket's timeout is set
// once and refreshed by node on every read and write; idle sockets expire by one sweep per
// pool), and still keeps undici's behaviour: a silent upstream times out on a reused socket
// too, however long that socket was idle before, and an idle socket is closed once the
// upstream's Keep-Alive hint (less 2 s) has passed, never reused after it.

interface Upstream {
  server: Server;
  port: number;
  /** Every socket the proxy opened, with when it closed (0 while open). */
  sockets: Array<{ socket: Socket; closedAt: number }>;
  /** Requests seen, in order. */
  requests: string[];
}

/**
 * A provider on raw sockets that never closes a connection itself: it answers `/ok` at once
 * with `Keep-Alive: timeout=SECONDS`, and never answers `/silent`.
 */
async function startUpstream(keepAliveSeconds: number): Promise<Upstream> {
  const upstream: Upstream = { server: undefined as unknown as Server, port: 0, sockets: [], requests: [] };
  upstream.server = createServer((socket) => {
    const entry = { socket, closedAt: 0 };
    upstream.sockets.push(entry);
    socket.on("close", () => {
      entry.closedAt = Date.now();
    });
    socket.on("error", () => {});
    let buffered = "";
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("latin1");
      for (let end = buffered.indexOf("\r\n\r\n"); end !== -1; end = buffered.indexOf("\r\n\r\n")) {
        const path = buffered.slice(0, end).split(" ")[1]!;
        buffered = buffered.slice(end + 4);
        upstream.requests.push(path);
        if (path === "/ok") {
          socket.write(
            `HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\nkeep-alive: timeout=${keepAliveSeconds}\r\n\r\nok`,
          );
        }
      }
    });
  });
  await new Promise<void>((resolve) => upstream.server.listen(0, "127.0.0.1", resolve));
  upstream.port = (upstream.server.address() as AddressInfo).port;
  return upstream;
}

const get = leanGet;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("lean upstream client: timeouts and keep-alive without a timer per request", () => {
  let upstream: Upstream | undefined;
  let pool: LeanPool | undefined;

  afterEach(async () => {
    pool?.destroy();
    for (const { socket } of upstream?.sockets ?? []) socket.destroy();
    if (upstream) await new Promise((resolve) => upstream!.server.close(resolve));
    upstream = undefined;
    pool = undefined;
  });

  const options = (timeoutMs: number): LeanPoolOptions => ({
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    connectTimeout: 5_000,
  });

  it("a silent upstream times out on a reused socket, also after an idle time longer than the timeout", async () => {
    upstream = await startUpstream(60);
    pool = new LeanPool(`http://127.0.0.1:${upstream.port}`, options(300));
    expect(await get(pool, "/ok")).toMatchObject({ status: 200, body: "ok" });
    // Idle past the timeout: the socket's timer fires with no request, and is ignored.
    await sleep(700);
    const answered = await get(pool, "/ok");
    expect(answered).toMatchObject({ status: 200, body: "ok" });
    expect(upstream.sockets).toHaveLength(1);
    // Idle past the timeout again, then a request the upstream never answers: it still times out.
    await sleep(700);
    const failed = await get(pool, "/silent").then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    );
    expect(failed?.code).toBe("UND_ERR_HEADERS_TIMEOUT");
    expect(upstream.sockets).toHaveLength(1);
    expect(upstream.requests).toEqual(["/ok", "/ok", "/silent"]);
    // And on a socket reused at once after an answer.
    expect(await get(pool, "/ok")).toMatchObject({ status: 200 });
    const startedAt = Date.now();
    const again = await get(pool, "/silent").then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    );
    expect(again?.code).toBe("UND_ERR_HEADERS_TIMEOUT");
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(250);
  });

  it("an idle socket is reused within the upstream's keep-alive hint, and closed once it has passed", async () => {
    // timeout=3: kept 3 s less the 2 s margin, so 1 s.
    upstream = await startUpstream(3);
    pool = new LeanPool(`http://127.0.0.1:${upstream.port}`, options(10_000));
    await get(pool, "/ok");
    const idleFrom = Date.now();
    await sleep(200);
    await get(pool, "/ok");
    expect(upstream.sockets).toHaveLength(1);
    const reusedAt = Date.now();
    // The sweep closes it between 1 s and 1 s plus one sweep interval after it went idle.
    await waitFor("the idle socket closed by the proxy", () => upstream!.sockets[0]!.closedAt || undefined, 5_000);
    const idleMs = upstream.sockets[0]!.closedAt - reusedAt;
    expect(idleMs).toBeGreaterThanOrEqual(950);
    expect(idleMs).toBeLessThan(2_900);
    expect(reusedAt - idleFrom).toBeLessThan(1_000);
    // The next request opens a new socket.
    expect(await get(pool, "/ok")).toMatchObject({ status: 200 });
    expect(upstream.sockets).toHaveLength(2);
  });

  it("an idle socket past its keep-alive time is not taken, even before the sweep closes it", async () => {
    // timeout=2: 2 s less the 2 s margin, so not kept at all.
    upstream = await startUpstream(2);
    pool = new LeanPool(`http://127.0.0.1:${upstream.port}`, options(10_000));
    await get(pool, "/ok");
    await sleep(20);
    await get(pool, "/ok");
    expect(upstream.sockets).toHaveLength(2);
    await waitFor("the first socket closed", () => upstream!.sockets[0]!.closedAt || undefined, 5_000);
  });
});
