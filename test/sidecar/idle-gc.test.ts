import { mkdtempSync, rmSync } from "node:fs";
import { Agent, createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { startIdleCollection } from "../../sidecar/proxy/idle-gc.js";
import { DEFAULT_IDLE_COLLECTION_MS, runSidecar } from "../../sidecar/run.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("idle collection", () => {
  it("collects once per busy → idle transition, never while requests keep coming or after a quiet trickle", async () => {
    let requests = 0;
    const collections: number[] = [];
    const idle = startIdleCollection({
      activity: () => requests,
      idleMs: 150,
      minActivity: 100,
      checkMs: 20,
      onCollect: (info) => collections.push(info.activity),
    });
    try {
      // Busy for 400 ms (past idleMs): no collection while the counter moves.
      const busyUntil = Date.now() + 400;
      while (Date.now() < busyUntil) {
        requests += 50;
        await sleep(10);
      }
      expect(collections).toEqual([]);
      const busyCount = requests;
      const deadline = Date.now() + 5_000;
      while (collections.length === 0 && Date.now() < deadline) await sleep(10);
      expect(collections).toEqual([busyCount]);
      // Idle on: no second collection.
      await sleep(400);
      expect(collections).toEqual([busyCount]);
      // A trickle below minActivity, then quiet: still none.
      requests += 10;
      await sleep(400);
      expect(collections).toEqual([busyCount]);
      // Another busy period: one more.
      requests += 500;
      const again = Date.now() + 5_000;
      while (collections.length === 1 && Date.now() < again) await sleep(10);
      expect(collections).toEqual([busyCount, requests]);
    } finally {
      idle.stop();
    }
  });

  it("collects with V8's low-memory collection where it is to be had, with gc() where it is not", async () => {
    for (const available of [true, false]) {
      let requests = 0;
      let notified = 0;
      const collections: string[] = [];
      const idle = startIdleCollection({
        activity: () => requests,
        idleMs: 100,
        minActivity: 10,
        checkMs: 20,
        lowMemoryNotification: () => {
          notified++;
          return available;
        },
        onCollect: (info) => collections.push(info.collection),
      });
      try {
        requests += 50;
        const deadline = Date.now() + 10_000;
        while (collections.length === 0 && Date.now() < deadline) await sleep(10);
        expect(notified).toBe(1);
        expect(collections).toEqual([available ? "low-memory" : "gc"]);
      } finally {
        idle.stop();
      }
    }
  });
});

describe("the sidecar's idle collection (AIGW_SIDECAR_IDLE_GC)", () => {
  const withIdleGc = async (value: string | undefined, body: () => Promise<void>) => {
    const before = process.env.AIGW_SIDECAR_IDLE_GC;
    if (value === undefined) delete process.env.AIGW_SIDECAR_IDLE_GC;
    else process.env.AIGW_SIDECAR_IDLE_GC = value;
    try {
      await body();
    } finally {
      if (before === undefined) delete process.env.AIGW_SIDECAR_IDLE_GC;
      else process.env.AIGW_SIDECAR_IDLE_GC = before;
    }
  };

  it("refuses a value that is not a number of seconds, naming the variable, before it starts anything", async () => {
    for (const value of ["soon", "-1", "5s", "100000"]) {
      await withIdleGc(value, async () => {
        await expect(
          runSidecar({ listen: "127.0.0.1:0", adminListen: "127.0.0.1:0", controlPlane: "http://127.0.0.1:9" }),
        ).rejects.toThrow(`AIGW_SIDECAR_IDLE_GC: ${JSON.stringify(value)} is not a number of seconds`);
      });
    }
  });

  it("collects once the proxy has been quiet for the seconds it says, after a busy period; 30 s by default", async () => {
    expect(DEFAULT_IDLE_COLLECTION_MS).toBe(30_000);
    const upstream = createServer((_req, res) => res.end('{"ok":true}'));
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const spoolDir = mkdtempSync(join(tmpdir(), "aigw-idle-gc-"));
    let logText = "";
    const logStream = new PassThrough();
    logStream.on("data", (chunk: Buffer) => {
      logText += chunk.toString("utf8");
    });
    try {
      await withIdleGc("0.3", async () => {
        const sidecar = await runSidecar({
          listen: "127.0.0.1:0",
          adminListen: "127.0.0.1:0",
          controlPlane: "http://127.0.0.1:9",
          upstreams: { openai: upstreamUrl },
          spoolDir,
          logger: createLogger({ level: "debug", destination: logStream, name: "sidecar" }),
        });
        try {
          // A busy period (past the 1,000 requests that make one), then quiet.
          const agent = new Agent({ keepAlive: true, maxSockets: 4 });
          for (let i = 0; i < 1_100; i += 4) {
            await Promise.all(
              [0, 1, 2, 3].map(
                () =>
                  new Promise<void>((resolve, reject) => {
                    const req = request(`${sidecar.url}/v1/models`, { agent }, (res) => {
                      res.resume().on("end", resolve);
                    });
                    req.on("error", reject).end();
                  }),
              ),
            );
          }
          agent.destroy();
          expect(logText).not.toContain("idle: full garbage collection");
          const deadline = Date.now() + 15_000;
          while (!logText.includes("idle: full garbage collection") && Date.now() < deadline) await sleep(50);
          expect(logText).toContain("idle: full garbage collection");
        } finally {
          await sidecar.close();
        }
      });
    } finally {
      upstream.close();
      rmSync(spoolDir, { recursive: true, force: true });
    }
  }, 30_000);
});
