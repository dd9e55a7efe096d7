import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A recorded request to a test receiver. */
export interface ReceivedRequest {
  headers: IncomingMessage["headers"];
  body: string;
  at: number;
}

export interface TestServer {
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Highest number of requests handled at once. */
  maxInFlight: number;
  inFlight: number;
  close(): Promise<void>;
}

/**
 * A real HTTP server on 127.0.0.1:0. The handler answers each request (after its body was
 * read); a handler that never ends the response models a hanging receiver.
 */
export async function startTestServer(
  handler: (req: ReceivedRequest, res: ServerResponse, index: number) => unknown,
): Promise<TestServer> {
  const state = { requests: [] as ReceivedRequest[], maxInFlight: 0, inFlight: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const received = { headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), at: Date.now() };
      state.requests.push(received);
      state.inFlight++;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      let counted = true;
      const done = () => {
        if (counted) state.inFlight--;
        counted = false;
      };
      res.on("finish", done);
      res.on("close", done);
      Promise.resolve(handler(received, res, state.requests.length - 1)).catch(() => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    get requests() {
      return state.requests;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    get inFlight() {
      return state.inFlight;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
