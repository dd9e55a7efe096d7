import { once } from "node:events";
import { createServer, type Server, type Socket, connect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { TurnWrites } from "../../sidecar/proxy/turn-writes.js";

// Real loopback sockets: what arrives at the far end, and when, is the behaviour.

interface Pair {
  client: Socket;
  received: () => string;
}

const servers: Server[] = [];
const sockets: Socket[] = [];

afterEach(() => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const server of servers.splice(0)) server.close();
});

async function pair(): Promise<Pair> {
  let text = "";
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.setEncoding("latin1").on("data", (chunk: string) => {
      text += chunk;
    });
  });
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  const client = connect(port, "127.0.0.1");
  sockets.push(client);
  await once(client, "connect");
  return { client, received: () => text };
}

/** The end of the current turn of the event loop (and of the writes' turn-end, scheduled before it). */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("TurnWrites: a busy turn's writes leave together at its end", () => {
  it("writes at once while the proxy is not busy (one write a turn), and holds nothing", async () => {
    const writes = new TurnWrites();
    const a = await pair();
    for (let i = 0; i < 3; i++) {
      writes.write(a.client, Buffer.from(`one${i};`));
      // Not corked: the bytes went to the kernel within the call.
      expect(a.client.writableCorked).toBe(0);
      expect(a.client.writableLength).toBe(0);
      expect(writes.busy).toBe(false);
      await nextTurn();
    }
    await until(() => a.received() === "one0;one1;one2;", "the three writes");
  });

  it("after a turn of two or more writes, holds the next turn's writes until its end, in order", async () => {
    const writes = new TurnWrites();
    const a = await pair();
    const b = await pair();
    // A busy turn: two writes (they go at once: the turn before had none).
    writes.write(a.client, Buffer.from("a1;"));
    writes.write(b.client, "b1;", "latin1");
    expect(a.client.writableLength + b.client.writableLength).toBe(0);
    await nextTurn();
    expect(writes.busy).toBe(true);
    // The next turn's writes are held, both sockets, several writes to one of them...
    writes.write(a.client, Buffer.from("a2;"));
    writes.write(a.client, "a3;", "latin1");
    writes.write(b.client, Buffer.from("b2;"));
    expect(a.client.writableCorked).toBe(1);
    expect(b.client.writableCorked).toBe(1);
    expect(a.client.writableLength).toBe(6);
    expect(b.client.writableLength).toBe(3);
    // ...until the turn ends: then they leave, in the order written.
    await nextTurn();
    expect(a.client.writableCorked).toBe(0);
    expect(b.client.writableCorked).toBe(0);
    await until(() => a.received() === "a1;a2;a3;" && b.received() === "b1;b2;", "the held writes");
  });

  it("a quiet turn (fewer than two writes) stops the holding", async () => {
    const writes = new TurnWrites();
    const a = await pair();
    writes.write(a.client, Buffer.from("1;"));
    writes.write(a.client, Buffer.from("2;"));
    await nextTurn();
    expect(writes.busy).toBe(true);
    writes.write(a.client, Buffer.from("3;"));
    expect(a.client.writableCorked).toBe(1);
    await nextTurn();
    // One write in that turn: the next one goes at once.
    expect(writes.busy).toBe(false);
    writes.write(a.client, Buffer.from("4;"));
    expect(a.client.writableCorked).toBe(0);
    await until(() => a.received() === "1;2;3;4;", "every write");
  });

  it("leaves a socket someone else corked to them, and survives a socket destroyed or ended while held", async () => {
    const writes = new TurnWrites();
    const a = await pair();
    const b = await pair();
    const c = await pair();
    writes.write(a.client, Buffer.from("x"));
    writes.write(b.client, Buffer.from("x"));
    await nextTurn();
    expect(writes.busy).toBe(true);
    // Corked by its owner around the write (as a response's end does): not held past the uncork.
    a.client.cork();
    writes.write(a.client, Buffer.from("y"));
    a.client.uncork();
    expect(a.client.writableCorked).toBe(0);
    // Held, then destroyed before the turn ends; another held, then ended (end() uncorks).
    writes.write(b.client, Buffer.from("y"));
    b.client.destroy();
    writes.write(c.client, Buffer.from("zz"));
    c.client.end();
    await nextTurn();
    await until(() => a.received() === "xy" && c.received() === "zz", "a's and c's bytes");
    expect(b.client.destroyed).toBe(true);
  });
});
