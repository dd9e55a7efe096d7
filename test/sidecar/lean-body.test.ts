import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningProxy } from "../../sidecar/proxy/server.js";
import { CHAT_COMPLETION, proxyBefore, RecordingSink, waitFor, waitForEvents } from "./harness.js";

// The lean server hands a body that came whole with its head to the proxy at once (no stream
// events); a body that comes later is read from the stream. Whichever way the bytes arrive,
// the provider gets the same body, the app the same answer, the next request on the
// connection is served, and the events are the same.

describe("lean server: a body whole with its head, or in pieces", () => {
  let running: Awaited<ReturnType<typeof proxyBefore>>;
  let proxy: RunningProxy;
  const sink = new RecordingSink();
  const bodies: Array<{ url: string; body: string }> = [];

  beforeAll(async () => {
    running = await proxyBefore(
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          const body = Buffer.concat(chunks).toString();
          bodies.push({ url: req.url ?? "", body });
          const answer = req.url === "/v1/chat/completions" ? CHAT_COMPLETION : `echo:${body}`;
          res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(answer) });
          res.end(answer);
        });
      },
      { sink, app: "body", engine: "lean" },
    );
    proxy = running.proxy;
  });

  afterAll(async () => {
    await running.close();
  });

  /** Sends `text` in two writes split at `at` (a tick apart), then collects `answers` whole answers. */
  async function converse(text: string, at: number, answers: number): Promise<string> {
    const socket = connect(proxy.port, "127.0.0.1");
    let got = "";
    socket.on("data", (chunk: Buffer) => {
      got += chunk.toString("latin1");
    });
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.write(text.slice(0, at));
    if (at < text.length) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      socket.write(text.slice(at));
    }
    try {
      return await waitFor(
        `${answers} answers`,
        () => ((got.match(/HTTP\/1\.1 200 OK/g)?.length ?? 0) >= answers && got.endsWith("}") ? got : undefined),
        10_000,
      );
    } finally {
      socket.destroy();
    }
  }

  it("observed and passed-through bodies, split at every point of the head and body, then a pipelined request", async () => {
    const chat = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    const other = JSON.stringify({ input: "x" });
    const request =
      `POST /v1/chat/completions HTTP/1.1\r\nhost: app\r\ncontent-type: application/json\r\ncontent-length: ${chat.length}\r\n\r\n${chat}` +
      `POST /v1/other HTTP/1.1\r\nhost: app\r\ncontent-type: application/json\r\ncontent-length: ${other.length}\r\n\r\n${other}`;
    const firstEnd = request.indexOf("POST /v1/other");
    // Every split of the first request (head, body, the boundary), and a few of the second.
    const splits = [...Array.from({ length: firstEnd + 1 }, (_, i) => i), firstEnd + 10, request.length - 3];
    for (const at of splits) {
      bodies.length = 0;
      const answer = await converse(request, at, 2);
      expect(bodies, `split at ${at}`).toEqual([
        { url: "/v1/chat/completions", body: chat },
        { url: "/v1/other", body: other },
      ]);
      expect(answer, `split at ${at}`).toContain(CHAT_COMPLETION);
      expect(answer, `split at ${at}`).toContain(`echo:${other}`);
    }
    // One completion event per chat request, with the model read from the answer.
    const events = await waitForEvents(sink, splits.length);
    expect(events).toHaveLength(splits.length);
    for (const event of events) {
      expect(event).toMatchObject({ event: "completion", model: "gpt-4o-mini", tokens_used: 6, prompt_tokens: 5 });
    }
  });
});
