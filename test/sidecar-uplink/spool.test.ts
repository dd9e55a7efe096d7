import { appendFile, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Spool, type SpoolOptions } from "../../sidecar/uplink/spool.js";
import { encodeRecord, parseSegment, SEGMENT_MAGIC } from "../../sidecar/uplink/segment-format.js";
import { CapturedLog, completionEvent, temporaryDir } from "./helpers.js";

let dir: { path: string; remove: () => Promise<void> };
let log: CapturedLog;
const open: Spool[] = [];

async function openSpool(options: Partial<SpoolOptions> = {}): Promise<Spool> {
  const spool = await Spool.open({ dir: dir.path, logger: log.logger, ...options });
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
    const second = spool.append([completionEvent()]);
    expect(first?.seq).toBe(1n);
    expect(second?.seq).toBe(2n);
    expect(spool.pendingBatches).toBe(2);
    expect(spool.nextAfter(0)).toBe(1);
    expect(spool.nextAfter(1)).toBe(2);
    expect((await spool.read(2))?.events[0]?.id).toBe(second?.events[0]?.id);

    spool.ack(1);
    expect(spool.ackedSeq).toBe(1);
    expect(spool.pendingBatches).toBe(1);
    expect(spool.nextAfter(0)).toBe(2);
    expect(await spool.read(1)).toBeUndefined();
  });

  it("recovers unacked batches in order after a restart and continues the numbering", async () => {
    const spool = await openSpool();
    const batches = [1, 2, 3, 4].map(() => spool.append([completionEvent()]));
    spool.ack(2);
    await spool.close();

    const reopened = await openSpool({ memoryCacheBytes: 0 });
    expect(reopened.ackedSeq).toBe(2);
    expect(reopened.lastSeq).toBe(4);
    expect(reopened.pendingBatches).toBe(2);
    expect(reopened.nextAfter(0)).toBe(3);
    // memoryCacheBytes 0: read back from the segment file.
    expect((await reopened.read(3))?.events[0]?.id).toBe(batches[2]?.events[0]?.id);
    expect((await reopened.read(4))?.events[0]?.id).toBe(batches[3]?.events[0]?.id);
    expect(reopened.append([completionEvent()])?.seq).toBe(5n);
  });

  it("deletes segments once every batch in them is acked", async () => {
    const spool = await openSpool({ segmentMaxBytes: 1024 });
    for (let i = 0; i < 40; i++) spool.append([completionEvent()]);
    await spool.settled();
    expect((await segmentFiles()).length).toBeGreaterThan(2);
    const bytesBefore = spool.bytes;
    expect(bytesBefore).toBeGreaterThan(0);

    spool.ack(20);
    await spool.settled();
    const files = await segmentFiles();
    expect(spool.bytes).toBeLessThan(bytesBefore);
    // What is left on disk still holds every unacked batch.
    const leftOnDisk = await Promise.all(files.map((name) => readFile(join(dir.path, name))));
    expect(leftOnDisk.reduce((sum, file) => sum + file.length, 0)).toBe(spool.bytes);

    spool.ack(40);
    await spool.settled();
    expect(await segmentFiles()).toEqual([]);
    expect(spool.bytes).toBe(0);
    const state = JSON.parse(await readFile(join(dir.path, "state.json"), "utf8")) as { ackedSeq: number };
    expect(state.ackedSeq).toBe(40);
  });

  it("skips a torn tail left by a crash, with a warning, and keeps the whole records", async () => {
    const spool = await openSpool();
    const kept = [spool.append([completionEvent()]), spool.append([completionEvent()])];
    await spool.close();
    const [segment] = await segmentFiles();
    const path = join(dir.path, segment!);
    const goodLength = (await stat(path)).size;
    // A record whose header promises more bytes than were written, as a crash mid-write leaves it.
    const torn = encodeRecord(Buffer.alloc(500, 7)).subarray(0, 100);
    await appendFile(path, torn);

    const reopened = await openSpool();
    expect(reopened.pendingBatches).toBe(2);
    expect((await reopened.read(2))?.events[0]?.id).toBe(kept[1]?.events[0]?.id);
    expect(log.has("damaged segment tail skipped")).toBe(true);
    expect((await stat(path)).size).toBe(goodLength);
    // New batches go on after the recovered ones.
    expect(reopened.append([completionEvent()])?.seq).toBe(3n);
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
      if (spool.append([completionEvent()])) accepted++;
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
    expect(spool.append([completionEvent()])?.seq).toBe(BigInt(accepted + 1));
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
