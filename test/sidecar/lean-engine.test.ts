import { selfSignedCertificate } from "../support/tls.js";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { gzipSync } from "node:zlib";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { LeanPool } from "../../sidecar/proxy/lean-upstream.js";
import { type ProxyEngine, type RunningProxy, startProxy } from "../../sidecar/proxy/server.js";
import { CHAT_COMPLETION, exchange, leanGet, RecordingSink, waitFor } from "./harness.js";

// The lean engine must answer byte for byte what the node:http engine answers (Date and the
// request id aside), for the common case it serves and for what it hands to node:http.

function sseChunk(content: string, withNullUsage = false): string {
  const chunk = {
    id: "c",
    object: "chat.completion.chunk",
    model: "gpt-4o-mini",
    choices: [{ index: 0, delta: { content }, finish_reason: null }],
  };
  return `data: ${JSON.stringify(withNullUsage ? { ...chunk, usage: null } : chunk)}\n\n`;
}

/** How each /slow-stream response ended upstream (writableEnded false: the proxy hung up). */
const slowStreamClosed: Array<{ ended: boolean }> = [];

function upstreamHandler(req: IncomingMessage, res: ServerResponse): void {
  if (req.url === "/mirror") {
    // The body comes back as it arrives (50 MB each way, streamed).
    res.writeHead(200, { "content-type": "application/octet-stream" });
    req.pipe(res);
    return;
  }
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    const url = req.url ?? "/";
    if (url.startsWith("/echo")) {
      // Framing upstream (content-length or chunked) depends on whether the client's body had
      // all arrived when undici wrote the request, in either engine; the rest must match.
      const headers = req.rawHeaders.filter(
        (_, i, all) => !/^(content-length|transfer-encoding)$/i.test(all[i - (i % 2)]!),
      );
      const text = JSON.stringify({ method: req.method, url, headers, body: body.toString("latin1") });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    } else if (url === "/chunked") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("one ");
      res.write("two ");
      res.end("three");
    } else if (url === "/empty") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end();
    } else if (url === "/204") {
      res.writeHead(204, { "x-thing": "a" });
      res.end();
    } else if (url === "/304") {
      res.writeHead(304, { etag: '"x"' });
      res.end();
    } else if (url === "/hints") {
      res.writeEarlyHints({ link: "</a.css>; rel=preload" });
      res.writeHead(200, { "content-type": "text/plain", "content-length": "2" });
      res.end("ok");
    } else if (url === "/gzip") {
      const zipped = gzipSync(CHAT_COMPLETION);
      res.writeHead(200, {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "content-length": zipped.length,
      });
      res.end(zipped);
    } else if (url === "/close") {
      res.writeHead(200, { "content-type": "text/plain", "content-length": "5", connection: "close" });
      res.end("bye!!");
    } else if (url === "/reset-mid-body") {
      res.writeHead(200, { "content-type": "text/plain", "content-length": "100" });
      res.write("partial");
      setTimeout(() => res.socket?.destroy(), 30);
    } else if (url === "/reset-mid-chunked") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("partial");
      setTimeout(() => res.socket?.destroy(), 30);
    } else if (url === "/slow-stream") {
      res.writeHead(200, { "content-type": "text/event-stream" });
      let i = 0;
      const timer = setInterval(() => {
        if (i++ === 200) {
          clearInterval(timer);
          res.end();
        } else res.write(sseChunk(`t${i} `));
      }, 10);
      res.on("close", () => {
        clearInterval(timer);
        slowStreamClosed.push({ ended: res.writableEnded });
      });
    } else if (url === "/status-text") {
      res.writeHead(299, "Quite Fine", { "content-length": "0" });
      res.end();
    } else if (url === "/v1/chat/completions") {
      const json = JSON.parse(body.toString("utf8") || "{}") as { stream?: boolean };
      if (json.stream) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(sseChunk("Hel"));
        setTimeout(() => {
          res.write(sseChunk("lo", true));
          res.write(
            `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", model: "gpt-4o-mini", choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } })}\n\n`,
          );
          res.end("data: [DONE]\n\n");
        }, 20);
      } else {
        res.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(CHAT_COMPLETION),
        });
        res.end(CHAT_COMPLETION);
      }
    } else {
      res.writeHead(404, { "content-type": "text/plain", "content-length": "9" });
      res.end("not found");
    }
  });
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function normalize(text: string): string {
  return text
    .replace(/^Date: .*$/gim, "Date: <date>")
    .replace(/req_[0-9A-Z]{26}/g, "req_<id>")
    .replace(/"host","127\.0\.0\.1:\d+"/g, '"host","<host>"');
}

describe("lean engine", () => {
  let upstream: Server;
  let upstreamUrl: string;
  const proxies: Record<ProxyEngine, { proxy: RunningProxy; sink: RecordingSink }> = {} as never;

  beforeAll(async () => {
    upstream = createServer(upstreamHandler);
    upstreamUrl = await listen(upstream);
    for (const engine of ["node", "lean"] as const) {
      const sink = new RecordingSink();
      const proxy = await startProxy({
        port: 0,
        upstreams: { openai: upstreamUrl },
        sink,
        orgId: "org_test",
        app: "checkout",
        logger: createLogger({ level: "silent", name: "sidecar" }),
        requestTimeoutMs: 5_000,
        engine,
      });
      proxies[engine] = { proxy, sink };
    }
  });

  afterAll(async () => {
    await proxies.node?.proxy.close();
    await proxies.lean?.proxy.close();
    await new Promise((resolve) => upstream.close(resolve));
  });

  const H = "Host: x\r\n";
  const cases: Array<[string, Array<string | Buffer>]> = [
    [
      "a JSON completion, then close",
      [
        `POST /v1/chat/completions HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      ],
    ],
    ["chunked upstream body", [`GET /chunked HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["empty chunked body", [`GET /empty HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["HEAD", [`HEAD /echo HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["HEAD of a chunked response", [`HEAD /chunked HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["204", [`GET /204 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["304", [`GET /304 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["103 early hints are not forwarded", [`GET /hints HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["gzip passes compressed", [`GET /gzip HTTP/1.1\r\n${H}Accept-Encoding: gzip\r\nConnection: close\r\n\r\n`]],
    ["the upstream closes its connection", [`GET /close HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["the upstream resets mid-body (content-length)", [`GET /reset-mid-body HTTP/1.1\r\n${H}\r\n`]],
    ["the upstream resets mid-body (chunked)", [`GET /reset-mid-chunked HTTP/1.1\r\n${H}\r\n`]],
    ["a custom status text", [`GET /status-text HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["404", [`GET /nothing HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    [
      "headers forwarded, hop-by-hop ones dropped",
      [
        `GET /echo?q=1 HTTP/1.1\r\n${H}X-One: 1\r\nx-two:   spaced  \r\nKeep-Alive: timeout=5\r\nConnection: close, x-one\r\n\r\n`,
      ],
    ],
    [
      "a chunked request body, in pieces",
      [
        `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhel`,
        "lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
      ],
    ],
    [
      "a content-length body split across writes",
      [`POST /echo HTTP/1.1\r\n${H}Content-Length: 11\r\nConnection: close\r\n\r\nhello`, " world"],
    ],
    [
      "three pipelined requests in one write",
      [
        `GET /echo/1 HTTP/1.1\r\n${H}\r\nPOST /echo/2 HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabcGET /echo/3 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
      ],
    ],
    [
      "keep-alive, then HTTP/1.0 on the same connection (handed to node:http)",
      [`GET /echo/1 HTTP/1.1\r\n${H}\r\n`, `GET /echo/2 HTTP/1.0\r\n${H}\r\n`],
    ],
    [
      "pipelined: a lean request, then Expect: 100-continue (handed over at the boundary)",
      [
        `GET /echo/1 HTTP/1.1\r\n${H}\r\nPOST /echo/2 HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`,
      ],
    ],
    ["Upgrade is node's", [`GET /echo HTTP/1.1\r\n${H}Connection: upgrade, close\r\nUpgrade: websocket\r\n\r\n`]],
    ["a missing Host is node's (400)", [`GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n`]],
    ["an absolute-form target is node's", [`GET http://x/echo HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    ["a bad header line is node's (400)", [`GET /echo HTTP/1.1\r\n${H}Bad Header: x\r\n\r\n`]],
    [
      "content-length and chunked together are node's",
      [`POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ],
    ["a bare LF in a header value is node's", [`GET /echo HTTP/1.1\r\n${H}X-A: a\nb\r\nConnection: close\r\n\r\n`]],
    ["a bare CR in a header value is node's", [`GET /echo HTTP/1.1\r\n${H}X-A: a\rb\r\nConnection: close\r\n\r\n`]],
    ["a DEL in the last header value is node's", [`GET /echo HTTP/1.1\r\n${H}Connection: close\r\nX-A: a\x7f\r\n\r\n`]],
    ["a CR before the head's end is node's", [`GET /echo HTTP/1.1\r\n${H}Connection: close\r\nX-A: a\r\r\n\r\n`]],
    ["a header line without a colon is node's", [`GET /echo HTTP/1.1\r\n${H}Connection: close\r\nnocolon\r\n\r\n`]],
    ["a request line without a version is node's", [`GET /echo\r\n${H}Connection: close\r\n\r\n`]],
    ["HTTP/1.10 is node's", [`GET /echo HTTP/1.10\r\n${H}Connection: close\r\n\r\n`]],
    ["mixed-case framing headers", [`POST /echo HTTP/1.1\r\n${H}cOnTeNt-LeNgTh: 3\r\nCONNECTION: close\r\n\r\nabc`]],
    [
      "a gzip transfer-encoding is node's",
      [`POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`],
    ],
    ["an oversized head is node's (431)", [`GET /echo HTTP/1.1\r\n${H}X-Big: ${"a".repeat(20_000)}\r\n\r\n`]],
    ["the sidecar's own path is node's", [`GET /aigw/v1/requests/nope HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]],
    [
      "a webhook-url directive",
      [`GET /echo HTTP/1.1\r\n${H}X-Aigw-Webhook-Url: not a url\r\nConnection: close\r\n\r\n`],
    ],
  ];

  it.each(cases)("%s: the same bytes as node:http", async (_name, pieces) => {
    const viaNode = normalize(await exchange(proxies.node.proxy.port, pieces));
    const viaLean = normalize(await exchange(proxies.lean.proxy.port, pieces));
    expect(viaNode.length).toBeGreaterThan(0);
    expect(viaLean).toBe(viaNode);
  });

  it("a 50 MB body goes up and comes back intact, streamed both ways", { timeout: 120_000 }, async () => {
    const big = Buffer.alloc(50 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
    const res = await fetch(`${proxies.lean.proxy.url}/mirror`, { method: "POST", body: big });
    expect(res.status).toBe(200);
    const back = Buffer.from(await res.arrayBuffer());
    expect(back.length).toBe(big.length);
    expect(createHash("sha256").update(back).digest("hex")).toBe(createHash("sha256").update(big).digest("hex"));
  });

  it("streams through the real openai client, usage chunk hidden and reported", async () => {
    const client = new OpenAI({ baseURL: `${proxies.lean.proxy.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    });
    let text = "";
    let sawUsage = false;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) sawUsage = true;
    }
    expect(text).toBe("Hello");
    expect(sawUsage).toBe(false);
    const sink = proxies.lean.sink;
    const completion = await waitFor("completion event", () =>
      sink.bodies().find((b) => b.event === "completion" && b.stream === true),
    );
    expect(completion).toMatchObject({ tokens_used: 5, stream: true, model: "gpt-4o-mini" });
  });

  it("a client gone mid-stream aborts the upstream request", async () => {
    const before = slowStreamClosed.length;
    const socket = connect(proxies.lean.proxy.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    const body = JSON.stringify({ model: "gpt-4o-mini", messages: [], stream: true });
    socket.write(
      `POST /slow-stream HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    await new Promise((r) => socket.once("data", r));
    socket.destroy();
    const closed = await waitFor("the upstream stream closed", () => slowStreamClosed[before]);
    expect(closed.ended).toBe(false);
  });

  it("a client gone mid-request aborts nothing it should not, and the server keeps serving", async () => {
    const socket = connect(proxies.lean.proxy.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write(`POST /echo HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\npartial`);
    await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    const res = await fetch(`${proxies.lean.proxy.url}/echo/after`);
    expect(res.status).toBe(200);
  });
});

describe("lean upstream client over TLS", () => {
  it("sends SNI, offers ALPN http/1.1, reuses its connection, and reads a chunked body", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aigw-lean-tls-"));
    const certificate = selfSignedCertificate(dir, "localhost");
    rmSync(dir, { recursive: true, force: true });
    if (!certificate) return; // no openssl here
    const { key, cert } = certificate;
    const seen: Array<{ servername: unknown; alpn: unknown }> = [];
    const connections = new Set<unknown>();
    const server = createHttpsServer({ key, cert, ALPNProtocols: ["http/1.1"] }, (req, res) => {
      const socket = req.socket as TLSSocket;
      connections.add(socket);
      seen.push({ servername: (socket as unknown as { servername?: string }).servername, alpn: socket.alpnProtocol });
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("se");
      res.end("cure");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const pool = new LeanPool(`https://localhost:${port}`, {
      headersTimeout: 5000,
      bodyTimeout: 5000,
      keepAliveTimeout: 5000,
      keepAliveMaxTimeout: 5000,
      connectTimeout: 5000,
      tls: { ca: cert },
    });
    const get = async () => {
      const { status, body } = await leanGet(pool, "/x");
      return { status, body };
    };
    try {
      expect(await get()).toEqual({ status: 200, body: "secure" });
      expect(await get()).toEqual({ status: 200, body: "secure" });
      expect(seen).toEqual([
        { servername: "localhost", alpn: "http/1.1" },
        { servername: "localhost", alpn: "http/1.1" },
      ]);
      expect(connections.size).toBe(1);
    } finally {
      pool.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
