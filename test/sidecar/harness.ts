import { createServer, type RequestListener } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { PassThrough } from "node:stream";
import OpenAI from "openai";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type { ProxySettings } from "../../sidecar/proxy/settings.js";
import { createLogger } from "../../common/logger.js";
import { type WebhookBody, webhookBody } from "../../common/webhook-body.js";
import { type MockProvider, startMockProvider } from "../../examples/mock-provider.js";
import type { EventSink } from "../../sidecar/proxy/event-sink.js";
import type { LeanPool } from "../../sidecar/proxy/lean-upstream.js";
import { type ProxyEngine, type RunningProxy, startProxy } from "../../sidecar/proxy/server.js";

/** The real EventSink contract, kept in an array. */
export class RecordingSink implements EventSink {
  readonly events: Event[] = [];
  publish(event: Event): void {
    this.events.push(event);
  }
  bodies(): WebhookBody[] {
    return this.events.map(webhookBody);
  }
}

export interface Harness {
  mock: MockProvider;
  proxy: RunningProxy;
  sink: RecordingSink;
  /** Everything the proxy logged, as text. */
  logs: () => string;
  /** The real openai client, pointed at the proxy. */
  client: OpenAI;
  /** The real openai client, pointed at the mock directly. */
  direct: OpenAI;
  close(): Promise<void>;
}

export interface HarnessOptions {
  sink?: EventSink;
  upstreams?: (mock: MockProvider) => Record<string, string>;
  requestTimeoutMs?: number;
  settings?: () => ProxySettings;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const mock = await startMockProvider();
  const sink = new RecordingSink();
  const logStream = new PassThrough();
  let logText = "";
  logStream.on("data", (chunk: Buffer) => {
    logText += chunk.toString("utf8");
  });
  const proxy = await startProxy({
    port: 0,
    upstreams: options.upstreams ? options.upstreams(mock) : { openai: mock.url },
    sink: options.sink ?? sink,
    orgId: "org_test",
    app: "checkout",
    logger: createLogger({ level: "debug", destination: logStream, name: "sidecar" }),
    ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    ...(options.settings ? { settings: options.settings } : {}),
  });
  const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
  const direct = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
  return {
    mock,
    proxy,
    sink,
    logs: () => logText,
    client,
    direct,
    async close() {
      await proxy.close();
      await mock.close();
    },
  };
}

/** Polls until `check` returns a value (not undefined), or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Waits for the n-th event (1-based) the sink received and returns all bodies. */
export function waitForEvents(sink: RecordingSink, count: number): Promise<WebhookBody[]> {
  return waitFor(`${count} event(s), have ${sink.events.length}`, () =>
    sink.events.length >= count ? sink.bodies() : undefined,
  );
}

/** A chat completion as a provider answers it (one choice, usage 5 + 1). */
export const CHAT_COMPLETION = JSON.stringify({
  id: "chatcmpl-1",
  object: "chat.completion",
  model: "gpt-4o-mini",
  choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
});

/** A GET through the lean engine's upstream pool: its status, body and how long it took. */
export function leanGet(pool: LeanPool, path: string): Promise<{ status: number; body: string; ms: number }> {
  const startedAt = Date.now();
  return new Promise((resolve, reject) => {
    let status = 0;
    let body = "";
    pool.dispatch(
      { path, method: "GET", headers: [], body: null },
      {
        onConnect() {},
        onHeaders(code) {
          status = code;
          return true;
        },
        onData(chunk) {
          body += chunk.toString();
          return true;
        },
        onComplete() {
          resolve({ status, body, ms: Date.now() - startedAt });
        },
        onError: reject,
      },
    );
  });
}

/**
 * A scripted provider (a real HTTP server on 127.0.0.1:0 answering with `provider`) and the
 * proxy in front of it, its events in `sink`; close() stops both.
 */
export async function proxyBefore(
  provider: RequestListener,
  options: { sink: EventSink; app: string; engine?: ProxyEngine },
): Promise<{ proxy: RunningProxy; close(): Promise<void> }> {
  const upstream = createServer(provider);
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const proxy = await startProxy({
    port: 0,
    upstreams: { openai: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` },
    sink: options.sink,
    orgId: "org_test",
    app: options.app,
    logger: createLogger({ level: "silent" }),
    ...(options.engine ? { engine: options.engine } : {}),
  });
  return {
    proxy,
    async close() {
      await proxy.close();
      upstream.closeAllConnections();
      await new Promise<void>((resolve) => upstream.close(() => resolve()));
    },
  };
}

/** Sends raw bytes (in pieces, when given several) and returns everything read until the server closes. */
export function exchange(port: number, pieces: readonly (string | Buffer)[], gapMs = 5): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within 10 s; got ${JSON.stringify(Buffer.concat(got).toString("latin1"))}`));
    }, 10_000);
    socket.on("data", (c: Buffer) => got.push(c));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got).toString("latin1"));
    });
    socket.on("connect", async () => {
      for (const piece of pieces) {
        socket.write(piece);
        if (pieces.length > 1) await new Promise((r) => setTimeout(r, gapMs));
      }
    });
  });
}
