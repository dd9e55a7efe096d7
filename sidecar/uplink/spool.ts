import { type FileHandle, mkdir, open, readdir, readFile, rename, truncate, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../common/logger.js";
import { RateLimitedWarning } from "../../common/rate-limited-warning.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { type BatchBody, batchBodyOf } from "./batch-encoder.js";
import {
  encodeRecord,
  parseSegment,
  RECORD_HEADER_BYTES,
  readBatchSeq,
  SEGMENT_MAGIC,
  segmentFileName,
  segmentFirstSeq,
} from "./segment-format.js";

export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024;
/** While the control plane is connected, a batch waits this long for its ack in memory only; then it goes to disk with every younger one. */
export const DEFAULT_SPOOL_AFTER_MS = 50;
const DEFAULT_MEMORY_BYTES = 8 * 1024 * 1024;
const DEFAULT_MEMORY_MAX_BYTES = 32 * 1024 * 1024;
const STATE_FILE = "state.json";
/** Seqs are reserved on disk this many at a time, so a crash never re-uses one (few state writes). */
const SEQ_RESERVATION = 1 << 20;
/** Acks reach the disk (state file, segment deletion) at most this often. */
const DEFAULT_ACK_PERSIST_MS = 250;
/** After a failed write (disk full, I/O error), the next try waits this long. */
const WRITE_RETRY_MS = 1_000;

export interface SpoolOptions {
  dir: string;
  logger: Logger;
  /** Bound on the bytes of unacked batches, on disk and in memory together; default 256 MiB. */
  maxBytes?: number;
  /** A segment is closed and a new one started past this size; default maxBytes/8 within [64 KiB, 16 MiB]. */
  segmentMaxBytes?: number;
  /**
   * While the control plane is connected, a batch goes to disk (with every younger unacked
   * one) once it has waited this long for its ack (default 50 ms): what a SIGKILL of a
   * connected sidecar can lose.
   */
  spoolAfterMs?: number;
  /** Unacked batches not yet on disk past this many bytes go to disk at once; default 8 MiB. */
  memoryBytes?: number;
  /**
   * Batches held in memory (not yet on disk, or kept as a cache of what is) at most; past it
   * new batches are refused, which only happens when the disk cannot take them. Default 32 MiB.
   */
  memoryMaxBytes?: number;
  /** fdatasync segments and the state file after writing (default true): survives a machine crash, not only a process crash. */
  sync?: boolean;
  /** Acked seqs reach the disk at most this often (default 250 ms); a crash re-sends at most that much (deduplicated upstream). */
  ackPersistMs?: number;
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
  events: number;
  /** The EventBatch in protobuf binary: held until acked, or dropped from memory once on disk (cache full). */
  payload: Uint8Array | undefined;
  payloadBytes: number;
  sealedAt: number;
  /** Set once the batch is durably in a segment. */
  segment?: Segment | undefined;
  offset: number;
  writing: boolean;
}

export interface SpoolStats {
  /** Unacked batches, in memory or on disk. */
  pendingBatches: number;
  /** Events in those batches. */
  pendingEvents: number;
  /** Of those, batches (and events) written to disk. */
  spooledBatches: number;
  spooledEvents: number;
  /** Bytes of segment files on disk. */
  diskBytes: number;
  /** Bytes of batches held in memory. */
  memoryBytes: number;
  /** Batches written to disk since start. */
  writtenBatches: number;
  /** Group writes since start (each one append per segment and one fdatasync), failed ones included. */
  writes: number;
  /** Disk writes that failed since start (disk full, I/O error). */
  writeFailures: number;
}

/**
 * The uplink's ordered, bounded queue of sealed event batches that the control plane has
 * not acked yet, in memory first and on disk when needed.
 *
 * - While the control plane is connected and acks promptly (`eager` false), a batch lives
 *   in memory only; if its ack has not come within `spoolAfterMs`, or memory passes
 *   `memoryBytes`, it is written to disk, and every younger unacked batch with it (a control
 *   plane that is late for one is late for the next: one append and one fdatasync per
 *   `spoolAfterMs` while acks are late, not one per batch). So a connected sidecar does no
 *   disk work at all in the normal case, and a SIGKILL loses at most the batches of the last
 *   `spoolAfterMs`.
 * - While it is not (`eager` true), every batch is written as soon as the previous write is
 *   done: everything sealed meanwhile goes out in one append and one fdatasync.
 *
 * Segment files hold checksummed records; a small state file (replaced atomically) holds the
 * highest acked seq and a reservation of seqs, so seqs never repeat after a crash; segments
 * whose batches are all acked are deleted. `append` and `ack` are synchronous and cheap; all
 * file work runs on one serial queue, off the request path.
 */
export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly segmentMaxBytes: number;
  private readonly spoolAfterMs: number;
  private readonly memoryBytesTarget: number;
  private readonly memoryMaxBytes: number;
  private readonly ackPersistMs: number;
  private readonly sync: boolean;
  private readonly logger: Logger;
  private readonly diskErrors: RateLimitedWarning;

  /** Unacked batches in seq order, from `head` on (a moving head keeps acks O(1)). */
  private entries: Entry[] = [];
  private head = 0;
  /** Index of the first entry not yet written (or being written) to disk. */
  private unwritten = 0;
  private segments: Segment[] = [];
  private active: Segment | undefined;
  private eagerValue = true;
  private writeQueued = false;
  private writeTimer: NodeJS.Timeout | undefined;
  private retryAt = 0;
  private ackTimer: NodeJS.Timeout | undefined;

  private lastSeqValue = 0;
  private ackedSeqValue = 0;
  private persistedAckedSeq = 0;
  private seqReserved = 0;
  private reserving = false;
  private diskBytesValue = 0;
  private memoryBytesValue = 0;
  /** Bytes of unacked batches not (yet) on disk: what the memory target bounds; cached copies can be dropped. */
  private unwrittenBytesValue = 0;
  /** Bytes of unacked batches wherever they are (bounded by maxBytes). */
  private totalBytes = 0;
  private pendingEventsValue = 0;
  private spooledBatchesValue = 0;
  private spooledEventsValue = 0;
  private writtenBatches = 0;
  private writes = 0;
  private writeFailures = 0;
  private lastWriteFailed = false;
  private closed = false;
  private tail: Promise<void> = Promise.resolve();

  private constructor(options: SpoolOptions) {
    this.dir = options.dir;
    this.logger = options.logger;
    this.maxBytes = options.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES;
    this.segmentMaxBytes =
      options.segmentMaxBytes ?? Math.min(16 * 1024 * 1024, Math.max(64 * 1024, Math.floor(this.maxBytes / 8)));
    this.spoolAfterMs = options.spoolAfterMs ?? DEFAULT_SPOOL_AFTER_MS;
    this.memoryBytesTarget = options.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    this.memoryMaxBytes = Math.max(options.memoryMaxBytes ?? DEFAULT_MEMORY_MAX_BYTES, this.memoryBytesTarget);
    this.ackPersistMs = options.ackPersistMs ?? DEFAULT_ACK_PERSIST_MS;
    this.sync = options.sync ?? true;
    this.diskErrors = new RateLimitedWarning(
      options.logger,
      "spool: writing to disk failed; batches kept in memory and tried again",
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
    // Reserved before the first batch is numbered: a crash from here on never re-uses a seq.
    spool.seqReserved = spool.lastSeqValue + SEQ_RESERVATION;
    await spool.writeState(spool.ackedSeqValue, spool.seqReserved);
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

  /** Bytes of unacked batches (on disk or in memory), counted against maxBytes. */
  get bytes(): number {
    return this.totalBytes;
  }

  get pendingBatches(): number {
    return this.entries.length - this.head;
  }

  /** True: write every batch at once (no control plane). False: only batches that waited too long for their ack. */
  get eager(): boolean {
    return this.eagerValue;
  }

  set eager(value: boolean) {
    if (this.eagerValue === value) return;
    this.eagerValue = value;
    this.scheduleWrite();
  }

  /** The last write to disk failed (and has not succeeded since). */
  get failing(): boolean {
    return this.lastWriteFailed;
  }

  stats(): SpoolStats {
    return {
      pendingBatches: this.pendingBatches,
      pendingEvents: this.pendingEventsValue,
      spooledBatches: this.spooledBatchesValue,
      spooledEvents: this.spooledEventsValue,
      diskBytes: this.diskBytesValue,
      memoryBytes: this.memoryBytesValue,
      writtenBatches: this.writtenBatches,
      writes: this.writes,
      writeFailures: this.writeFailures,
    };
  }

  /**
   * Seals `events` into the next batch (one protobuf encode for the batch). Returns its seq,
   * or undefined when the spool is full (or closed): the caller counts those events as dropped.
   */
  append(events: Event[]): number | undefined {
    return this.appendBody(batchBodyOf(events));
  }

  /**
   * Appends the batch whose events were written into `body` as they came (the uplink's way:
   * sealing is one copy); the body is spent either way. Returns its seq, or undefined when
   * there is no room (the caller counts the events dropped) or the spool is closed.
   */
  appendBody(body: BatchBody): number | undefined {
    if (this.closed) {
      body.discard();
      return undefined;
    }
    const seq = this.lastSeqValue + 1;
    const events = body.count;
    const payload = body.finish(seq);
    const recordBytes = RECORD_HEADER_BYTES + payload.length;
    if (this.totalBytes + recordBytes > this.maxBytes) return undefined;
    if (this.memoryBytesValue + payload.length > this.memoryMaxBytes) {
      // Memory is full of batches that are not on disk yet: the disk is failing or slow.
      this.evictCached(payload.length);
      if (this.memoryBytesValue + payload.length > this.memoryMaxBytes) return undefined;
    }
    this.lastSeqValue = seq;
    this.totalBytes += recordBytes;
    this.memoryBytesValue += payload.length;
    this.unwrittenBytesValue += payload.length;
    this.pendingEventsValue += events;
    this.entries.push({
      seq,
      events,
      payload,
      payloadBytes: payload.length,
      sealedAt: performance.now(),
      offset: -1,
      writing: false,
    });
    if (seq > this.seqReserved - SEQ_RESERVATION / 2) this.renewReservation();
    this.scheduleWrite();
    return seq;
  }

  /** The seq of the first unacked batch after `seq`, if any. */
  nextAfter(seq: number): number | undefined {
    const index = this.indexAfter(seq);
    return this.entries[index]?.seq;
  }

  /** The batch with this seq (EventBatch in protobuf binary), from memory or disk; undefined if acked or unreadable. */
  read(seq: number): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const entry = this.entries[this.indexAfter(seq - 1)];
    if (entry?.seq !== seq) return undefined;
    if (entry.payload) return entry.payload;
    return this.readFromDisk(entry);
  }

  /** Marks every batch with seq <= `seq` acked; state file and segment deletion follow, throttled. */
  ack(seq: number): void {
    const upTo = Math.min(seq, this.lastSeqValue);
    if (upTo <= this.ackedSeqValue) return;
    this.ackedSeqValue = upTo;
    let onDisk = false;
    while (this.head < this.entries.length) {
      const entry = this.entries[this.head];
      if (!entry || entry.seq > upTo) break;
      this.forget(entry);
      if (entry.segment || entry.writing) onDisk = true;
      this.head++;
    }
    if (this.unwritten < this.head) this.unwritten = this.head;
    if (this.head > 256 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.unwritten -= this.head;
      this.head = 0;
    }
    // Nothing of it was ever on disk (the normal, connected case): no file work at all.
    if ((onDisk || this.segments.length > 0) && this.ackTimer === undefined && !this.closed) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined;
        void this.enqueue(() => this.persistAcks()).catch((error: unknown) => this.diskErrors.hit({ err: error }));
      }, this.ackPersistMs);
      this.ackTimer.unref();
    }
  }

  /** Resolves when all file work queued so far is done. */
  settled(): Promise<void> {
    return this.enqueue(async () => {});
  }

  /** Writes every unacked batch still in memory, records the acked seq, and closes the open segment. */
  async close(): Promise<void> {
    if (this.closed) return this.settled();
    this.closed = true;
    clearTimeout(this.writeTimer);
    clearTimeout(this.ackTimer);
    this.writeTimer = undefined;
    this.ackTimer = undefined;
    await this.enqueue(async () => {
      await this.writeDue(true);
      await this.persistAcks();
      await this.writeState(this.persistedAckedSeq, Math.max(this.lastSeqValue, this.ackedSeqValue));
      const active = this.active;
      this.active = undefined;
      if (active?.handle) {
        await active.handle.close();
        active.handle = undefined;
      }
    });
  }

  private forget(entry: Entry): void {
    this.pendingEventsValue -= entry.events;
    // A batch being written is settled when its write completes (settleWritten).
    if (entry.writing) return;
    if (entry.payload) this.memoryBytesValue -= entry.payloadBytes;
    entry.payload = undefined;
    this.totalBytes -= RECORD_HEADER_BYTES + entry.payloadBytes;
    if (entry.segment) {
      this.spooledBatchesValue--;
      this.spooledEventsValue -= entry.events;
    } else {
      this.unwrittenBytesValue -= entry.payloadBytes;
    }
  }

  /**
   * Past the memory target, batches this write put on disk leave memory, newest first (the
   * oldest go to the control plane next and stay cached): a backlog then holds at most about
   * twice `memoryBytes` in memory (that much cached, and up to that much not yet written), not
   * `memoryMaxBytes`, and the walk is this write's batches only.
   */
  private dropWrittenOverTarget(written: readonly Entry[]): void {
    for (let i = written.length - 1; i >= 0 && this.memoryBytesValue > this.memoryBytesTarget; i--) {
      const entry = written[i]!;
      if (!entry.segment || !entry.payload || entry.writing) continue;
      entry.payload = undefined;
      this.memoryBytesValue -= entry.payloadBytes;
    }
  }

  /** Drops cached payloads of batches already on disk, newest first, to make `room` bytes. */
  private evictCached(room: number): void {
    for (let i = this.unwritten - 1; i >= this.head; i--) {
      if (this.memoryBytesValue + room <= this.memoryBytesTarget) return;
      const entry = this.entries[i];
      // Only what is durably on disk: a batch mid-write may still have to be written again.
      if (!entry?.segment || !entry.payload || entry.writing) continue;
      entry.payload = undefined;
      this.memoryBytesValue -= entry.payloadBytes;
    }
  }

  private async readFromDisk(entry: Entry): Promise<Uint8Array | undefined> {
    let payload: Uint8Array | undefined;
    // Queued so a read never overlaps the deletion of its segment.
    await this.enqueue(async () => {
      const segment = entry.segment;
      if (!segment || entry.seq <= this.ackedSeqValue) return;
      const buffer = Buffer.allocUnsafe(entry.payloadBytes);
      const handle = await open(segment.path, "r");
      try {
        const { bytesRead } = await handle.read(buffer, 0, entry.payloadBytes, entry.offset + RECORD_HEADER_BYTES);
        if (bytesRead === entry.payloadBytes) payload = buffer;
      } finally {
        await handle.close();
      }
    });
    return payload;
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

  /** Runs file work one task at a time; a failing task is logged by itself and never stops the queue. */
  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.tail.then(task);
    this.tail = run.catch(() => {});
    return run;
  }

  /**
   * Decides when the next write happens: now when eager or memory is past its target, else
   * when the oldest unwritten batch will have waited spoolAfterMs. One timer at most.
   */
  private scheduleWrite(): void {
    if (this.closed || this.writeQueued) return;
    const first = this.entries[this.unwritten];
    if (first === undefined) return;
    const now = performance.now();
    let dueIn =
      this.eagerValue || this.unwrittenBytesValue > this.memoryBytesTarget
        ? 0
        : first.sealedAt + this.spoolAfterMs - now;
    dueIn = Math.max(dueIn, this.retryAt - now);
    if (dueIn > 0) {
      if (this.writeTimer === undefined) {
        this.writeTimer = setTimeout(() => {
          this.writeTimer = undefined;
          this.scheduleWrite();
        }, dueIn + 1);
        this.writeTimer.unref();
      }
      return;
    }
    clearTimeout(this.writeTimer);
    this.writeTimer = undefined;
    this.writeQueued = true;
    void this.enqueue(async () => {
      this.writeQueued = false;
      await this.writeDue(false);
      this.scheduleWrite();
    }).catch((error: unknown) => this.diskErrors.hit({ err: error }));
  }

  /**
   * Group commit: once the oldest unwritten batch is due (always when `all`, eager, or over
   * the memory target), every unwritten batch goes out in one append per segment and one
   * fdatasync; the younger ones would be due within `spoolAfterMs` and, while the control
   * plane is late, be written then by a write of their own. A failed write (disk full, I/O
   * error) is undone: the segment is cut back to where this write began, the batches stay in
   * memory (still sent) and are written again after a pause.
   */
  private async writeDue(all: boolean): Promise<void> {
    let index = Math.max(this.unwritten, this.head);
    // Acked ones are skipped, so the first unacked one decides.
    while (index < this.entries.length && this.entries[index]!.seq <= this.ackedSeqValue) index++;
    const oldest = this.entries[index];
    if (oldest === undefined) {
      this.unwritten = index;
      return;
    }
    const isDue =
      all ||
      this.eagerValue ||
      this.unwrittenBytesValue > this.memoryBytesTarget ||
      performance.now() - oldest.sealedAt >= this.spoolAfterMs;
    if (!isDue) {
      this.unwritten = index;
      return;
    }
    const due: Entry[] = [];
    for (; index < this.entries.length; index++) {
      const entry = this.entries[index]!;
      if (entry.seq <= this.ackedSeqValue || !entry.payload) continue;
      due.push(entry);
    }
    this.unwritten = index;
    if (due.length === 0) return;
    this.writes++;
    for (const entry of due) entry.writing = true;
    const resumeAt = this.active
      ? { segment: this.active, bytes: this.active.bytes, lastSeq: this.active.lastSeq }
      : undefined;
    const segmentsBefore = this.segments.length;
    try {
      let written = 0;
      while (written < due.length) written += await this.writeChunk(due, written);
      if (this.sync && this.active?.handle) await this.active.handle.datasync();
      for (const entry of due) this.settleWritten(entry, true);
      this.dropWrittenOverTarget(due);
      this.retryAt = 0;
      this.lastWriteFailed = false;
    } catch (error) {
      this.writeFailures++;
      this.lastWriteFailed = true;
      for (const entry of due) this.settleWritten(entry, false);
      const firstUnacked = due.find((entry) => entry.seq > this.ackedSeqValue);
      if (firstUnacked) this.unwritten = Math.min(this.unwritten, this.indexAfter(firstUnacked.seq - 1));
      this.retryAt = performance.now() + WRITE_RETRY_MS;
      await this.undoWrite(resumeAt, segmentsBefore);
      this.diskErrors.hit({
        err: error,
        dir: this.dir,
        batches: due.length,
        inMemoryBytes: this.memoryBytesValue,
      });
    }
    this.evictCached(0);
  }

  /** Writes entries from `from` on into the active segment (rolling it when full); returns how many. */
  private async writeChunk(due: Entry[], from: number): Promise<number> {
    const first = due[from]!;
    const firstBytes = RECORD_HEADER_BYTES + first.payloadBytes;
    let segment = this.active;
    if (!segment || (segment.lastSeq > 0 && segment.bytes + firstBytes > this.segmentMaxBytes)) {
      segment = await this.startSegment(first.seq);
    }
    const records: Buffer[] = [];
    let chunkBytes = 0;
    let count = 0;
    for (let i = from; i < due.length; i++) {
      const entry = due[i]!;
      const recordBytes = RECORD_HEADER_BYTES + entry.payloadBytes;
      if (count > 0 && segment.bytes + chunkBytes + recordBytes > this.segmentMaxBytes) break;
      records.push(encodeRecord(entry.payload!));
      chunkBytes += recordBytes;
      count++;
    }
    const position = segment.bytes;
    await writeFully(
      segment.handle!,
      records.length === 1 ? records[0]! : Buffer.concat(records, chunkBytes),
      position,
    );
    let offset = position;
    for (let i = from; i < from + count; i++) {
      const entry = due[i]!;
      entry.segment = segment;
      entry.offset = offset;
      offset += RECORD_HEADER_BYTES + entry.payloadBytes;
      segment.lastSeq = entry.seq;
    }
    segment.bytes += chunkBytes;
    this.diskBytesValue += chunkBytes;
    return count;
  }

  private settleWritten(entry: Entry, durable: boolean): void {
    entry.writing = false;
    const recordBytes = RECORD_HEADER_BYTES + entry.payloadBytes;
    if (entry.seq <= this.ackedSeqValue) {
      // Acked while it was being written: forget() left its accounting to this moment.
      this.unwrittenBytesValue -= entry.payloadBytes;
      this.totalBytes -= recordBytes;
      if (entry.payload) this.memoryBytesValue -= entry.payloadBytes;
      entry.payload = undefined;
      entry.segment = undefined;
      return;
    }
    if (!durable) {
      entry.segment = undefined;
      entry.offset = -1;
      return;
    }
    this.unwrittenBytesValue -= entry.payloadBytes;
    this.writtenBatches++;
    this.spooledBatchesValue++;
    this.spooledEventsValue += entry.events;
  }

  /** After a failed write: segments this write started are removed, the one it appended to cut back. */
  private async undoWrite(
    resumeAt: { segment: Segment; bytes: number; lastSeq: number } | undefined,
    segmentsBefore: number,
  ): Promise<void> {
    for (const segment of this.segments.splice(segmentsBefore)) {
      await segment.handle?.close().catch(() => {});
      segment.handle = undefined;
      this.diskBytesValue -= segment.bytes;
      await unlink(segment.path).catch(() => {});
    }
    this.active = undefined;
    if (!resumeAt) return;
    const { segment, bytes, lastSeq } = resumeAt;
    this.diskBytesValue -= segment.bytes - bytes;
    segment.bytes = bytes;
    segment.lastSeq = lastSeq;
    try {
      await segment.handle?.truncate(bytes);
      this.active = segment;
    } catch {
      // Left as it is: nothing more is appended to it, and recovery cuts a torn tail off by its checksum.
      await segment.handle?.close().catch(() => {});
      segment.handle = undefined;
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
    try {
      await writeFully(handle, SEGMENT_MAGIC, 0);
    } catch (error) {
      await handle.close().catch(() => {});
      await unlink(path).catch(() => {});
      throw error;
    }
    segment.bytes = SEGMENT_MAGIC.length;
    this.diskBytesValue += SEGMENT_MAGIC.length;
    this.segments.push(segment);
    this.active = segment;
    if (this.sync) await syncDirectory(this.dir);
    return segment;
  }

  private renewReservation(): void {
    if (this.reserving || this.closed) return;
    this.reserving = true;
    const reserved = this.lastSeqValue + SEQ_RESERVATION;
    void this.enqueue(async () => {
      try {
        await this.writeState(this.persistedAckedSeq, reserved);
        this.seqReserved = reserved;
      } finally {
        this.reserving = false;
      }
    }).catch((error: unknown) => this.diskErrors.hit({ err: error, file: join(this.dir, STATE_FILE) }));
  }

  private async persistAcks(): Promise<void> {
    const acked = this.ackedSeqValue;
    // Segments are deleted first: a deleted segment needs no state, and a crash before the
    // state write only re-sends acked batches (deduplicated by event id upstream).
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
        this.diskBytesValue -= segment.bytes;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") this.diskBytesValue -= segment.bytes;
        else {
          this.diskErrors.hit({ err: error, file: segment.path });
          kept.push(segment);
        }
      }
    }
    this.segments = kept;
    if (acked === this.persistedAckedSeq || kept.length === 0) {
      if (kept.length === 0) this.persistedAckedSeq = acked;
      return;
    }
    try {
      await this.writeState(acked, this.seqReserved);
      this.persistedAckedSeq = acked;
    } catch (error) {
      this.diskErrors.hit({ err: error, file: join(this.dir, STATE_FILE) });
    }
  }

  private async writeState(ackedSeq: number, seqReserved: number): Promise<void> {
    const path = join(this.dir, STATE_FILE);
    const temporary = `${path}.tmp`;
    const handle = await open(temporary, "w");
    try {
      await writeFully(handle, Buffer.from(`${JSON.stringify({ ackedSeq, seqReserved })}\n`), 0);
      if (this.sync) await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
    if (this.sync) await syncDirectory(this.dir);
  }

  private async readState(): Promise<{ ackedSeq: number; seqReserved: number }> {
    const path = join(this.dir, STATE_FILE);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { ackedSeq: 0, seqReserved: 0 };
      throw error;
    }
    try {
      const state = JSON.parse(text) as { ackedSeq?: unknown; seqReserved?: unknown };
      const seqReserved = isSeq(state.seqReserved) ? state.seqReserved : 0;
      if (isSeq(state.ackedSeq)) return { ackedSeq: state.ackedSeq, seqReserved };
    } catch {
      // fall through: treated as unreadable below
    }
    // Re-sending acked batches is safe (the control plane dedupes by event id); losing unacked ones is not.
    this.logger.warn({ file: path }, "spool: state file unreadable; re-sending every batch found on disk");
    return { ackedSeq: 0, seqReserved: 0 };
  }

  private async recover(): Promise<void> {
    const state = await this.readState();
    const acked = state.ackedSeq;
    this.ackedSeqValue = acked;
    this.persistedAckedSeq = acked;
    let highestSeq = Math.max(acked, state.seqReserved);
    const files = (await readdir(this.dir))
      .map((name) => ({ name, firstSeq: segmentFirstSeq(name) }))
      .filter((file): file is { name: string; firstSeq: number } => file.firstSeq !== undefined)
      .sort((a, b) => a.firstSeq - b.firstSeq);
    let recoveredBatches = 0;
    let lastRecovered = 0;
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
        const seq = readBatchSeq(record.payload);
        if (seq === undefined) {
          this.logger.warn({ segment: path, offset: record.offset }, "spool: undecodable batch skipped");
          continue;
        }
        if (seq <= segment.lastSeq || (seq <= lastRecovered && seq > acked)) {
          this.logger.warn({ segment: path, seq }, "spool: out-of-order batch skipped");
          continue;
        }
        segment.lastSeq = seq;
        highestSeq = Math.max(highestSeq, seq);
        if (seq <= acked) continue;
        lastRecovered = seq;
        const events = countEvents(record.payload);
        this.entries.push({
          seq,
          events,
          payload: undefined,
          payloadBytes: record.payload.length,
          sealedAt: 0,
          segment,
          offset: record.offset,
          writing: false,
        });
        this.totalBytes += RECORD_HEADER_BYTES + record.payload.length;
        this.pendingEventsValue += events;
        this.spooledBatchesValue++;
        this.spooledEventsValue += events;
        recoveredBatches++;
      }
      if (segment.lastSeq <= acked) {
        await unlink(path);
        continue;
      }
      this.segments.push(segment);
      this.diskBytesValue += segment.bytes;
    }
    this.unwritten = this.entries.length;
    this.lastSeqValue = highestSeq;
    if (recoveredBatches > 0) {
      this.logger.info(
        { dir: this.dir, batches: recoveredBatches, bytes: this.diskBytesValue, ackedSeq: acked },
        "spool: recovered unacked batches",
      );
    }
  }
}

function isSeq(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Events in an encoded EventBatch: the count of field-2 records, read without decoding them. */
function countEvents(payload: Uint8Array): number {
  let count = 0;
  let at = 0;
  while (at < payload.length) {
    const key = readVarint(payload, at);
    if (!key) return count;
    at = key.next;
    const wireType = key.value & 7;
    if (wireType === 0) {
      const skipped = readVarint(payload, at);
      if (!skipped) return count;
      at = skipped.next;
    } else if (wireType === 2) {
      const length = readVarint(payload, at);
      if (!length) return count;
      at = length.next + length.value;
      if (key.value >>> 3 === 2) count++;
    } else {
      return count;
    }
  }
  return count;
}

function readVarint(bytes: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = at; i < bytes.length && i < at + 8; i++) {
    const byte = bytes[i]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, next: i + 1 };
    scale *= 128;
  }
  return undefined;
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
