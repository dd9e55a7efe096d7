import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { type ProxyEngine, type RunningProxy, startProxy } from "../../sidecar/proxy/server.js";
import { RecordingSink, waitFor } from "./harness.js";

// A stream's first bytes reach the app as soon as the provider sends them, in either engine:
// the first chunk is not held for the next one, and the head is not held for the body. (When
// the head and the first chunk come from the provider together, the proxy writes them in one
// write; this process reads its sockets only between callbacks, so that is seen on the wire,
// not here: README, "Sidecar performance".)

const ENGINES: readonly ProxyEngine[] = ["lean", "node"];

const HEAD = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

function sseChunk(content: string): string {
  const event = `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", model: "gpt-4o-mini", choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
  return `${Buffer.byteLength(event).toString(16)}\r\n${event}\r\n`;
}

/** What the provider does once it has a request: each step waits for the test to say go. */
interface Script {
  /** The first write: the head alone, or the head and the first chunk. */
  first: string;
  /** Resolved by the test when the app has seen what it expects of the first write. */
  next: Promise<void>;
}

/** A provider on raw sockets, so each write is exactly one write. */
class ScriptedProvider {
  readonly server: Server;
  private script: Script | undefined;
  constructor() {
    this.server = createServer((socket) => this.serve(socket));
  }
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  play(script: Script): void {
    this.script = script;
  }
  private serve(socket: Socket): void {
    let buffered = "";
    socket.setNoDelay(true);
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("latin1");
      const end = buffered.indexOf("\r\n\r\n");
      if (end === -1) return;
      const length = Number(/content-length: (\d+)/i.exec(buffered.slice(0, end))?.[1] ?? 0);
      if (buffered.length < end + 4 + length) return;
      buffered = "";
      const script = this.script!;
      socket.write(script.first, "latin1");
      void script.next.then(() => {
        const rest = script.first === HEAD ? sseChunk("one") + sseChunk("two") : sseChunk("two");
        socket.write(`${rest}e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n`, "latin1");
      });
    });
  }
}

/** A streamed chat completion through the proxy on a raw socket; every read the app made, as text. */
function streamThrough(port: number): { reads: string[]; socket: Socket } {
  const body = JSON.stringify({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });
  const socket = connect(port, "127.0.0.1");
  const reads: string[] = [];
  socket.on("data", (chunk: Buffer) => reads.push(chunk.toString("latin1")));
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nhost: app\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
  );
  return { reads, socket };
}

describe("streaming: the first bytes are not held", () => {
  const provider = new ScriptedProvider();
  const proxies: Partial<Record<ProxyEngine, RunningProxy>> = {};
  const sink = new RecordingSink();

  beforeAll(async () => {
    await new Promise<void>((resolve) => provider.server.listen(0, "127.0.0.1", resolve));
    for (const engine of ENGINES) {
      proxies[engine] = await startProxy({
        port: 0,
        upstreams: { openai: provider.url },
        sink,
        orgId: "org_test",
        app: "stream",
        logger: createLogger({ level: "silent" }),
        engine,
      });
    }
  });

  afterAll(async () => {
    for (const engine of ENGINES) await proxies[engine]?.close();
    await new Promise((resolve) => provider.server.close(resolve));
  });

  it.each(ENGINES)("%s: the first chunk reaches the app before the provider sends the second", async (engine) => {
    let go!: () => void;
    provider.play({ first: HEAD + sseChunk("one"), next: new Promise((resolve) => (go = resolve)) });
    const { reads, socket } = streamThrough(proxies[engine]!.port);
    try {
      // The provider sends nothing more until the app has the first chunk: held, it never comes.
      await waitFor("the first chunk at the app", () => reads.join("").includes('"content":"one"') || undefined);
      expect(reads.join("")).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      go();
      await waitFor("the end of the stream at the app", () => reads.join("").includes("data: [DONE]") || undefined);
      expect(reads.join("")).toContain('"content":"two"');
    } finally {
      go();
      socket.destroy();
    }
  });

  it.each(ENGINES)("%s: a stream's head that comes alone reaches the app before any chunk", async (engine) => {
    let go!: () => void;
    provider.play({ first: HEAD, next: new Promise((resolve) => (go = resolve)) });
    const { reads, socket } = streamThrough(proxies[engine]!.port);
    try {
      await waitFor("the head at the app", () => reads.join("").includes("\r\n\r\n") || undefined);
      expect(reads.join("")).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*content-type: text\/event-stream/i);
      expect(reads.join("")).not.toContain("data:");
      go();
      await waitFor("the end of the stream at the app", () => reads.join("").includes("data: [DONE]") || undefined);
      expect(reads.join("")).toContain('"content":"one"');
    } finally {
      go();
      socket.destroy();
    }
  });
});
