import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { MallocTrim } from "./malloc-trim.js";

/**
 * A full collection once the proxy has gone quiet after a busy period. Under load the old
 * generation fills with garbage promoted from the young one; an idle sidecar allocates almost
 * nothing, so V8 never collects it and the RSS stays at its peak. One `gc()` per busy → idle
 * transition gives it back. It runs from an unref'd interval, never on the request path, and
 * only after `idleMs` without activity (a request arriving during it waits for it: tens of ms).
 * The collection is V8's low-memory one where `lowMemoryNotification` makes it (it also
 * shrinks the young generation the load grew, which gc() leaves as it is), else gc(). With
 * `mallocTrim`, malloc's freed pages go back to the kernel right after it (malloc-trim.ts).
 */
export interface IdleCollectionOptions {
  /** Work done so far: requests served, events sent (any counter that only grows with work). */
  activity: () => number;
  /** Quiet this long after traffic → collect. Default 5 s. */
  idleMs?: number;
  /** At least this much activity since the last collection make a busy period. Default 1,000. */
  minActivity?: number;
  /** How often the counter is read. Default 1 s. */
  checkMs?: number;
  /** Makes V8's low-memory collection; false where it cannot (then gc() collects). malloc-trim.ts. */
  lowMemoryNotification?: (() => boolean) | undefined;
  /** Called after each collection to give malloc's free pages back (malloc-trim.ts). */
  mallocTrim?: MallocTrim | undefined;
  /** Told of each collection (for a debug log); `trimmed` when mallocTrim gave memory back. */
  onCollect?: (info: {
    activity: number;
    /** "low-memory" (V8's low-memory collection) or "gc". */
    collection: "low-memory" | "gc";
    ms: number;
    rssBefore: number;
    rssAfter: number;
    trimmed: boolean | undefined;
  }) => void;
}

export interface IdleCollection {
  stop(): void;
}

/** The V8 gc() function, exposed at run time; undefined if this V8 refuses. */
function exposedGc(): (() => void) | undefined {
  try {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as unknown;
    return typeof gc === "function" ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

export function startIdleCollection(options: IdleCollectionOptions): IdleCollection {
  // gc() is exposed only where the low-memory collection is not to be had.
  let gc: (() => void) | undefined | null = options.lowMemoryNotification ? null : exposedGc();
  if (gc === undefined) return { stop() {} };
  const idleMs = options.idleMs ?? 5_000;
  const minActivity = options.minActivity ?? 1_000;
  let lastCount = options.activity();
  let countAtCollection = lastCount;
  let lastChangeAt = Date.now();
  const timer = setInterval(() => {
    const count = options.activity();
    const now = Date.now();
    if (count !== lastCount) {
      lastCount = count;
      lastChangeAt = now;
      return;
    }
    if (now - lastChangeAt < idleMs || count - countAtCollection < minActivity) return;
    countAtCollection = count;
    const rssBefore = process.memoryUsage.rss();
    const startedAt = performance.now();
    let collection: "low-memory" | "gc" = "low-memory";
    if (options.lowMemoryNotification?.() !== true) {
      if (gc === null) gc = exposedGc();
      // Neither collection is to be had in this runtime: nothing to do, nor to report.
      if (gc === undefined) return;
      gc();
      collection = "gc";
    }
    const trimmed = options.mallocTrim?.();
    options.onCollect?.({
      activity: count,
      collection,
      ms: performance.now() - startedAt,
      rssBefore,
      rssAfter: process.memoryUsage.rss(),
      trimmed,
    });
  }, options.checkMs ?? 1_000);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
    },
  };
}
