import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createLeanServer,
  type LeanRequest,
  type LeanResponse,
  type LeanServer,
} from "../../sidecar/proxy/lean-server.js";
import { exchange } from "./harness.js";

// The lean server parses request heads itself and hands its handler what node's server would:
// the same method, target and raw headers (names as sent, values without the spaces and tabs
// around them), the same body. Each head goes to a lean server and to a plain node:http server;
// the two handlers must see the same request, and the lean one must have served it itself.

interface Seen {
  by: "lean" | "node";
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
}

function recorder(by: Seen["by"], seen: Seen[]) {
  return (req: IncomingMessage | LeanRequest, res: ServerResponse | LeanResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({
        by,
        method: req.method ?? "",
        url: req.url ?? "",
        rawHeaders: [...req.rawHeaders],
        body: Buffer.concat(chunks).toString("latin1"),
      });
      if ("setHeader" in res) {
        res.writeHead(200, { "content-length": "2" });
        res.end("ok");
      } else {
        res.writeHead(200, ["content-length", "2"]);
        res.end(Buffer.from("ok"));
      }
    });
  };
}

/** Sends a head (latin-1) on a fresh connection and returns what came back once the server closed it. */
const send = (port: number, head: string): Promise<string> => exchange(port, [Buffer.from(head, "latin1")]);

const H = "Host: example.test\r\nConnection: close\r\n";

const cases: Array<[string, string]> = [
  ["spaces and tabs around values", `GET /a HTTP/1.1\r\n${H}X-Tabbed:\t a \t b \t\r\nX-Spaced:    c    \r\n\r\n`],
  ["an empty value, and one of only whitespace", `GET /b HTTP/1.1\r\n${H}X-Empty:\r\nX-Blank: \t \r\n\r\n`],
  [
    "names as sent, repeated headers kept apart",
    `GET /c HTTP/1.1\r\n${H}x-MiXed: 1\r\nX-Twice: a\r\nx-twice: b\r\n\r\n`,
  ],
  ["a body with a length after spaces", `POST /d HTTP/1.1\r\n${H}Content-Length: \t 3\r\n\r\nabc`],
  [
    "a chunked body, the value followed by a space",
    `POST /e HTTP/1.1\r\n${H}Transfer-Encoding: chunked \r\n\r\n3\r\nxyz\r\n0\r\n\r\n`,
  ],
  ["a query and an encoded path", `GET /f/%20x?q=1&r=%2F HTTP/1.1\r\n${H}\r\n`],
  ["latin-1 bytes in a value", `GET /g HTTP/1.1\r\n${H}X-Latin: caf\xe9 \xa0\r\n\r\n`],
];

describe("lean server: request heads as node's server reads them", () => {
  const seen: Seen[] = [];
  let lean: LeanServer;
  let leanPort = 0;
  let node: Server;
  let nodePort = 0;
  const fallback = createHttpServer(recorder("node", seen));

  beforeAll(async () => {
    lean = createLeanServer(recorder("lean", seen), fallback, {
      keepAliveTimeoutMs: 5_000,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 0,
      checkIntervalMs: 1_000,
    });
    node = createHttpServer(recorder("node", seen));
    leanPort = await new Promise((resolve) =>
      lean.server.listen(0, "127.0.0.1", () => resolve((lean.server.address() as AddressInfo).port)),
    );
    nodePort = await new Promise((resolve) =>
      node.listen(0, "127.0.0.1", () => resolve((node.address() as AddressInfo).port)),
    );
  });

  afterAll(async () => {
    lean.closeAllConnections();
    node.closeAllConnections();
    await new Promise((resolve) => lean.server.close(resolve));
    await new Promise((resolve) => node.close(resolve));
  });

  it("a length followed by spaces goes to node's server, which decides (Node 20 refuses it, Node 24 serves it)", async () => {
    seen.length = 0;
    const head = `POST /d HTTP/1.1\r\n${H}Content-Length: 3 \t\r\n\r\nabc`;
    const viaLean = await send(leanPort, head);
    const viaNode = await send(nodePort, head);
    const undated = (text: string) => text.replace(/^Date: .*$/m, "Date: <date>");
    expect(viaNode).toMatch(/^HTTP\/1\.1 (400 Bad Request|200 OK)\r\n/);
    expect(undated(viaLean)).toBe(undated(viaNode));
    // Not served lean: node refused it on both sockets, or node's server (the lean server's
    // fallback, then the plain one) served it.
    expect(seen.map((s) => s.by)).toEqual(viaNode.startsWith("HTTP/1.1 200") ? ["node", "node"] : []);
  });

  it.each(cases)("%s", async (_name, head) => {
    seen.length = 0;
    const viaLean = await send(leanPort, head);
    const viaNode = await send(nodePort, head);
    expect(viaLean).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(viaNode).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(seen).toHaveLength(2);
    const [first, second] = seen as [Seen, Seen];
    // The lean server served it itself (not handed to node:http), and saw what node saw.
    expect(first.by).toBe("lean");
    expect(second.by).toBe("node");
    expect({ ...first, by: "" }).toEqual({ ...second, by: "" });
  });
});
