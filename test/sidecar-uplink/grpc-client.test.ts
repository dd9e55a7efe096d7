import { selfSignedCertificate } from "../support/tls.js";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import {
  type CallStatus,
  GrpcChannel,
  GrpcStatus,
  decodeGrpcMessage,
  parseTarget,
} from "../../sidecar/uplink/grpc-client.js";
import type { Uplink, UplinkOptions } from "../../sidecar/uplink/uplink.js";
import { FakeControlPlane, waitFor } from "./fake-control-plane.js";
import { CapturedLog, completionEvent, temporaryDir, testUplink } from "./helpers.js";

// The uplink's own gRPC client (node:http2): TLS, keepalive, answers that are not gRPC,
// messages split across HTTP/2 frames, against real servers on port 0.

let dir: { path: string; remove: () => Promise<void> };
let log: CapturedLog;
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(async () => {
  dir = await temporaryDir();
  log = new CapturedLog();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await dir.remove();
});

function uplinkTo(target: string, options: Partial<UplinkOptions> = {}): Uplink {
  const uplink = testUplink(target, dir.path, log.logger, options);
  cleanups.push(() => uplink.close());
  return uplink;
}

async function controlPlane(tls?: { key: Buffer; cert: Buffer }): Promise<FakeControlPlane> {
  const plane = new FakeControlPlane();
  await plane.start(0, tls);
  cleanups.push(() => plane.stop());
  return plane;
}

let certificate: { key: Buffer; cert: Buffer } | undefined;
beforeAll(async () => {
  const certDir = await temporaryDir();
  certificate = selfSignedCertificate(certDir.path);
  await certDir.remove();
});

/** A TCP relay to `port` that can go silent (a dead link: nothing more in either direction). */
async function relayTo(port: number): Promise<{ port: number; freeze: () => void; close: () => Promise<void> }> {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    client.on("data", (chunk) => {
      if (!frozen) upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      if (!frozen) client.write(chunk);
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    freeze: () => {
      frozen = true;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("gRPC client of the uplink", () => {
  it("reads targets as gRPC does: host:port, http:// (cleartext), https:// (TLS), IPv6, 443 by default", () => {
    expect(parseTarget("127.0.0.1:7070")).toEqual({
      url: "http://127.0.0.1:7070",
      tls: false,
      authority: "127.0.0.1:7070",
    });
    expect(parseTarget("http://cp.internal:7070/")).toMatchObject({ url: "http://cp.internal:7070", tls: false });
    expect(parseTarget("https://cp.example.com")).toEqual({
      url: "https://cp.example.com:443",
      tls: true,
      authority: "cp.example.com:443",
    });
    expect(parseTarget("http://[::1]:7070")).toMatchObject({ url: "http://[::1]:7070", authority: "[::1]:7070" });
    expect(parseTarget("[::1]")).toMatchObject({ authority: "[::1]:443" });
    expect(decodeGrpcMessage('org "acme" %E2%80%94 not "globex"')).toBe('org "acme" — not "globex"');
    expect(decodeGrpcMessage("100% sure")).toBe("100% sure");
  });

  it("treats a target no connection can be made to (not an address) as unreachable, never throwing", async () => {
    const uplink = uplinkTo("http://bad host:1", { reconnectInitialMs: 20, reconnectMaxMs: 50 });
    await uplink.start();
    expect(() => uplink.publish(completionEvent())).not.toThrow();
    await waitFor(() => log.has("control plane unreachable"), "the bad target logged");
    const line = log.lines.find((l) => String(l.msg).includes("unreachable"));
    expect(line).toMatchObject({ code: "UNAVAILABLE", target: "http://bad host:1" });
    expect(String(line?.details)).toMatch(/cannot connect to "http:\/\/bad host:1": Invalid URL/);
    await waitFor(() => uplink.stats().connectAttempts >= 3, "retried on the usual backoff");
    expect(uplink.stats()).toMatchObject({ connected: false, queuedEvents: 1, dropped: 0 });
  });

  it("delivers over TLS to a control plane with a certificate it trusts, and refuses one it does not", async (ctx) => {
    if (!certificate) return ctx.skip("openssl is not installed: no certificate to test with");
    const plane = await controlPlane(certificate);
    expect(plane.target).toMatch(/^https:\/\//);

    // Not trusted (self-signed, not in Node's roots): unreachable, said why, nothing sent.
    const untrusting = uplinkTo(plane.target, { connectTimeoutMs: 2_000 });
    await untrusting.start();
    untrusting.publish(completionEvent());
    await waitFor(() => log.has("control plane unreachable"), "the certificate refusal logged");
    const refusal = log.lines.find((line) => String(line.msg).includes("unreachable"));
    expect(String(refusal?.details)).toMatch(/self[- ]signed certificate/i);
    expect(refusal).toMatchObject({ code: "UNAVAILABLE", target: plane.target });
    expect(plane.hellos).toEqual([]);
    await untrusting.close();

    // Trusted through tlsCa: the same spool's event and new ones, in order.
    const uplink = uplinkTo(plane.target, { tlsCa: certificate.cert });
    await uplink.start();
    const event = completionEvent();
    uplink.publish(event);
    await uplink.flush({ timeoutMs: 10_000 });
    expect(plane.hellos).toHaveLength(1);
    expect(plane.storedEventIds()).toHaveLength(2);
    expect(plane.storedEventIds()[1]).toBe(event.id);
    expect(uplink.stats()).toMatchObject({ connected: true, dropped: 0, target: plane.target });
  });

  it("reassembles messages split across HTTP/2 frames (a 300 KB config snapshot, 2 MB of batches)", async () => {
    const plane = await controlPlane();
    // ~300 KB on the wire: many DATA frames of at most 16 KiB.
    const wanted = Array.from({ length: 150_000 }, (_, i) =>
      i % 2 === 0 ? EventType.COMPLETION : EventType.STREAMING,
    );
    plane.configOnConnect = [{ version: 9n, wantedEventTypes: wanted }];
    let applied = 0;
    const uplink = uplinkTo(plane.target, {
      onConfig: (snapshot) => {
        applied = snapshot.wantedEventTypes.length;
      },
    });
    await uplink.start();
    await waitFor(() => applied === wanted.length, "the large snapshot applied");
    const ids: string[] = [];
    for (let i = 0; i < 2_000; i++) {
      const event = completionEvent("m".repeat(1_000));
      ids.push(event.id);
      uplink.publish(event);
    }
    await uplink.flush({ timeoutMs: 20_000 });
    expect([...new Set(plane.storedEventIds())]).toEqual(ids);
  });

  it("drops a connection whose keepalive pings go unanswered, and reconnects", async () => {
    const plane = await controlPlane();
    const relay = await relayTo(plane.port);
    cleanups.push(() => relay.close());
    const uplink = uplinkTo(`127.0.0.1:${relay.port}`, { keepaliveTimeMs: 200, keepaliveTimeoutMs: 300 });
    await uplink.start();
    uplink.publish(completionEvent());
    await uplink.flush({ timeoutMs: 10_000 });
    const attempts = uplink.stats().connectAttempts;
    relay.freeze();
    const noticed = () => log.lines.find((l) => String(l.details).includes("keepalive ping unanswered"));
    await waitFor(() => noticed() !== undefined, "the dead link noticed", 10_000);
    expect(noticed()).toMatchObject({
      code: "UNAVAILABLE",
      msg: "uplink: stream to control plane ended; reconnecting",
    });
    await waitFor(() => uplink.stats().connectAttempts > attempts, "a new connection tried");
  });

  it("reports a server that does not speak gRPC by its HTTP status, and a reset stream, without throwing", async () => {
    const server = http2.createServer((req, res) => {
      if (req.url.endsWith("/Reset")) {
        req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      res.writeHead(404, { "content-type": "text/html" }).end("<h1>not here</h1>");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as AddressInfo).port;
    const channel = await new Promise<GrpcChannel>((resolve, reject) => {
      const made: GrpcChannel = new GrpcChannel(
        {
          target: `127.0.0.1:${port}`,
          connectTimeoutMs: 5_000,
          keepaliveTimeMs: 30_000,
          keepaliveTimeoutMs: 10_000,
          userAgent: "aigw-test",
        },
        (problem) => (problem === undefined ? resolve(made) : reject(new Error(problem))),
      );
    });
    cleanups.push(() => channel.close());
    const statusOf = (path: string) =>
      new Promise<{ status: CallStatus; messages: number }>((resolve) => {
        let messages = 0;
        const call = channel.openBidi(
          path,
          {},
          {
            onMessage: () => messages++,
            onStatus: (status) => resolve({ status, messages }),
            onDrain: () => {},
          },
        );
        call.write(new Uint8Array([1, 2, 3]));
      });
    expect(await statusOf("/aigw.v1.IngestService/Connect")).toEqual({
      status: { code: GrpcStatus.UNIMPLEMENTED, details: "HTTP status 404" },
      messages: 0,
    });
    expect((await statusOf("/aigw.v1.IngestService/Reset")).status.code).toBe(GrpcStatus.INTERNAL);
    expect(channel.isReady).toBe(true);
  });
});
