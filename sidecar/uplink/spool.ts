import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type FileHandle, mkdir, open, readdir, readFile, rename, truncate, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { type EventBatch, EventBatchSchema } from "../../gen/aigw/v1/ingest_pb.js";
import type { Logger } from "../../common/logger.js";
import { RateLimitedWarning } from "../../common/rate-limited-warning.js";
import {
  encodeRecord,
  parseSegment,
  RECORD_HEADER_BYTES,
  SEGMENT_MAGIC,
  segmentFileName,
  segmentFirstSeq,
} from "./segment-format.js";

export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024;
const DEFAULT_MEMORY_CACHE_BYTES = 16 * 1024 * 1024;
const STATE_FILE = "state.json";

export interface SpoolOptions {
  dir: string;
  logger: Logger;
  /** Bound on the bytes of unacked (and not yet deleted) batches on disk; default 256 MiB. */
  maxBytes?: number;
  /** A segment is closed and a new one started past this size; default maxBytes/8 within [64 KiB, 16 MiB]. */
  segmentMaxBytes?: number;
  /** Unacked batches kept decoded in memory up to this many bytes; the rest are read back from disk. */
  memoryCacheBytes?: number;
  /** fdatasync segments and the state file after writing (default true): survives a machine crash, not only a process crash. */
  sync?: boolean;
}

interface Segment {
  path: string;
  firstSeq: number;
  /** Highest seq written to this segment (0 while empty). */
  lastSeq: number;
  bytes: number;
  /** Open only for the segment being appended to. */
  handle?: FileHandle | undefined;
}

interface Entry {
  seq: number;
  recordBytes: number;
  /** Decoded batch, kept while the memory cache has room. */
  batch?: EventBatch;
  /** The encoded record until it is written (kept if writing it failed: it then lives in memory only). */
  record?: Buffer | undefined;
  segment?: Segment;
  offset: number;
}

/**
 * A durable, ordered, bounded queue of event batches on disk: what the sidecar has not yet
 * had acked by the control plane. Append-only segment files hold checksummed records; a
 * small state file (replaced atomically) holds the highest acked seq so acked batches are
 * not re-sent after a restart; segments whose batches are all acked are deleted.
 *
 * `append` and `ack` are synchronous and cheap (the proxy's path calls them through the
 * uplink); all file work runs afterwards on one serial queue, so it never blocks a request
 * and never races with itself.
 */
export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly segmentMaxBytes: number;
  private readonly memoryCacheBytes: number;
  private readonly sync: boolean;
  private readonly logger: Logger;
  private readonly diskErrors: RateLimitedWarning;

  /** Unacked batches in seq order, from `head` on (a moving head keeps acks O(1)). */
  private entries: Entry[] = [];
  private head = 0;
  private segments: Segment[] = [];
  private active: Segment | undefined;
  private pendingWrites: Entry[] = [];
  private writeQueued = false;
  private ackPersistQueued = false;

  private lastSeqValue = 0;
  private ackedSeqValue = 0;
  private persistedAckedSeq = 0;
  private bytesValue = 0;
  private cacheBytes = 0;
  private closed = false;
  private tail: Promise<void> = Promise.resolve();

  private constructor(options: SpoolOptions) {
    this.dir = options.dir;
    this.logger = options.logger;
    this.maxBytes = options.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES;
    this.segmentMaxBytes =
      options.segmentMaxBytes ?? Math.min(16 * 1024 * 1024, Math.max(64 * 1024, Math.floor(this.maxBytes / 8)));
    this.memoryCacheBytes = options.memoryCacheBytes ?? DEFAULT_MEMORY_CACHE_BYTES;
    this.sync = options.sync ?? true;
    this.diskErrors = new RateLimitedWarning(
      options.logger,
      "spool: writing to disk failed; batches kept in memory only",
    );
  }

  /** Opens (creating if needed) the spool in `dir` and recovers the unacked batches found there. */
  static async open(options: SpoolOptions): Promise<Spool> {
    if (!(options.maxBytes === undefined || (Number.isFinite(options.maxBytes) && options.maxBytes > 0))) {
      throw new Error(`spool: maxBytes must be a positive number of bytes, got ${options.maxBytes}`);
    }
    const spool = new Spool(options);
    await mkdir(spool.dir, { recursive: true });
    await spool.recover();
    return spool;
  }

  /** The highest seq assigned so far (0 for none); the next batch gets lastSeq + 1. */
  get lastSeq(): number {
    return this.lastSeqValue;
  }

  /** Every batch with seq <= ackedSeq is durable at the control plane. */
  get ackedSeq(): number {
    return this.ackedSeqValue;
  }

  /** Bytes of spooled batches (on disk or being written), counted against maxBytes. */
  get bytes(): number {
    return this.bytesValue;
  }

  get pendingBatches(): number {
    return this.entries.length - this.head;
  }

  /**
   * Seals `events` into the next batch and queues it for disk. Returns the batch, or
   * undefined when the spool is full (or closed): the caller counts those events as dropped.
   */
  append(events: Event[]): EventBatch | undefined {
    if (this.closed) return undefined;
    const seq = this.lastSeqValue + 1;
    const batch = create(EventBatchSchema, { seq: BigInt(seq), events });
    const payload = toBinary(EventBatchSchema, batch);
    const recordBytes = RECORD_HEADER_BYTES + payload.length;
    if (this.bytesValue + recordBytes > this.maxBytes) return undefined;
    this.lastSeqValue = seq;
    this.bytesValue += recordBytes;
    const entry: Entry = { seq, recordBytes, record: encodeRecord(payload), offset: -1 };
    this.cache(entry, batch);
    this.entries.push(entry);
    this.pendingWrites.push(entry);
    this.scheduleWrite();
    return batch;
  }

  /** The seq of the first unacked batch after `seq`, if any. */
  nextAfter(seq: number): number | undefined {
    const index = this.indexAfter(seq);
    return this.entries[index]?.seq;
  }

  /** The batch with this seq, from memory or disk; undefined if it is acked or unreadable. */
  async read(seq: number): Promise<EventBatch | undefined> {
    const entry = this.entries[this.indexAfter(seq - 1)];
    if (entry?.seq !== seq) return undefined;
    if (entry.batch) return entry.batch;
    if (entry.record) return this.decode(entry.record.subarray(RECORD_HEADER_BYTES), `pending batch ${seq}`);
    let batch: EventBatch | undefined;
    // Queued so a read never overlaps the deletion of its segment.
    await this.enqueue(async () => {
      const segment = entry.segment;
      if (!segment || entry.seq <= this.ackedSeqValue) return;
      const payloadBytes = entry.recordBytes - RECORD_HEADER_BYTES;
      const buffer = Buffer.allocUnsafe(payloadBytes);
      const handle = await open(segment.path, "r");
      try {
        const { bytesRead } = await handle.read(buffer, 0, payloadBytes, entry.offset + RECORD_HEADER_BYTES);
        if (bytesRead === payloadBytes) batch = this.decode(buffer, `${segment.path} at byte ${entry.offset}`);
      } finally {
        await handle.close();
      }
    });
    return batch;
  }

  /** Marks every batch with seq <= `seq` acked; the state file and segment deletion follow on the queue. */
  ack(seq: number): void {
    const upTo = Math.min(seq, this.lastSeqValue);
    if (upTo <= this.ackedSeqValue) return;
    this.ackedSeqValue = upTo;
    while (this.head < this.entries.length) {
      const entry = this.entries[this.head];
      if (!entry || entry.seq > upTo) break;
      if (entry.batch) this.cacheBytes -= entry.recordBytes;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    if (!this.ackPersistQueued) {
      this.ackPersistQueued = true;
      void this.enqueue(() => this.persistAcks()).catch((error: unknown) => this.diskErrors.hit({ err: error }));
    }
  }

  /** Resolves when all file work queued so far is done. */
  settled(): Promise<void> {
    return this.enqueue(async () => {});
  }

  /** Writes what is pending, records the acked seq, and closes the open segment. */
  async close(): Promise<void> {
    if (this.closed) return this.settled();
    this.closed = true;
    await this.enqueue(async () => {
      await this.persistAcks();
      const active = this.active;
      this.active = undefined;
      if (active?.handle) {
        if (this.sync) await active.handle.datasync();
        await active.handle.close();
        active.handle = undefined;
      }
    });
  }

  private cache(entry: Entry, batch: EventBatch): void {
    if (this.cacheBytes + entry.recordBytes > this.memoryCacheBytes) return;
    entry.batch = batch;
    this.cacheBytes += entry.recordBytes;
  }

  private indexAfter(seq: number): number {
    let lo = this.head;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.entries[mid]?.seq ?? Number.POSITIVE_INFINITY) <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private decode(payload: Uint8Array, where: string): EventBatch | undefined {
    try {
      return fromBinary(EventBatchSchema, payload);
    } catch (error) {
      this.logger.warn({ err: error, where }, "spool: undecodable batch skipped");
      return undefined;
    }
  }

  /** Runs file work one task at a time; a failing task is logged by itself and never stops the queue. */
  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.tail.then(task);
    this.tail = run.catch(() => {});
    return run;
  }

  private scheduleWrite(): void {
    if (this.writeQueued) return;
    this.writeQueued = true;
    void this.enqueue(() => this.writePending()).catch((error: unknown) => this.diskErrors.hit({ err: error }));
  }

  // Group commit: everything appended since the last write goes out in one write and one fdatasync.
  private async writePending(): Promise<void> {
    this.writeQueued = false;
    // An entry acked before it reached the disk never needs to.
    const pending = this.pendingWrites.splice(0).filter((entry) => {
      if (entry.seq > this.ackedSeqValue) return true;
      this.bytesValue -= entry.recordBytes;
      entry.record = undefined;
      return false;
    });
    let index = 0;
    try {
      while (index < pending.length) {
        const first = pending[index]!;
        let segment = this.active;
        if (!segment || (segment.lastSeq > 0 && segment.bytes + first.recordBytes > this.segmentMaxBytes)) {
          segment = await this.startSegment(first.seq);
        }
        const chunk: Entry[] = [first];
        let chunkBytes = first.recordBytes;
        for (let next = pending[index + 1]; next; next = pending[index + chunk.length]) {
          if (segment.bytes + chunkBytes + next.recordBytes > this.segmentMaxBytes) break;
          chunk.push(next);
          chunkBytes += next.recordBytes;
        }
        const position = segment.bytes;
        const buffer = Buffer.concat(
          chunk.map((entry) => entry.record!),
          chunkBytes,
        );
        await writeFully(segment.handle!, buffer, position);
        let offset = position;
        for (const entry of chunk) {
          entry.segment = segment;
          entry.offset = offset;
          entry.record = undefined;
          offset += entry.recordBytes;
          segment.lastSeq = entry.seq;
        }
        segment.bytes += chunkBytes;
        index += chunk.length;
      }
      if (this.sync && this.active?.handle) await this.active.handle.datasync();
    } catch (error) {
      // The batches not written stay in memory (and are still sent); the segment may now end
      // in a partial record, so nothing more is appended to it: recovery cuts such a tail off.
      const lost = pending.slice(index);
      for (const entry of lost) this.bytesValue -= entry.recordBytes;
      this.diskErrors.hit({ err: error, dir: this.dir, batches: lost.length });
      const active = this.active;
      this.active = undefined;
      await active?.handle?.close().catch(() => {});
      if (active) active.handle = undefined;
    }
  }

  private async startSegment(firstSeq: number): Promise<Segment> {
    const previous = this.active;
    if (previous?.handle) {
      if (this.sync) await previous.handle.datasync();
      await previous.handle.close();
      previous.handle = undefined;
    }
    this.active = undefined;
    const path = join(this.dir, segmentFileName(firstSeq));
    const handle = await open(path, "wx");
    const segment: Segment = { path, firstSeq, lastSeq: 0, bytes: 0, handle };
    await writeFully(handle, SEGMENT_MAGIC, 0);
    segment.bytes = SEGMENT_MAGIC.length;
    this.bytesValue += SEGMENT_MAGIC.length;
    this.segments.push(segment);
    this.active = segment;
    if (this.sync) await syncDirectory(this.dir);
    return segment;
  }

  private async persistAcks(): Promise<void> {
    this.ackPersistQueued = false;
    const acked = this.ackedSeqValue;
    if (acked === this.persistedAckedSeq) return;
    try {
      await this.writeState(acked);
      this.persistedAckedSeq = acked;
    } catch (error) {
      this.diskErrors.hit({ err: error, file: join(this.dir, STATE_FILE) });
      return;
    }
    // Only after the acked seq is on disk may the batches it covers disappear.
    const kept: Segment[] = [];
    for (const segment of this.segments) {
      if (segment.lastSeq > acked) {
        kept.push(segment);
        continue;
      }
      if (segment === this.active) {
        this.active = undefined;
        await segment.handle?.close().catch(() => {});
        segment.handle = undefined;
      }
      try {
        await unlink(segment.path);
        this.bytesValue -= segment.bytes;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") this.bytesValue -= segment.bytes;
        else {
          this.diskErrors.hit({ err: error, file: segment.path });
          kept.push(segment);
        }
      }
    }
    this.segments = kept;
  }

  private async writeState(ackedSeq: number): Promise<void> {
    const path = join(this.dir, STATE_FILE);
    const temporary = `${path}.tmp`;
    const handle = await open(temporary, "w");
    try {
      await writeFully(handle, Buffer.from(`${JSON.stringify({ ackedSeq })}\n`), 0);
      if (this.sync) await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
    if (this.sync) await syncDirectory(this.dir);
  }

  private async readState(): Promise<number> {
    const path = join(this.dir, STATE_FILE);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw error;
    }
    try {
      const ackedSeq = (JSON.parse(text) as { ackedSeq?: unknown }).ackedSeq;
      if (typeof ackedSeq === "number" && Number.isSafeInteger(ackedSeq) && ackedSeq >= 0) return ackedSeq;
    } catch {
      // fall through: treated as unreadable below
    }
    // Re-sending acked batches is safe (the control plane dedupes by event id); losing unacked ones is not.
    this.logger.warn({ file: path }, "spool: state file unreadable; re-sending every batch found on disk");
    return 0;
  }

  private async recover(): Promise<void> {
    const acked = await this.readState();
    this.ackedSeqValue = acked;
    this.persistedAckedSeq = acked;
    let highestSeq = acked;
    const files = (await readdir(this.dir))
      .map((name) => ({ name, firstSeq: segmentFirstSeq(name) }))
      .filter((file): file is { name: string; firstSeq: number } => file.firstSeq !== undefined)
      .sort((a, b) => a.firstSeq - b.firstSeq);
    let recoveredBatches = 0;
    for (const file of files) {
      const path = join(this.dir, file.name);
      const contents = await readFile(path);
      const parsed = parseSegment(contents);
      if (parsed.problem) {
        this.logger.warn(
          { segment: path, problem: parsed.problem, skippedBytes: contents.length - parsed.validBytes },
          "spool: damaged segment tail skipped (torn write after a crash?)",
        );
        if (parsed.validBytes === 0) {
          await rename(path, `${path}.corrupt`);
          continue;
        }
        await truncate(path, parsed.validBytes);
      }
      const segment: Segment = { path, firstSeq: file.firstSeq, lastSeq: 0, bytes: parsed.validBytes };
      for (const record of parsed.records) {
        const batch = this.decode(record.payload, `${path} at byte ${record.offset}`);
        if (!batch) continue;
        const seq = Number(batch.seq);
        if (seq <= segment.lastSeq || (seq <= highestSeq && seq > acked)) {
          this.logger.warn({ segment: path, seq }, "spool: out-of-order batch skipped");
          continue;
        }
        segment.lastSeq = seq;
        highestSeq = Math.max(highestSeq, seq);
        if (seq <= acked) continue;
        const entry: Entry = {
          seq,
          recordBytes: record.payload.length + RECORD_HEADER_BYTES,
          segment,
          offset: record.offset,
        };
        this.cache(entry, batch);
        this.entries.push(entry);
        recoveredBatches++;
      }
      if (segment.lastSeq <= acked) {
        await unlink(path);
        continue;
      }
      this.segments.push(segment);
      this.bytesValue += segment.bytes;
    }
    this.lastSeqValue = highestSeq;
    if (recoveredBatches > 0) {
      this.logger.info(
        { dir: this.dir, batches: recoveredBatches, bytes: this.bytesValue, ackedSeq: acked },
        "spool: recovered unacked batches",
      );
    }
  }
}

async function writeFully(handle: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < buffer.length) {
    const { bytesWritten } = await handle.write(buffer, written, buffer.length - written, position + written);
    written += bytesWritten;
  }
}

// A new or renamed file survives a machine crash only once its directory entry is synced too.
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch {
    // Some platforms cannot open or sync directories; the data itself was synced.
  } finally {
    await handle?.close().catch(() => {});
  }
}
