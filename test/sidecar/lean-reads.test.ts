import { Agent, createServer as createHttpServer, request as httpRequest, type Server } from "node:http";
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createLeanServer,
  type LeanServer,
  readIntoSharedBuffer,
  setReadCallback,
  takeWholeBody,
} from "../../sidecar/proxy/lean-server.js";
import { LeanPool } from "../../sidecar/proxy/lean-upstream.js";

// The lean upstream client reads every plain-TCP socket into one shared buffer (node:net's
// `onread`) and copies each read out at once. Many sockets answering at the same time, some
// paused by a slow consumer, must each get exactly their own bytes. And a lean request whose
// body the handler took whole is an empty stream that still ends when someone reads it.

/** Body of response `id`: `size` bytes that say which response and which offset they are. */
function pattern(id: number, size: number): Buffer {
  const body = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) body.writeUInt32LE(((id << 24) | (i >>> 2)) >>> 0, i);
  return body;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

describe("lean upstream: one read buffer for every socket", () => {
  let upstream: Server;
  let port = 0;

  beforeAll(async () => {
    // Each response goes out in many writes a tick apart, chunked or with a length, so the
    // reads of concurrent responses interleave.
    upstream = createHttpServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      const id = Number(url.searchParams.get("id"));
      const size = Number(url.searchParams.get("size"));
      const body = pattern(id, size);
      const chunked = url.searchParams.has("chunked");
      res.writeHead(200, chunked ? {} : { "content-length": String(size) });
      let at = 0;
      const next = (): void => {
        if (res.destroyed) return;
        if (at >= size) {
          res.end();
          return;
        }
        const piece = body.subarray(at, at + 1000 + ((id * 7919 + at) % 9000));
        at += piece.length;
        res.write(piece);
        setImmediate(next);
      };
      next();
    });
    port = await listen(upstream);
  });

  afterAll(async () => {
    upstream.closeAllConnections();
    await new Promise((resolve) => upstream.close(resolve));
  });

  it("24 concurrent responses, a third of them paused by a slow consumer, each get exactly their bytes", async () => {
    const pool = new LeanPool(`http://127.0.0.1:${port}`, {
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 600_000,
      connectTimeout: 10_000,
    });
    const size = 300_000;
    const one = (id: number): Promise<{ status: number; body: Buffer; paused: number }> =>
      new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        let status = 0;
        let resume: () => void = () => {};
        let paused = 0;
        const slow = id % 3 === 0;
        pool.dispatch(
          { path: `/r?id=${id}&size=${size}${id % 2 ? "&chunked" : ""}`, method: "GET", headers: [], body: null },
          {
            onConnect() {},
            onHeaders(code, _headers, resumeUpstream) {
              status = code;
              resume = resumeUpstream;
              return true;
            },
            onData(chunk) {
              chunks.push(chunk);
              if (!slow) return true;
              // A slow consumer: pauses the socket and resumes it a little later, while the
              // other sockets go on reading into the same buffer.
              paused++;
              setTimeout(resume, 2);
              return false;
            },
            onComplete() {
              resolve({ status, body: Buffer.concat(chunks), paused });
            },
            onError: reject,
          },
        );
      });
    try {
      const results = await Promise.all(Array.from({ length: 24 }, (_, id) => one(id)));
      for (const [id, result] of results.entries()) {
        expect(result.status, `response ${id}`).toBe(200);
        expect(result.body.length, `response ${id}`).toBe(size);
        expect(result.body.equals(pattern(id, size)), `response ${id} has its own bytes`).toBe(true);
        if (id % 3 === 0) expect(result.paused, `response ${id} was paused`).toBeGreaterThan(1);
      }
    } finally {
      pool.destroy();
    }
  }, 60_000);
});

describe("lean server: a body taken whole", () => {
  let lean: LeanServer;
  let port = 0;
  const fallback = createHttpServer(() => {});

  beforeAll(async () => {
    lean = createLeanServer(
      (req, res) => {
        const taken = takeWholeBody(req);
        // Read the stream anyway: it has nothing left and must end (not hang).
        let streamed = 0;
        req.on("data", (chunk: Buffer) => {
          streamed += chunk.length;
        });
        req.on("end", () => {
          const answer = JSON.stringify({ taken: taken?.toString() ?? null, streamed });
          res.writeHead(200, ["content-type", "application/json", "content-length", String(answer.length)]);
          res.end(Buffer.from(answer));
        });
      },
      fallback,
      { keepAliveTimeoutMs: 5_000, headersTimeoutMs: 10_000, requestTimeoutMs: 0, checkIntervalMs: 1_000 },
    );
    port = await new Promise((resolve) =>
      lean.server.listen(0, "127.0.0.1", () => resolve((lean.server.address() as AddressInfo).port)),
    );
  });

  afterAll(async () => {
    lean.closeAllConnections();
    await new Promise((resolve) => lean.server.close(resolve));
  });

  it("is an empty stream that ends when read, and the connection serves the next request", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const post = (body: string): Promise<{ answer: unknown; socket: unknown }> =>
      new Promise((resolve, reject) => {
        const req = httpRequest(
          {
            host: "127.0.0.1",
            port,
            method: "POST",
            path: "/v1/chat/completions",
            agent,
            headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => resolve({ answer: JSON.parse(Buffer.concat(chunks).toString()), socket: req.socket }));
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    try {
      const first = await post('{"n":1}');
      const second = await post('{"n":2}');
      expect(first.answer).toEqual({ taken: '{"n":1}', streamed: 0 });
      expect(second.answer).toEqual({ taken: '{"n":2}', streamed: 0 });
      expect(second.socket).toBe(first.socket);
    } finally {
      agent.destroy();
    }
  });
});

describe("lean server: client sockets read into one shared buffer", () => {
  /** A TCP server whose accepted sockets are handed to `accept`, and a connected client per call. */
  async function pairs(
    count: number,
    accept: (socket: Socket, index: number) => void,
  ): Promise<{ clients: Socket[]; close: () => Promise<void> }> {
    let accepted = 0;
    const server = createNetServer((socket) => accept(socket, accepted++));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port: serverPort } = server.address() as AddressInfo;
    const clients = await Promise.all(
      Array.from(
        { length: count },
        () =>
          new Promise<Socket>((resolve, reject) => {
            const client = connect(serverPort, "127.0.0.1", () => resolve(client));
            client.on("error", reject);
          }),
      ),
    );
    return {
      clients,
      close: async () => {
        for (const c of clients) c.destroy();
        await new Promise((resolve) => server.close(resolve));
      },
    };
  }

  it("8 sockets sending at once in small writes each get exactly their own bytes, then the Readable's again", async () => {
    const size = 256 * 1024;
    const received: Buffer[][] = [];
    const engaged: boolean[] = [];
    const handedOver: Buffer[][] = [];
    const done: Promise<void>[] = [];
    const { clients, close } = await pairs(8, (socket, index) => {
      received[index] = [];
      handedOver[index] = [];
      let total = 0;
      done[index] = new Promise<void>((resolve) => {
        engaged[index] = readIntoSharedBuffer(socket, (chunk) => {
          received[index]!.push(chunk);
          total += chunk.length;
          if (total >= size) {
            // Hand over: from now on reads go to the socket's Readable ('data' events).
            setReadCallback(socket, (c) => socket.push(c));
            socket.on("data", (c: Buffer) => handedOver[index]!.push(c));
            socket.once("end", () => resolve());
          }
          return true;
        });
      });
    });
    try {
      await waitForAccepted(() => received.length === 8);
      // Interleaved writes of 1–7 KiB from every client, so reads of different sockets alternate.
      const bodies = clients.map((_, i) => pattern(i, size));
      const tails = clients.map((_, i) => pattern(100 + i, 10_000));
      for (let offset = 0; offset < size; ) {
        const step = 1024 * (1 + (offset % 7));
        for (let i = 0; i < clients.length; i++) clients[i]!.write(bodies[i]!.subarray(offset, offset + step));
        offset += step;
        await new Promise((resolve) => setImmediate(resolve));
      }
      // Sent once the whole body is in, so that it reaches the Readable.
      await waitForAccepted(() => received.every((chunks) => Buffer.concat(chunks).length >= size));
      for (let i = 0; i < clients.length; i++) clients[i]!.end(tails[i]!);
      await Promise.all(done);
      expect(engaged).toEqual(Array(8).fill(true));
      for (let i = 0; i < clients.length; i++) {
        expect(Buffer.concat(received[i]!).equals(bodies[i]!)).toBe(true);
        expect(Buffer.concat(handedOver[i]!).equals(tails[i]!)).toBe(true);
      }
    } finally {
      await close();
    }
  });

  it("leaves a socket that already reads into a buffer of its own as it is", async () => {
    // A client socket given node:net's `onread` (as the lean upstream's are).
    const server = createNetServer((s) => s.end());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const socket = connect({
      port: (server.address() as AddressInfo).port,
      host: "127.0.0.1",
      onread: { buffer: Buffer.alloc(1024), callback: () => true },
    });
    try {
      await new Promise((resolve) => socket.once("connect", resolve));
      expect(readIntoSharedBuffer(socket, () => true)).toBe(false);
    } finally {
      socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

async function waitForAccepted(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("lean reads: condition not met within 20 s");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
