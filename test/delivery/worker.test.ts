import { createServer as createTcpServer, type Socket, type Server as TcpServer } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { DeliveryTask } from "../../control-plane/delivery/task.js";
import deliver, { closeTransports } from "../../control-plane/delivery/worker.js";
import { USER_AGENT } from "../../common/version.js";
import { freePort, startTestServer, type TestServer } from "./helpers.js";

const SECRET = "whsec_" + Buffer.from("worker-test-secret-0123456789abcd").toString("base64");

function task(url: string, over: Partial<DeliveryTask> = {}): DeliveryTask {
  return {
    deliveryId: "dlv_test",
    url,
    body: JSON.stringify({ event: "completion", id: "evt_worker", tokens_used: 42 }),
    webhookId: "evt_worker",
    secrets: [SECRET],
    signatureHeader: "X-Webhook-Signature",
    timeoutMs: 5_000,
    requireHttps: false,
    allowedNetworks: ["127.0.0.0/8"],
    userAgent: USER_AGENT,
    ...over,
  };
}

const servers: { close(): Promise<void> }[] = [];
async function server(handler: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  const s = await startTestServer(handler);
  servers.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await closeTransports();
});

describe("delivery worker", () => {
  it("POSTs a signed webhook that standardwebhooks verifies, and reports 200", async () => {
    const s = await server((_req, res) => res.writeHead(200).end("thanks"));
    const t = task(s.url);
    const result = await deliver(t);
    expect(result).toMatchObject({
      statusCode: 200,
      error: "",
      responseBody: "thanks",
      timedOut: false,
      refused: false,
    });
    expect(result.latencyMs).toBeGreaterThanOrEqual(0);
    const req = s.requests[0]!;
    expect(req.body).toBe(t.body);
    expect(req.headers["content-type"]).toBe("application/json");
    expect(req.headers["user-agent"]).toMatch(/^aigw\/\d+\.\d+\.\d+/);
    expect(req.headers["webhook-id"]).toBe("evt_worker");
    expect(Math.abs(Number(req.headers["webhook-timestamp"]) - Date.now() / 1000)).toBeLessThan(10);
    expect(req.headers["x-webhook-signature"]).toBe(req.headers["webhook-signature"]);
    const verified = new Webhook(SECRET).verify(req.body, req.headers as Record<string, string>);
    expect(verified).toEqual(JSON.parse(t.body));
  });

  it("reports 503 with Retry-After and the start of the body", async () => {
    const s = await server((_req, res) => res.writeHead(503, { "retry-after": "7" }).end("busy"));
    expect(await deliver(task(s.url))).toMatchObject({
      statusCode: 503,
      retryAfterMs: 7000,
      responseBody: "busy",
      error: "",
    });
  });

  it("times out a receiver that never answers", async () => {
    const s = await server(() => {
      /* never answers */
    });
    const result = await deliver(task(s.url, { timeoutMs: 300 }));
    expect(result).toMatchObject({
      statusCode: 0,
      timedOut: true,
      networkError: false,
      error: "timed out after 300 ms",
    });
    expect(result.latencyMs).toBeGreaterThanOrEqual(250);
    expect(result.latencyMs).toBeLessThan(5_000);
  });

  it("reports connection refused as a network error", async () => {
    const port = await freePort();
    const result = await deliver(task(`http://127.0.0.1:${port}/hook`));
    expect(result).toMatchObject({ statusCode: 0, networkError: true, timedOut: false, refused: false });
    expect(result.error).toMatch(/ECONNREFUSED/);
  });

  it("does not follow a 302", async () => {
    const target = await server((_req, res) => res.writeHead(200).end());
    const s = await server((_req, res) => res.writeHead(302, { location: target.url }).end());
    const result = await deliver(task(s.url));
    expect(result.statusCode).toBe(302);
    expect(target.requests).toHaveLength(0);
  });

  it("keeps the first 1 KiB of a huge, binary response body and never throws", async () => {
    const s = await server((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      const junk = Buffer.alloc(256 * 1024);
      for (let i = 0; i < junk.length; i++) junk[i] = (i * 7919) % 256;
      res.end(junk);
    });
    const result = await deliver(task(s.url));
    expect(result.statusCode).toBe(200);
    expect(Buffer.byteLength(result.responseBody, "utf8")).toBeLessThanOrEqual(1024 * 3);
    expect(result.responseBody.length).toBeGreaterThan(0);
    expect(result.responseBody).not.toContain("\u0000");
  });

  it("turns a response that is not HTTP into a network error", async () => {
    const sockets = new Set<Socket>();
    const tcp: TcpServer = createTcpServer((socket) => {
      sockets.add(socket);
      socket.end("garbage that is not HTTP\r\n\r\n");
    });
    await new Promise<void>((resolve) => tcp.listen(0, "127.0.0.1", resolve));
    servers.push({
      close: () =>
        new Promise<void>((resolve) => {
          tcp.close(() => resolve());
          for (const socket of sockets) socket.destroy();
        }),
    });
    const port = (tcp.address() as { port: number }).port;
    const result = await deliver(task(`http://127.0.0.1:${port}/`));
    expect(result).toMatchObject({ statusCode: 0, networkError: true });
    expect(result.error.length).toBeGreaterThan(0);
  });

  it("refuses destinations the guard forbids without sending anything", async () => {
    const s = await server((_req, res) => res.writeHead(200).end());
    const viaName = await deliver(task(s.url.replace("127.0.0.1", "localhost"), { allowedNetworks: [] }));
    expect(viaName).toMatchObject({ statusCode: 0, refused: true, networkError: false });
    expect(viaName.error).toBe(
      "AIGW_DESTINATION_REFUSED: destination localhost is a loopback name; allow it with security.allowed_networks (127.0.0.0/8)",
    );
    const literal = await deliver(task(s.url, { allowedNetworks: [] }));
    expect(literal.error).toBe(
      "AIGW_DESTINATION_REFUSED: destination 127.0.0.1 is a loopback address; allow it with security.allowed_networks",
    );
    // The IPv6 forms of a loopback address are refused before any connection is tried.
    for (const host of ["[::ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]"]) {
      const embedded = await deliver(task(s.url.replace("127.0.0.1", host), { allowedNetworks: [] }));
      expect(embedded, host).toMatchObject({ refused: true, networkError: false });
      expect(embedded.error, host).toMatch(
        /^AIGW_DESTINATION_REFUSED: destination \S+ carries 127\.0\.0\.1, a loopback/,
      );
    }
    const https = await deliver(task(s.url, { requireHttps: true }));
    expect(https).toMatchObject({ refused: true });
    expect(https.error).toMatch(/require_https/);
    expect(s.requests).toHaveLength(0);
    // Allowed: the same host by name goes through.
    expect((await deliver(task(s.url.replace("127.0.0.1", "localhost")))).statusCode).toBe(200);
  });

  it("refuses a task it cannot sign, as a result rather than an exception", async () => {
    const result = await deliver(task("http://127.0.0.1:9/", { secrets: ["whsec_???"] }));
    expect(result).toMatchObject({ refused: true, statusCode: 0 });
    expect(result.error).toMatch(/not base64/);
    const noKeys = await deliver(task("http://127.0.0.1:9/", { secrets: [] }));
    expect(noKeys.error).toMatch(/no signing key/);
  });
});
