import type { Server as HttpServer } from "node:http";
import type { Http2Server, Http2Session } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { HostPort } from "../../common/host-port.js";

export { type HostPort, parseHostPort } from "../../common/host-port.js";

export function listen(server: HttpServer | Http2Server, at: HostPort): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once("error", onError);
    server.listen(at.port, at.host, () => {
      server.off("error", onError);
      const a = server.address() as AddressInfo;
      resolve({ host: at.host, port: a.port });
    });
  });
}

export function urlOf(at: HostPort): string {
  const host = at.host.includes(":") ? `[${at.host}]` : at.host;
  return `http://${host}:${at.port}`;
}

/**
 * Closes an h2c server: close() alone waits for every client session to end, and
 * sidecars keep theirs open, so sessions are tracked and closed, then their sockets
 * destroyed after a grace period: a destroyed session whose peer stopped reading a
 * stream can keep its socket open, and close() would wait for it forever.
 */
export function trackSessions(server: Http2Server): () => Promise<void> {
  const sessions = new Set<Http2Session>();
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sessions) s.close();
      const t = setTimeout(() => {
        for (const s of sessions) s.destroy();
        for (const socket of sockets) socket.destroy();
      }, 2000);
      t.unref();
    });
}

export function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    const t = setTimeout(() => server.closeAllConnections(), 2000);
    t.unref();
  });
}
