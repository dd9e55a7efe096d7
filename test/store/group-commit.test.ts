import { describe, expect, it } from "vitest";
import { GroupCommit } from "../../control-plane/store/group-commit.js";

/** A commit the test releases by hand, recording each group it was given. */
function manualCommit<I>() {
  const groups: I[][] = [];
  const waiting: { items: readonly I[]; resolve: () => void; reject: (err: Error) => void }[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const commit = (items: readonly I[]) =>
    new Promise<string[]>((resolve, reject) => {
      groups.push([...items]);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      waiting.push({
        items,
        resolve: () => {
          inFlight--;
          resolve(items.map((i) => `ok ${String(i)}`));
        },
        reject: (err) => {
          inFlight--;
          reject(err);
        },
      });
    });
  return {
    commit,
    groups,
    waiting,
    get maxInFlight() {
      return maxInFlight;
    },
  };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

async function until(what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await turn();
  }
}

describe("GroupCommit", () => {
  it("commits what was submitted in one turn as one group, and the next ones while it is in flight", async () => {
    const m = manualCommit<number>();
    const gc = new GroupCommit(m.commit);
    const first = [1, 2, 3].map((i) => gc.submit(i));
    await until("the first group", () => m.waiting.length === 1);
    const second = [4, 5].map((i) => gc.submit(i));
    await turn();
    // One at a time: the second group waits for the first commit.
    expect(m.groups).toEqual([[1, 2, 3]]);
    m.waiting[0]?.resolve();
    expect(await Promise.all(first)).toEqual(["ok 1", "ok 2", "ok 3"]);
    await until("the second group", () => m.waiting.length === 2);
    expect(m.groups[1]).toEqual([4, 5]);
    m.waiting[1]?.resolve();
    expect(await Promise.all(second)).toEqual(["ok 4", "ok 5"]);
    await gc.settled();
    expect(m.maxInFlight).toBe(1);
  });

  it("holds at most maxItems in a group", async () => {
    const seen: number[] = [];
    const gc = new GroupCommit((items: readonly number[]) => {
      seen.push(items.length);
      return items.map((i) => i * 2);
    }, 4);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => gc.submit(i)));
    expect(results).toEqual(Array.from({ length: 10 }, (_, i) => i * 2));
    expect(seen).toEqual([4, 4, 2]);
  });

  it("commits each item of a failed group alone, so only the bad one fails", async () => {
    const gc = new GroupCommit(async (items: readonly number[]) => {
      if (items.includes(13)) throw new Error("13 is refused");
      return items.map((i) => i + 1);
    });
    const results = await Promise.allSettled([1, 13, 2].map((i) => gc.submit(i)));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((results[1] as PromiseRejectedResult).reason.message).toBe("13 is refused");
    expect((results[0] as PromiseFulfilledResult<number>).value).toBe(2);
  });

  describe("commitWith (synchronous commits)", () => {
    /** A synchronous store: each transaction is a list of what it wrote. */
    function syncStore() {
      const transactions: string[][] = [];
      let current: string[] | undefined;
      const transaction = <T>(fn: () => T): T => {
        if (current) return fn();
        current = [];
        try {
          const value = fn();
          transactions.push(current);
          return value;
        } finally {
          current = undefined;
        }
      };
      const commitItems = (items: readonly number[]) => {
        if (items.includes(13)) throw new Error("13 is refused");
        current?.push(...items.map(String));
        return items.map((i) => i * 10);
      };
      const gc = new GroupCommit((items: readonly number[]) => transaction(() => commitItems(items)));
      const write = (what: string) => () =>
        transaction(() => {
          if (what === "bad") throw new Error("bad write");
          current?.push(what);
          return what;
        });
      const writeWith = (what: string) =>
        gc.commitWith(write(what), (items, w) => {
          let results: number[] = [];
          const value = transaction(() => {
            results = commitItems(items);
            return w();
          });
          return { results, value };
        });
      return { gc, transactions, writeWith };
    }

    it("writes the queued items and the write in one transaction, items first", async () => {
      const { gc, transactions, writeWith } = syncStore();
      const submitted = [1, 2].map((i) => gc.submit(i));
      expect(writeWith("claim")).toBe("claim");
      expect(transactions).toEqual([["1", "2", "claim"]]);
      expect(await Promise.all(submitted)).toEqual([10, 20]);
      await gc.settled();
      // The scheduled drain found nothing left to commit.
      expect(transactions).toHaveLength(1);
    });

    it("with nothing queued, the write is its own transaction", () => {
      const { transactions, writeWith } = syncStore();
      expect(writeWith("claim")).toBe("claim");
      expect(transactions).toEqual([["claim"]]);
    });

    it("a bad item fails alone; the write and the other items still land", async () => {
      const { gc, transactions, writeWith } = syncStore();
      const submitted = [1, 13, 2].map((i) => gc.submit(i));
      expect(writeWith("claim")).toBe("claim");
      const results = await Promise.allSettled(submitted);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(transactions).toEqual([["1"], ["2"], ["claim"]]);
    });

    it("a failing write fails alone, after the items are committed", async () => {
      const { gc, transactions, writeWith } = syncStore();
      const submitted = [1, 2].map((i) => gc.submit(i));
      expect(() => writeWith("bad")).toThrow("bad write");
      expect(await Promise.all(submitted)).toEqual([10, 20]);
      expect(transactions).toEqual([["1", "2"]]);
    });
  });
  describe("commitWithAsync (asynchronous commits)", () => {
    it("waits for the group in flight, then writes the items queued before it with its own write", async () => {
      const m = manualCommit<number>();
      const gc = new GroupCommit(m.commit);
      const first = [1, 2].map((i) => gc.submit(i));
      await until("the first group", () => m.waiting.length === 1);
      const queued = [3, 4].map((i) => gc.submit(i));
      const together: (readonly number[])[] = [];
      const write = gc.commitWithAsync(
        async () => "alone",
        async (items) => {
          together.push([...items]);
          return { results: items.map((i) => `with ${i}`), value: "together" };
        },
      );
      const late = gc.submit(5);
      await turn();
      // Not before the group in flight has committed.
      expect(together).toEqual([]);
      m.waiting[0]?.resolve();
      expect(await write).toBe("together");
      expect(together).toEqual([[3, 4]]);
      expect(await Promise.all(first)).toEqual(["ok 1", "ok 2"]);
      expect(await Promise.all(queued)).toEqual(["with 3", "with 4"]);
      // Submitted after the write: committed as usual.
      await until("the late group", () => m.waiting.length === 2);
      expect(m.groups).toEqual([[1, 2], [5]]);
      m.waiting[1]?.resolve();
      expect(await late).toBe("ok 5");
      await gc.settled();
    });

    it("with nothing queued, or items it cannot take, the items commit as usual and the write runs after them", async () => {
      const order: string[] = [];
      const gc = new GroupCommit(async (items: readonly number[]) => {
        order.push(`commit ${items.join(",")}`);
        return items.map((i) => i * 10);
      });
      const alone = async () => {
        order.push("write");
        return "alone";
      };
      expect(await gc.commitWithAsync(alone, () => undefined)).toBe("alone");
      const submitted = [1, 2].map((i) => gc.submit(i));
      expect(await gc.commitWithAsync(alone, () => undefined)).toBe("alone");
      expect(await Promise.all(submitted)).toEqual([10, 20]);
      expect(order).toEqual(["write", "commit 1,2", "write"]);
    });

    it("when the joint write fails, the items commit as usual (a bad one alone), then the write runs alone", async () => {
      const committed: number[][] = [];
      const gc = new GroupCommit(async (items: readonly number[]) => {
        if (items.includes(13)) throw new Error("13 is refused");
        committed.push([...items]);
        return items.map((i) => i * 10);
      });
      const submitted = [1, 13, 2].map((i) => gc.submit(i));
      const value = await gc.commitWithAsync(
        async () => "alone",
        async () => {
          throw new Error("a lease went stale");
        },
      );
      expect(value).toBe("alone");
      const results = await Promise.allSettled(submitted);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(committed).toEqual([[1], [2]]);
      await gc.settled();
    });

    it("a group lingers for a joint write, and commits on its own when none comes", async () => {
      const m = manualCommit<number>();
      const gc = new GroupCommit(m.commit, 512, 50);
      const taken = gc.submit(1);
      await turn();
      // Lingering: not committed in the next turn, so the write below takes it.
      expect(m.groups).toEqual([]);
      expect(
        await gc.commitWithAsync(
          async () => "alone",
          async (items) => ({ results: items.map(() => "joint"), value: "together" }),
        ),
      ).toBe("together");
      expect(await taken).toBe("joint");
      const alone = gc.submit(2);
      await until("the lingering group", () => m.waiting.length === 1);
      m.waiting[0]?.resolve();
      expect(await alone).toBe("ok 2");
      await gc.settled();
      expect(m.groups).toEqual([[2]]);
    });
  });
});
