import { createHash } from "node:crypto";
import { type IncomingMessage, request, type ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningProxy } from "../../sidecar/proxy/server.js";
import { proxyBefore, RecordingSink } from "./harness.js";

// Garbage and accidents from a provider ("Faults and bad input"): the app gets
// exactly what the provider sent, an event says what happened, the sidecar keeps serving and
// holds a bounded amount of memory. The provider here is scripted per request by `x-fault`.

const TEN_MB = 10 * 1024 * 1024;
const FIFTY_MB = 50 * 1024 * 1024;

function sse(objects: unknown[]): string {
  return objects.map((o) => `data: ${JSON.stringify(o)}\n\n`).join("");
}

const USAGE_CHUNK = {
  id: "c",
  model: "gpt-4o",
  choices: [],
  usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
};
const CONTENT = (text: string) => ({ id: "c", model: "gpt-4o", choices: [{ index: 0, delta: { content: text } }] });

/** What the scripted provider answers to each fault; bodies kept to compare with what the app got. */
const sent = new Map<string, Buffer>();

function provider(req: IncomingMessage, res: ServerResponse): void {
  const fault = String(req.headers["x-fault"] ?? "");
  const hash = createHash("sha256");
  let size = 0;
  req.on("data", (chunk: Buffer) => {
    size += chunk.length;
    hash.update(chunk);
  });
  req.on("end", () => {
    const answer = (status: number, headers: Record<string, string>, body: Buffer) => {
      sent.set(fault, body);
      res.writeHead(status, headers).end(body);
    };
    switch (fault) {
      case "invalid-json":
        answer(
          200,
          { "content-type": "application/json" },
          Buffer.from('{"id":"x","model":"gpt-4o","usage":{"prompt_'),
        );
        return;
      case "truncated-sse":
        // The stream ends cleanly (last chunk of the chunked body) in the middle of an event.
        answer(
          200,
          { "content-type": "text/event-stream" },
          Buffer.from(`${sse([CONTENT("a"), CONTENT("b")])}data: {"id":"c","choices":[{"del`),
        );
        return;
      case "huge-sse-line": {
        const body = Buffer.from(
          `${sse([CONTENT("start")])}data: ${JSON.stringify(CONTENT("x".repeat(TEN_MB)))}\n\n${sse([USAGE_CHUNK])}data: [DONE]\n\n`,
        );
        sent.set(fault, body);
        res.writeHead(200, { "content-type": "text/event-stream" });
        // In 64 KiB pieces, as a network would deliver it.
        for (let at = 0; at < body.length; at += 65536) res.write(body.subarray(at, at + 65536));
        res.end();
        return;
      }
      case "bad-gzip":
        answer(200, { "content-type": "application/json", "content-encoding": "gzip" }, Buffer.from("not gzip at all"));
        return;
      case "big-request":
        answer(
          200,
          { "content-type": "application/json" },
          Buffer.from(JSON.stringify({ size, sha256: hash.digest("hex"), model: "gpt-4o", usage: USAGE_CHUNK.usage })),
        );
        return;
      case "reset-mid-json":
        res.writeHead(200, { "content-type": "application/json", "content-length": "1000" });
        res.write('{"id":"x","model":"gpt-4o","choices":[');
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      default:
        answer(404, { "content-type": "application/json" }, Buffer.from('{"error":{"message":"no such fault"}}'));
    }
  });
}

interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  error?: string;
}

/** A raw HTTP call: the body exactly as received, and how the response ended. */
function call(
  base: string,
  fault: string,
  body: Buffer | string,
  headers: Record<string, string> = {},
): Promise<Received> {
  return new Promise((resolve) => {
    const req = request(
      `${base}/v1/chat/completions`,
      { method: "POST", headers: { "content-type": "application/json", "x-fault": fault, ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        const done = (error?: string) =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            ...(error ? { error } : {}),
          });
        res.on("end", () => done());
        res.on("error", (err) => done(err.message));
        res.on("aborted", () => done("aborted"));
      },
    );
    req.on("error", (err) => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), error: err.message }));
    req.end(body);
  });
}

describe("provider faults through the sidecar", () => {
  let running: Awaited<ReturnType<typeof proxyBefore>> | undefined;
  let proxy: RunningProxy;
  const sink = new RecordingSink();

  beforeAll(async () => {
    running = await proxyBefore(provider, { sink, app: "faults" });
    proxy = running.proxy;
  });

  afterAll(async () => {
    await running?.close();
  });

  async function eventsOf(requestId: string, count: number) {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const mine = sink.bodies().filter((b) => b.request_id === requestId);
      if (mine.length >= count) return mine;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} event(s) of ${requestId}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it("invalid JSON: the app gets the bytes as sent; a completion says the call happened, with no usage", async () => {
    const got = await call(proxy.url, "invalid-json", JSON.stringify({ model: "gpt-4o", messages: [] }));
    expect(got.status).toBe(200);
    expect(got.body.equals(sent.get("invalid-json")!)).toBe(true);
    const [event] = await eventsOf(String(got.headers["x-aigw-request-id"]), 1);
    expect(event).toMatchObject({
      event: "completion",
      model: "gpt-4o",
      status_code: 200,
      tokens_used: 0,
      usage_known: false,
    });
  });

  it("truncated SSE: the app gets every byte, the unfinished event included", async () => {
    const got = await call(proxy.url, "truncated-sse", JSON.stringify({ model: "gpt-4o", stream: true, messages: [] }));
    expect(got.body.equals(sent.get("truncated-sse")!)).toBe(true);
    const [event] = await eventsOf(String(got.headers["x-aigw-request-id"]), 1);
    expect(event).toMatchObject({ event: "completion", stream: true, model: "gpt-4o" });
  });

  it("a 10 MB SSE line: passed through untouched and unstalled, and the usage after it still read", async () => {
    const got = await call(
      proxy.url,
      "huge-sse-line",
      JSON.stringify({ model: "gpt-4o", stream: true, stream_options: { include_usage: true }, messages: [] }),
    );
    expect(got.body.length).toBe(sent.get("huge-sse-line")!.length);
    expect(got.body.equals(sent.get("huge-sse-line")!)).toBe(true);
    const [event] = await eventsOf(String(got.headers["x-aigw-request-id"]), 1);
    expect(event).toMatchObject({ event: "completion", prompt_tokens: 5, completion_tokens: 2, stream: true });
  });

  it("a 10 MB SSE line in a stream whose usage chunk the sidecar hides: every other byte reaches the app", async () => {
    const got = await call(proxy.url, "huge-sse-line", JSON.stringify({ model: "gpt-4o", stream: true, messages: [] }));
    const text = got.body.toString("latin1");
    // The usage chunk the sidecar asked for is removed; the 10 MB event is not.
    expect(text).not.toContain('"usage":{');
    expect(got.body.length).toBeGreaterThan(TEN_MB);
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
  });

  it("a body that says gzip and is not: the app gets it as sent, the sidecar keeps serving", async () => {
    const got = await call(proxy.url, "bad-gzip", JSON.stringify({ model: "gpt-4o", messages: [] }));
    expect(got.headers["content-encoding"]).toBe("gzip");
    expect(got.body.equals(sent.get("bad-gzip")!)).toBe(true);
    const [event] = await eventsOf(String(got.headers["x-aigw-request-id"]), 1);
    expect(event).toMatchObject({ event: "completion", status_code: 200, tokens_used: 0, usage_known: false });
  });

  it("a 50 MB request body reaches the provider whole, and the call is reported", async () => {
    const prefix = Buffer.from('{"model":"gpt-4o","messages":[{"role":"user","content":"');
    const suffix = Buffer.from('"}]}');
    const body = Buffer.concat([prefix, Buffer.alloc(FIFTY_MB - prefix.length - suffix.length, 0x61), suffix]);
    const got = await call(proxy.url, "big-request", body);
    expect(got.status).toBe(200);
    const answer = JSON.parse(got.body.toString("utf8")) as { size: number; sha256: string };
    expect(answer.size).toBe(FIFTY_MB);
    expect(answer.sha256).toBe(createHash("sha256").update(body).digest("hex"));
    const [event] = await eventsOf(String(got.headers["x-aigw-request-id"]), 1);
    expect(event).toMatchObject({ event: "completion", prompt_tokens: 5 });
  });

  it("a provider that resets mid-body: the app sees a broken response, not a short whole one, and an event says so", async () => {
    const got = await call(proxy.url, "reset-mid-json", JSON.stringify({ model: "gpt-4o", messages: [] }));
    expect(got.error ?? "incomplete").toBeTruthy();
    expect(got.body.length).toBeLessThan(1000);
    const [event] = await eventsOf(String(got.headers["x-aigw-request-id"]), 1);
    expect(event).toMatchObject({ event: "completion", finish_reason: "upstream_disconnected" });
  });

  it("after all that, the sidecar still serves", async () => {
    const got = await call(proxy.url, "invalid-json", JSON.stringify({ model: "gpt-4o", messages: [] }));
    expect(got.status).toBe(200);
  });
});
