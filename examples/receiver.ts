/**
 * A webhook receiver that verifies aigw's deliveries the way your app would, with the
 * package's verification helper (in your app: `import { verifyWebhook } from "aigw/verify"`;
 * the `standardwebhooks` and `svix` packages verify the same requests). A bad signature or a
 * timestamp outside the tolerance gets 401 with the reason; a webhook-id seen before is
 * acknowledged and skipped (deliveries are at least once); each new event prints as one line.
 *
 *   npx tsx examples/receiver.ts --port 9000 --secret whsec_...   (or WEBHOOK_SECRET=whsec_...)
 *   During a key rotation give both: --secret whsec_NEW --secret whsec_OLD
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { LRUCache } from "lru-cache";
import { parseSecret } from "../common/signature.js";
import { DEFAULT_TIMESTAMP_TOLERANCE_MS, verifyWebhook, WebhookVerificationError } from "../common/verify.js";

export interface ReceivedEvent {
  /** webhook-id: the event id, the same on every attempt. */
  webhookId: string;
  /** webhook-timestamp of the attempt that got through. */
  timestamp: number;
  /** The verified JSON body. */
  body: Record<string, unknown>;
  /** The exact bytes that were signed, as text. */
  raw: string;
  headers: IncomingHttpHeaders;
}

export interface ReceiverOptions {
  /** 0 picks a free port. Default 9000. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The endpoint's secret: "whsec_" + base64, or any other text used as raw bytes; several during a key rotation. */
  secret: string | readonly string[];
  /** How old (or far ahead) webhook-timestamp may be; default 300000 (security.timestamp_tolerance_ms's default). */
  toleranceMs?: number;
  /** Called once per new (not duplicate) verified event. */
  onEvent?: (event: ReceivedEvent) => void;
  /** Where the one-line summaries go; default none (the CLI prints to stdout). */
  print?: (line: string) => void;
}

export interface Receiver {
  /** http://host:port/ */
  readonly url: string;
  readonly port: number;
  /** Verified new events / verified repeats of a seen webhook-id / rejected requests. */
  readonly counts: { received: number; duplicates: number; rejected: number };
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;

export async function startReceiver(options: ReceiverOptions): Promise<Receiver> {
  const secrets = (typeof options.secret === "string" ? [options.secret] : [...options.secret]).filter((s) => s !== "");
  if (secrets.length === 0) throw new Error("receiver: a secret is required (--secret or WEBHOOK_SECRET)");
  // A secret that cannot be a key is the operator's mistake: say so now, not on every request.
  for (const secret of secrets) parseSecret(secret);
  const toleranceMs = options.toleranceMs ?? DEFAULT_TIMESTAMP_TOLERANCE_MS;
  const seen = new LRUCache<string, true>({ max: 100_000 });
  const counts = { received: 0, duplicates: 0, rejected: 0 };
  const print = options.print ?? (() => {});

  const reject = (res: ServerResponse, status: number, message: string) => {
    counts.rejected++;
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ error: message }));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== "POST") return reject(res, 405, "POST webhooks here");
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) return reject(res, 413, `body larger than ${MAX_BODY_BYTES} bytes`);
      chunks.push(chunk);
    }
    const raw = Buffer.concat(chunks);
    const webhookId = String(req.headers["webhook-id"] ?? "");
    let body: Record<string, unknown>;
    try {
      body = verifyWebhook(raw, req.headers, { secret: secrets, toleranceMs });
    } catch (err) {
      if (!(err instanceof WebhookVerificationError)) throw err;
      print(`x rejected ${webhookId || "(no webhook-id)"}: ${err.code}: ${err.message}`);
      return reject(res, 401, `signature verification failed: ${err.code}: ${err.message}`);
    }
    if (seen.has(webhookId)) {
      counts.duplicates++;
      res.writeHead(200).end();
      return;
    }
    seen.set(webhookId, true);
    counts.received++;
    const event = body;
    print(`${String(event.event ?? "?")} ${webhookId} ${JSON.stringify(event)}`);
    res.writeHead(200).end();
    options.onEvent?.({
      webhookId,
      timestamp: Number(req.headers["webhook-timestamp"]),
      body: event,
      raw: raw.toString("utf8"),
      headers: req.headers,
    });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) reject(res, 500, err instanceof Error ? err.message : String(err));
      else res.destroy();
    });
  });
  // Receivers are kept alive by aigw's workers; idle sockets must not hold close() open.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 9000, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/`,
    port: address.port,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: process.env.PORT ?? "9000" },
      host: { type: "string", default: "127.0.0.1" },
      secret: { type: "string", multiple: true, default: [process.env.WEBHOOK_SECRET ?? ""] },
      "tolerance-ms": { type: "string", default: String(DEFAULT_TIMESTAMP_TOLERANCE_MS) },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: "${values.port}" is not a port`);
  const toleranceMs = Number(values["tolerance-ms"]);
  if (!Number.isInteger(toleranceMs) || toleranceMs < 1000) {
    throw new Error(`--tolerance-ms: "${values["tolerance-ms"]}" is not a whole number of milliseconds, 1000 or more`);
  }
  const receiver = await startReceiver({
    port,
    host: values.host,
    secret: values.secret,
    toleranceMs,
    print: (line) => process.stdout.write(`${line}\n`),
  });
  process.stdout.write(`receiver listening on ${receiver.url} (verifying with aigw/verify)\n`);
  const shutdown = () => void receiver.close().then(() => process.exit(0));
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${message.startsWith("receiver:") ? message : `receiver: ${message}`}\n`);
    process.exit(1);
  });
}
