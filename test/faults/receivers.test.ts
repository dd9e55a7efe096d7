import { selfSignedCertificate } from "../support/tls.js";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AttemptRecord, DeliveryRecord } from "../../control-plane/store/store.js";
import { completion, type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";
import { waitFor } from "../support/wait.js";

// Receivers that misbehave, against a real control plane (delivery.timeout_ms 1000): each
// fault is one endpoint; one event goes to each, and what the store recorded for its
// attempts is what an operator sees. Nothing here may hang an attempt past its timeout,
// read an unbounded body, or crash the process; retryable faults are retried with the same
// webhook-id.

const TIMEOUT_MS = 1_000;
/** Past the timeout, a finished attempt may take this long to be recorded on a busy machine. */
const SLACK_MS = 1_500;

interface Listening {
  url: string;
  /** webhook-id of each request, in arrival order. */
  ids: string[];
  close(): Promise<void>;
}

function listenOn(server: net.Server, scheme: "http" | "https"): Promise<Listening & { server: net.Server }> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        server,
        url: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
        ids: [],
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      }),
    ),
  );
}

/** An HTTP receiver; `handle` gets the 1-based attempt number of the request's webhook-id. */
async function receiver(
  handle: (req: http.IncomingMessage, res: http.ServerResponse, attempt: number) => void,
): Promise<Listening> {
  const counts = new Map<string, number>();
  let l: Listening;
  const server = http.createServer((req, res) => {
    const id = String(req.headers["webhook-id"]);
    l.ids.push(id);
    const attempt = (counts.get(id) ?? 0) + 1;
    counts.set(id, attempt);
    req.resume();
    req.on("end", () => handle(req, res, attempt));
  });
  l = await listenOn(server, "http");
  return l;
}

/** A TCP server that reads the request and answers with `respond` (raw bytes, its own pace). */
async function rawReceiver(respond: (socket: net.Socket) => void): Promise<Listening> {
  let l: Listening;
  const server = net.createServer((socket) => {
    let head = "";
    socket.on("data", (chunk) => {
      head += chunk.toString("latin1");
      if (head.includes("\r\n\r\n") && !socket.readableEnded) {
        const id = /webhook-id: (\S+)/i.exec(head)?.[1];
        if (id) l.ids.push(id);
        head = "";
        respond(socket);
      }
    });
    socket.on("error", () => {});
  });
  l = await listenOn(server, "http");
  return l;
}

describe("receiver faults (real control plane, delivery.timeout_ms 1000)", () => {
  let dir: string;
  let fixture: ControlPlaneFixture;
  const receivers: Record<string, Listening> = {};
  /** Bytes the enormous receiver got out before the control plane stopped reading. */
  let enormousWritten = 0;
  let enormousClosedEarly = false;
  const ENORMOUS_BYTES = 200 * 1024 * 1024;
  let tls: { key: Buffer; cert: Buffer } | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-receivers-"));
    // Status line and headers one byte a second.
    receivers.drip_headers = await rawReceiver((socket) => {
      const bytes = Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      let i = 0;
      const timer = setInterval(() => {
        if (socket.destroyed || i >= bytes.length) return clearInterval(timer);
        socket.write(bytes.subarray(i, ++i));
      }, 1_000);
      socket.once("close", () => clearInterval(timer));
    });
    // 200 at once, then the body one byte a second.
    receivers.drip_body = await rawReceiver((socket) => {
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n");
      const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write("x")), 1_000);
      socket.once("close", () => clearInterval(timer));
    });
    // 200 with a 200 MB body, written as fast as the control plane reads it.
    receivers.enormous = await receiver((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain", "content-length": String(ENORMOUS_BYTES) });
      const chunk = Buffer.alloc(64 * 1024, "a");
      const pump = () => {
        while (enormousWritten < ENORMOUS_BYTES) {
          enormousWritten += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        res.end();
      };
      res.once("close", () => {
        enormousClosedEarly = enormousWritten < ENORMOUS_BYTES;
      });
      pump();
    });
    // The first attempt is answered 200 after the timeout; the second at once.
    receivers.late = await receiver((_req, res, attempt) => {
      if (attempt === 1) setTimeout(() => res.writeHead(200).end("late"), TIMEOUT_MS + 500);
      else res.writeHead(200).end("ok");
    });
    // Not HTTP at all.
    receivers.garbage = await rawReceiver((socket) => socket.end("\u0000\u0001garbage\r\n\r\nnot http"));
    tls = selfSignedCertificate(dir);
    if (tls) {
      let l: Listening;
      const server = https.createServer(tls, (req, res) => {
        l.ids.push(String(req.headers["webhook-id"]));
        res.writeHead(200).end();
      });
      l = await listenOn(server, "https");
      receivers.self_signed = l;
    }
    const endpoints = Object.entries(receivers)
      .map(([name, r]) => `  ${name}:\n    url: "${r.url}"\n    secret: "${TEST_SECRET}"\n`)
      .join("");
    fixture = await startControlPlane(`
webhooks:
${endpoints}  unresolvable:
    url: "https://does-not-exist.invalid/hooks"
    secret: "${TEST_SECRET}"
retry:
  max_attempts: 2
  initial_delay_ms: 100
  max_delay_ms: 200
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
delivery:
  timeout_ms: ${TIMEOUT_MS}
`);
  });

  afterAll(async () => {
    await fixture?.close();
    await Promise.all(Object.values(receivers).map((r) => r.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  /** Sends one event to `endpoint`; resolves with its delivery once that has ended, and the attempts. */
  async function deliverOne(
    endpoint: string,
  ): Promise<{ eventId: string; delivery: DeliveryRecord; attempts: AttemptRecord[]; ms: number }> {
    const { cp } = fixture;
    const event = completion("gpt-4", 10);
    const started = Date.now();
    await cp.deliverEvents([event], [endpoint]);
    const delivery = await waitFor(
      `the delivery to ${endpoint} to end`,
      async () => {
        const { deliveries } = await cp.store.listDeliveries({ eventId: event.id, pageSize: 10 });
        const d = deliveries.find((x) => x.endpoint === endpoint);
        return d && d.status !== "pending" ? d : undefined;
      },
      30_000,
    );
    return {
      eventId: event.id,
      delivery,
      attempts: await cp.store.listAttempts(delivery.id),
      ms: Date.now() - started,
    };
  }

  it("headers dripped a byte a second: the attempt times out at timeout_ms as a whole, and is retried", async () => {
    const { eventId, delivery, attempts } = await deliverOne("drip_headers");
    expect(delivery.status).toBe("dead_lettered");
    expect(attempts).toHaveLength(2);
    for (const a of attempts) {
      expect(a.error).toBe(`timed out after ${TIMEOUT_MS} ms`);
      expect(a.latencyMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(a.latencyMs).toBeLessThan(TIMEOUT_MS + SLACK_MS);
    }
    expect(receivers.drip_headers!.ids).toEqual([eventId, eventId]);
  });

  it("a 200 whose body drips a byte a second: the status counts, the attempt still ends by timeout_ms", async () => {
    const { delivery, attempts, ms } = await deliverOne("drip_body");
    expect(delivery.status).toBe("delivered");
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ statusCode: 200, error: "" });
    // Recorded once the body was cut at the timeout, not after 100 s of dripping.
    expect(ms).toBeLessThan(TIMEOUT_MS + SLACK_MS + 2_000);
  });

  it("an enormous response body is not read past a bound", async () => {
    const { delivery, attempts } = await deliverOne("enormous");
    expect(delivery.status).toBe("delivered");
    expect(attempts[0]!.statusCode).toBe(200);
    expect(attempts[0]!.responseBody.length).toBeLessThanOrEqual(1024);
    await waitFor("the receiver's connection closed by the control plane", () => enormousClosedEarly);
    // The control plane reads 64 KiB and hangs up; socket buffers let a few MB more out.
    expect(enormousWritten).toBeLessThan(32 * 1024 * 1024);
  });

  it("a 200 after the timeout counts as a timeout, and the retry carries the same webhook-id", async () => {
    const { eventId, delivery, attempts } = await deliverOne("late");
    expect(delivery.status).toBe("delivered");
    expect(attempts.map((a) => [a.statusCode, a.error])).toEqual([
      [0, `timed out after ${TIMEOUT_MS} ms`],
      [200, ""],
    ]);
    expect(receivers.late!.ids).toEqual([eventId, eventId]);
  });

  it("a response that is not HTTP is a network error, retried, and the control plane stays up", async () => {
    const { delivery, attempts } = await deliverOne("garbage");
    expect(delivery.status).toBe("dead_lettered");
    expect(attempts).toHaveLength(2);
    expect(attempts[0]!.statusCode).toBe(0);
    expect(attempts[0]!.error).toMatch(/does not match the HTTP\/1.1 protocol/);
    const health = await fetch(`${fixture.cp.httpUrl}/healthz`);
    expect(health.status).toBe(200);
  });

  it("a name that does not resolve: a clear error naming the host, retried", async () => {
    const { delivery, attempts } = await deliverOne("unresolvable");
    expect(delivery.status).toBe("dead_lettered");
    expect(attempts).toHaveLength(2);
    for (const a of attempts) {
      expect(a.statusCode).toBe(0);
      expect(a.error).toMatch(/does-not-exist\.invalid/);
      expect(a.error).toMatch(/ENOTFOUND|EAI_AGAIN|resolve/);
    }
  });

  it("a self-signed TLS certificate: a clear certificate error, retried, nothing sent in clear", async (ctx) => {
    if (!tls) return ctx.skip("openssl is not installed: no certificate to test with");
    const { delivery, attempts } = await deliverOne("self_signed");
    expect(delivery.status).toBe("dead_lettered");
    expect(attempts).toHaveLength(2);
    for (const a of attempts) {
      expect(a.statusCode).toBe(0);
      expect(a.error).toMatch(/self[- ]signed certificate/i);
    }
    // The handshake failed: no request reached the receiver.
    expect(receivers.self_signed!.ids).toEqual([]);
  });
});
