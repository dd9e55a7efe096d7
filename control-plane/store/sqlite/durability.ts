import { open, type FileHandle } from "node:fs/promises";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../../../common/logger.js";

/**
 * Durability for the SQLite store without a disk flush on the main thread.
 *
 * Commits run with synchronous=NORMAL: in WAL mode a commit is then written to the WAL
 * file but not flushed, so a process crash loses nothing and only power loss could. What
 * must survive power loss (ingest, before its ack; endpoint and key changes) is made so by
 * `WalSync.sync()`: an fdatasync of the WAL file on libuv's thread pool, after the commit.
 * Syncs coalesce: commits that land while one is in flight share the next one, so a burst
 * of sidecar batches costs one flush, and the event loop serves acks, deliveries and
 * /healthz meanwhile (the flush was the control plane's longest synchronous stretch).
 *
 * Checkpoints (copying the WAL into the database file, which flushes that file) run on a
 * second connection in a worker thread, not as SQLite's automatic checkpoint inside a
 * commit on the main thread.
 */

export class WalSync {
  #handle: FileHandle | undefined;
  #inFlight: Promise<void> | undefined;
  /** Waiters for the sync after the one in flight (their commits may be newer than it). */
  #next: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | undefined;
  #closed = false;
  syncs = 0;

  constructor(private readonly walPath: string) {}

  /** Resolves once everything committed before the call is on disk. */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`${this.walPath}: store is closed`));
    if (this.#inFlight === undefined) {
      this.#inFlight = this.#run();
      return this.#inFlight;
    }
    if (this.#next === undefined) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.#next = { promise, resolve, reject };
    }
    return this.#next.promise;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#inFlight?.catch(() => {});
    await this.#next?.promise.catch(() => {});
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close();
  }

  async #run(): Promise<void> {
    try {
      this.#handle ??= await open(this.walPath, "r");
      await this.#handle.datasync();
      this.syncs++;
    } finally {
      this.#inFlight = undefined;
      const next = this.#next;
      this.#next = undefined;
      if (next) {
        this.#inFlight = this.#run();
        this.#inFlight.then(next.resolve, next.reject);
      }
    }
  }
}

export interface CheckpointerOptions {
  dbPath: string;
  logger?: Logger;
  /** Check the WAL's size this often; default 1 s. */
  everyMs?: number;
  /** Checkpoint once the WAL is this big; default 4 MiB (and at least every 30 s with writes). */
  walBytes?: number;
}

// A thread's own connection: PASSIVE checkpoints never block the main connection's writers.
const CHECKPOINT_THREAD = `
const { workerData, parentPort } = require("node:worker_threads");
const { statSync } = require("node:fs");
const Database = require(workerData.driver);
const db = new Database(workerData.dbPath);
db.pragma("busy_timeout = 5000");
let lastAt = Date.now();
const tick = () => {
  let size = 0;
  try { size = statSync(workerData.dbPath + "-wal").size; } catch {}
  if (size === 0) return;
  if (size < workerData.walBytes && Date.now() - lastAt < 30000) return;
  try {
    const [r] = db.pragma("wal_checkpoint(PASSIVE)");
    lastAt = Date.now();
    parentPort.postMessage({ ok: true, busy: r.busy, log: r.log, checkpointed: r.checkpointed, walBytes: size });
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String(err && err.message || err) });
  }
};
const timer = setInterval(tick, workerData.everyMs);
parentPort.on("message", (m) => { if (m === "stop") { clearInterval(timer); tick(); db.close(); process.exit(0); } });
`;

/** Runs SQLite checkpoints in a worker thread while the store is open. */
export class Checkpointer {
  #worker: Worker | undefined;
  checkpoints = 0;
  lastError = "";

  constructor(private readonly options: CheckpointerOptions) {}

  start(): void {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    this.#worker = new Worker(CHECKPOINT_THREAD, {
      eval: true,
      workerData: {
        driver,
        dbPath: this.options.dbPath,
        everyMs: this.options.everyMs ?? 1_000,
        walBytes: this.options.walBytes ?? 4 * 1024 * 1024,
      },
    });
    this.#worker.unref();
    this.#worker.on("message", (m: { ok: boolean; error?: string }) => {
      if (m.ok) this.checkpoints++;
      else if (m.error !== this.lastError) {
        this.lastError = m.error ?? "";
        this.options.logger?.warn({ error: m.error }, "SQLite checkpoint failed; retrying");
      }
    });
    this.#worker.on("error", (err) => this.options.logger?.error({ err }, "SQLite checkpoint thread failed"));
  }

  async stop(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    worker.postMessage("stop");
    const timer = setTimeout(() => void worker.terminate(), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
