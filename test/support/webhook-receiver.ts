import http from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";

export interface ReceivedWebhook {
  id: string;
  /** The body exactly as received (the signed bytes). */
  raw: string;
  timestamp: number;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  /** 1-based count of requests this receiver saw for this webhook-id. */
  attempt: number;
  status: number;
  /** Date.now() when the request's body had arrived. */
  receivedAt: number;
}

/**
 * A receiver for tests that verifies every request with the `standardwebhooks` package
 * (as a user's receiver would) and answers with scripted statuses per webhook-id
 * (`script(attempt, body)`, default 200). Requests that fail verification get 401 and
 * are recorded in `rejected`.
 */
export async function startTestReceiver(options: {
  secret: string;
  script?: (
    attempt: number,
    body: Record<string, unknown>,
  ) => number | { status: number; headers?: Record<string, string> };
}) {
  const verifier = new Webhook(options.secret);
  const received: ReceivedWebhook[] = [];
  const rejected: { headers: http.IncomingHttpHeaders; error: string }[] = [];
  const attempts = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body: Record<string, unknown>;
      try {
        body = verifier.verify(raw, {
          "webhook-id": String(req.headers["webhook-id"] ?? ""),
          "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
          "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
        }) as Record<string, unknown>;
      } catch (err) {
        rejected.push({ headers: req.headers, error: String(err) });
        res.writeHead(401).end("bad signature");
        return;
      }
      const id = String(req.headers["webhook-id"]);
      const attempt = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, attempt);
      const answer = options.script?.(attempt, body) ?? 200;
      const { status, headers } = typeof answer === "number" ? { status: answer, headers: {} } : answer;
      received.push({
        id,
        raw,
        timestamp: Number(req.headers["webhook-timestamp"]),
        headers: req.headers,
        body,
        attempt,
        status,
        receivedAt: Date.now(),
      });
      res.writeHead(status, headers).end(status < 300 ? "ok" : "nope");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    rejected,
    /** Webhooks this receiver answered with 2xx. */
    accepted: () => received.filter((r) => r.status >= 200 && r.status < 300),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export type TestReceiver = Awaited<ReturnType<typeof startTestReceiver>>;
