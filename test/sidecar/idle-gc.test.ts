import { describe, expect, it } from "vitest";
import { startIdleCollection } from "../../sidecar/proxy/idle-gc.js";

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
