import { appendFile, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fromBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { EventBatchSchema } from "../../gen/aigw/v1/ingest_pb.js";
import { Spool, type SpoolOptions } from "../../sidecar/uplink/spool.js";
import { encodeRecord, parseSegment, SEGMENT_MAGIC } from "../../sidecar/uplink/segment-format.js";
import { waitFor } from "./fake-control-plane.js";
import { CapturedLog, completionEvent, temporaryDir } from "./helpers.js";

let dir: { path: string; remove: () => Promise<void> };
let log: CapturedLog;
const open: Spool[] = [];

async function openSpool(options: Partial<SpoolOptions> = {}): Promise<Spool> {
  const spool = await Spool.open({ dir: dir.path, logger: log.logger, ...options });
  open.push(spool);
  return spool;
}

/** Appends one single-event batch; its seq and event id. */
function appendOne(spool: Spool): { seq: number; id: string } | undefined {
  const event = completionEvent();
  const seq = spool.append([event]);
  return seq === undefined ? undefined : { seq, id: event.id };
}

/** The event ids of batch `seq` as the spool gives it back (memory or disk). */
async function idsOf(spool: Spool, seq: number): Promise<string[] | undefined> {
  const payload = await spool.read(seq);
  if (!payload) return undefined;
  const batch = fromBinary(EventBatchSchema, payload);
  expect(batch.seq).toBe(BigInt(seq));
  return batch.events.map((e) => e.id);
}

async function openSpoolIn(sub: string, options: Partial<SpoolOptions> = {}): Promise<Spool> {
  const spool = await Spool.open({ dir: join(dir.path, sub), logger: log.logger, ...options });
  open.push(spool);
  return spool;
}

async function segmentFiles(): Promise<string[]> {
  return (await readdir(dir.path)).filter((name) => name.startsWith("segment-")).sort();
}

beforeEach(async () => {
  dir = await temporaryDir();
  log = new CapturedLog();
});

afterEach(async () => {
  for (const spool of open.splice(0)) await spool.close();
  await dir.remove();
});

describe("Spool", () => {
  it("assigns increasing seqs, reads batches back and forgets acked ones", async () => {
    const spool = await openSpool();
    const first = spool.append([completionEvent(), completionEvent()]);
    const second = appendOne(spool);
    expect(first).toBe(1);
    expect(second?.seq).toBe(2);
    expect(spool.pendingBatches).toBe(2);
    expect(spool.stats().pendingEvents).toBe(3);
    expect(spool.nextAfter(0)).toBe(1);
    expect(spool.nextAfter(1)).toBe(2);
    expect(await idsOf(spool, 2)).toEqual([second?.id]);

    spool.ack(1);
    expect(spool.ackedSeq).toBe(1);
    expect(spool.pendingBatches).toBe(1);
    expect(spool.nextAfter(0)).toBe(2);
    expect(await spool.read(1)).toBeUndefined();
  });

  it("recovers unacked batches in order after a restart and continues the numbering", async () => {
    const spool = await openSpool();
    const batches = [1, 2, 3, 4].map(() => appendOne(spool));
    spool.ack(2);
    await spool.close();

    const reopened = await openSpool();
    expect(reopened.ackedSeq).toBe(2);
    expect(reopened.lastSeq).toBe(4);
    expect(reopened.pendingBatches).toBe(2);
    expect(reopened.stats()).toMatchObject({ pendingEvents: 2, spooledEvents: 2, memoryBytes: 0 });
    expect(reopened.nextAfter(0)).toBe(3);
    // Recovered batches are read back from the segment file.
    expect(await idsOf(reopened, 3)).toEqual([batches[2]?.id]);
    expect(await idsOf(reopened, 4)).toEqual([batches[3]?.id]);
    expect(appendOne(reopened)?.seq).toBe(5);
  });

  it("deletes segments once every batch in them is acked", async () => {
    const spool = await openSpool({ segmentMaxBytes: 1024, ackPersistMs: 1 });
    for (let i = 0; i < 40; i++) spool.append([completionEvent()]);
    await waitFor(() => spool.stats().spooledBatches === 40, "every batch on disk");
    expect((await segmentFiles()).length).toBeGreaterThan(2);
    const bytesBefore = spool.stats().diskBytes;
    expect(bytesBefore).toBeGreaterThan(0);

    spool.ack(20);
    await waitFor(() => spool.stats().diskBytes < bytesBefore, "acked segments deleted");
    await spool.settled();
    const files = await segmentFiles();
    // What is left on disk still holds every unacked batch.
    const leftOnDisk = await Promise.all(files.map((name) => readFile(join(dir.path, name))));
    expect(leftOnDisk.reduce((sum, file) => sum + file.length, 0)).toBe(spool.stats().diskBytes);

    spool.ack(40);
    await waitFor(() => spool.stats().diskBytes === 0, "every segment deleted");
    await spool.settled();
    expect(await segmentFiles()).toEqual([]);
    expect(spool.bytes).toBe(0);
    await spool.close();
    const state = JSON.parse(await readFile(join(dir.path, "state.json"), "utf8")) as { ackedSeq: number };
    expect(state.ackedSeq).toBe(40);
  });

  it("skips a torn tail left by a crash, with a warning, and keeps the whole records", async () => {
    const spool = await openSpool();
    const kept = [appendOne(spool), appendOne(spool)];
    await spool.close();
    const [segment] = await segmentFiles();
    const path = join(dir.path, segment!);
    const goodLength = (await stat(path)).size;
    // A record whose header promises more bytes than were written, as a crash mid-write leaves it.
    const torn = encodeRecord(Buffer.alloc(500, 7)).subarray(0, 100);
    await appendFile(path, torn);

    const reopened = await openSpool();
    expect(reopened.pendingBatches).toBe(2);
    expect(await idsOf(reopened, 2)).toEqual([kept[1]?.id]);
    expect(log.has("damaged segment tail skipped")).toBe(true);
    expect((await stat(path)).size).toBe(goodLength);
    // New batches go on after the recovered ones.
    expect(appendOne(reopened)?.seq).toBe(3);
  });

  it("stops at a record whose checksum does not match and never crashes on garbage", async () => {
    const spool = await openSpool();
    spool.append([completionEvent()]);
    spool.append([completionEvent()]);
    await spool.close();
    const [segment] = await segmentFiles();
    const path = join(dir.path, segment!);
    const bytes = await readFile(path);
    // Flip a byte inside the second record's payload.
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] ?? 0) ^ 0xff;
    await writeFile(path, bytes);
    await writeFile(join(dir.path, "segment-00000000000000000099.log"), Buffer.from("definitely not a segment"));

    const reopened = await openSpool();
    expect(reopened.pendingBatches).toBe(1);
    expect(reopened.nextAfter(0)).toBe(1);
    expect(log.messages().filter((m) => m.includes("damaged segment")).length).toBe(2);
    expect((await readdir(dir.path)).some((name) => name.endsWith(".corrupt"))).toBe(true);
  });

  it("parses segments without throwing on arbitrary bytes", () => {
    for (let i = 0; i < 200; i++) {
      const junk = Buffer.concat([
        SEGMENT_MAGIC,
        Buffer.from(Array.from({ length: i * 3 }, (_, j) => (j * 37 + i) % 256)),
      ]);
      const parsed = parseSegment(junk);
      expect(parsed.validBytes).toBeLessThanOrEqual(junk.length);
    }
    expect(parseSegment(Buffer.alloc(0)).problem).toMatch(/bad magic/);
  });

  it("refuses batches past maxBytes instead of growing", async () => {
    const spool = await openSpool({ maxBytes: 4096 });
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 200; i++) {
      if (appendOne(spool)) accepted++;
      else refused++;
    }
    expect(accepted).toBeGreaterThan(5);
    expect(refused).toBeGreaterThan(0);
    expect(spool.bytes).toBeLessThanOrEqual(4096);
    expect(spool.lastSeq).toBe(accepted);
    await spool.settled();
    // Room comes back as batches are acked.
    spool.ack(spool.lastSeq);
    await spool.settled();
    expect(appendOne(spool)?.seq).toBe(accepted + 1);
  });

  it("while connected, keeps promptly acked batches in memory only: no file work", async () => {
    const spool = await openSpool({ spoolAfterMs: 60_000 });
    spool.eager = false;
    for (let i = 0; i < 50; i++) appendOne(spool);
    spool.ack(50);
    await spool.settled();
    expect(await segmentFiles()).toEqual([]);
    expect(spool.stats()).toMatchObject({ pendingBatches: 0, writtenBatches: 0, diskBytes: 0, memoryBytes: 0 });
  });

  it("writes a batch whose ack is late, in one group, and everything at once when the control plane goes", async () => {
    const spool = await openSpool({ spoolAfterMs: 30 });
    spool.eager = false;
    const early = [appendOne(spool), appendOne(spool)];
    await waitFor(() => spool.stats().spooledBatches === 2, "the late batches on disk");
    expect((await segmentFiles()).length).toBe(1);

    // Past the memory target, batches go to disk whatever their age.
    const big = await openSpoolIn("big", { spoolAfterMs: 60_000, memoryBytes: 2048 });
    big.eager = false;
    for (let i = 0; i < 40; i++) appendOne(big);
    await waitFor(() => big.stats().spooledBatches > 0, "batches past the memory target on disk");

    // No control plane: written as soon as sealed.
    const later = appendOne(spool);
    spool.eager = true;
    await waitFor(() => spool.stats().spooledBatches === 3, "the batch written eagerly");
    await spool.close();
    const reopened = await openSpool();
    expect(reopened.pendingBatches).toBe(3);
    expect(await idsOf(reopened, 1)).toEqual([early[0]?.id]);
    expect(await idsOf(reopened, 3)).toEqual([later?.id]);
  });

  it("while every ack is late, writes all that waits in one append per spool-after interval, not one per batch", async () => {
    const spoolAfterMs = 40;
    const spool = await openSpool({ spoolAfterMs });
    spool.eager = false;
    const appended: { seq: number; id: string }[] = [];
    const started = performance.now();
    let lastAppendAt = started;
    // A batch every ~5 ms for ~400 ms, none acked: a control plane that is there but slow.
    while (performance.now() - started < 400) {
      appended.push(appendOne(spool)!);
      lastAppendAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await waitFor(() => spool.stats().spooledBatches === appended.length, "every late batch on disk");
    const { writes, writtenBatches } = spool.stats();
    expect(writtenBatches).toBe(appended.length);
    expect(appended.length).toBeGreaterThan(20);
    // A write takes every unwritten batch, so the next one waits for a batch sealed after it
    // to be spoolAfterMs old: write k starts at least (k - 1) intervals after the first batch,
    // and the last write but one before the last batch. Writing each batch as it came due made
    // about one write per batch (some 80 here).
    expect(writes).toBeGreaterThanOrEqual(1);
    expect(writes).toBeLessThanOrEqual(Math.floor((lastAppendAt - started) / spoolAfterMs) + 2);
    // All of them read back whole from disk, in order, after a restart.
    await spool.close();
    const reopened = await openSpool();
    expect(reopened.pendingBatches).toBe(appended.length);
    for (const a of [appended[0]!, appended[Math.floor(appended.length / 2)]!, appended.at(-1)!])
      expect(await idsOf(reopened, a.seq)).toEqual([a.id]);
  });

  it("in a backlog holds at most twice its memory target, not its maximum: what is on disk leaves memory, newest first", async () => {
    const target = 4096;
    const spool = await openSpool({ spoolAfterMs: 60_000, memoryBytes: target, memoryMaxBytes: 1024 * 1024 });
    spool.eager = false;
    const appended: { seq: number; id: string }[] = [];
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 20; i++) appended.push(appendOne(spool)!);
      await spool.settled();
      const stats = spool.stats();
      // Batches past the target go to disk; what stays in memory is at most the target not yet
      // written (its write waits for more) and the target cached: never the maximum.
      expect(stats.memoryBytes).toBeLessThanOrEqual(2 * target);
      expect(stats.pendingBatches).toBe(appended.length);
    }
    // The oldest (sent next) stayed cached; the newest come back from disk, all of them whole.
    expect(spool.read(appended[0]!.seq)).toBeInstanceOf(Uint8Array);
    expect(spool.read(appended.at(-1)!.seq)).toBeInstanceOf(Promise);
    for (const a of [appended[0]!, appended[150]!, appended.at(-1)!]) expect(await idsOf(spool, a.seq)).toEqual([a.id]);
    spool.ack(appended.at(-1)!.seq);
    await spool.settled();
    expect(spool.stats()).toMatchObject({ pendingBatches: 0, memoryBytes: 0 });
  });

  it("never re-uses a seq after a crash that left nothing on disk", async () => {
    const spool = await openSpool();
    spool.eager = false;
    for (let i = 0; i < 5; i++) appendOne(spool);
    spool.ack(5);
    // No close(): as after a SIGKILL. The next open starts past the reservation.
    const reopened = await Spool.open({ dir: dir.path, logger: log.logger });
    open.push(reopened);
    expect(reopened.pendingBatches).toBe(0);
    expect(appendOne(reopened)?.seq).toBeGreaterThan(5);
  });

  it("treats an unreadable state file as nothing acked (re-send rather than lose)", async () => {
    const spool = await openSpool();
    spool.append([completionEvent()]);
    spool.append([completionEvent()]);
    spool.ack(1);
    spool.append([completionEvent()]);
    await spool.close();
    await writeFile(join(dir.path, "state.json"), "{not json");

    const reopened = await openSpool();
    expect(log.has("state file unreadable")).toBe(true);
    expect(reopened.ackedSeq).toBe(0);
    expect(reopened.lastSeq).toBe(3);
    expect(reopened.pendingBatches).toBeGreaterThanOrEqual(2);
  });
});

describe("Spool, properties", () => {
  type Step = { kind: "append"; events: number } | { kind: "ack"; upTo: number } | { kind: "eager"; on: boolean };
  const step = fc.oneof(
    fc.record({ kind: fc.constant("append" as const), events: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ kind: fc.constant("ack" as const), upTo: fc.nat(40) }),
    fc.record({ kind: fc.constant("eager" as const), on: fc.boolean() }),
  );

  it("keeps its counts exact and gives back, after a restart, exactly the unacked batches in order", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 40 }), async (steps: Step[]) => {
        const sub = await temporaryDir();
        try {
          const spool = await Spool.open({ dir: sub.path, logger: log.logger, spoolAfterMs: 1, ackPersistMs: 1 });
          const sizes = new Map<number, number>();
          let acked = 0;
          for (const s of steps) {
            if (s.kind === "append") {
              const seq = spool.append(Array.from({ length: s.events }, () => completionEvent()));
              if (seq !== undefined) sizes.set(seq, s.events);
            } else if (s.kind === "ack") {
              spool.ack(s.upTo);
              acked = Math.max(acked, Math.min(s.upTo, spool.lastSeq));
            } else {
              spool.eager = s.on;
            }
            const unacked = [...sizes].filter(([seq]) => seq > acked);
            expect(spool.pendingBatches).toBe(unacked.length);
            expect(spool.stats().pendingEvents).toBe(unacked.reduce((sum, [, n]) => sum + n, 0));
            if (steps.indexOf(s) % 7 === 0) await spool.settled();
          }
          await spool.close();
          const reopened = await Spool.open({ dir: sub.path, logger: log.logger });
          const expected = [...sizes].filter(([seq]) => seq > acked).map(([seq]) => seq);
          const found: number[] = [];
          for (let seq = reopened.nextAfter(0); seq !== undefined; seq = reopened.nextAfter(seq)) {
            found.push(seq);
            const payload = await reopened.read(seq);
            expect(payload && fromBinary(EventBatchSchema, payload).events.length).toBe(sizes.get(seq));
          }
          expect(found).toEqual(expected);
          expect(reopened.stats().spooledEvents).toBe(reopened.stats().pendingEvents);
          await reopened.close();
        } finally {
          await sub.remove();
        }
      }),
      { numRuns: 40 },
    );
  });
});
