import { availableParallelism } from "node:os";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { Piscina } from "piscina";
import type { DeliveryResult, DeliveryTask } from "./task.js";

export interface DeliveryPoolOptions {
  /**
   * Worker threads; default cores − 1 (1..4), leaving a core to the main thread's store
   * work. Each runs many requests at once (I/O bound): on 2 cores one worker delivers
   * more than two, which mostly contend with the main thread.
   */
  maxThreads?: number;
  /** Requests one worker runs at once; the scheduler's concurrency cap is the real bound. */
  concurrentTasksPerWorker: number;
  /** The worker module; default this folder's worker.ts / worker.js. Tests point it elsewhere. */
  workerUrl?: URL;
}

export interface DeliveryPool {
  /** One attempt in a worker thread. Rejects only when the pool itself is broken or closed. */
  run(task: DeliveryTask): Promise<DeliveryResult>;
  readonly threads: number;
  /** Tasks waiting for a worker. */
  readonly queued: number;
  close(): Promise<void>;
}

/**
 * The piscina pool that makes delivery requests off the main thread. minThreads is at least
 * 1: with 0, a worker that fails to load leaves run() pending forever, whereas a started
 * worker's load error rejects the task.
 */
export function createDeliveryPool(options: DeliveryPoolOptions): DeliveryPool {
  const maxThreads = Math.max(1, options.maxThreads ?? Math.min(4, availableParallelism() - 1));
  const { filename, execArgv } = workerLocation(options.workerUrl);
  const piscina = new Piscina<DeliveryTask, DeliveryResult>({
    filename,
    execArgv,
    minThreads: 1,
    maxThreads,
    concurrentTasksPerWorker: Math.max(1, options.concurrentTasksPerWorker),
    idleTimeout: 60_000,
    // With the default "sync" atomics an idle worker blocks in Atomics.wait, freezing its
    // event loop: keep-alive sockets and their timers stop being serviced between tasks.
    atomics: "disabled",
  });
  // Without a listener, an 'error' event (a worker dying outside a task) would throw on
  // the main thread and take the control plane down with it.
  let broken: Error | undefined;
  piscina.on("error", (err: unknown) => {
    broken = err instanceof Error ? err : new Error(String(err));
  });
  let closed = false;
  return {
    async run(task) {
      if (closed) throw new Error("delivery pool is closed");
      try {
        return await piscina.run(task);
      } catch (err) {
        const cause = err instanceof Error ? err : broken;
        throw new Error(`delivery worker failed: ${cause?.message ?? String(err)}`, { cause });
      }
    },
    get threads() {
      return piscina.threads.length;
    },
    get queued() {
      return piscina.queueSize;
    },
    async close() {
      if (closed) return;
      closed = true;
      await piscina.destroy();
    },
  };
}

function workerLocation(workerUrl: URL | undefined): { filename: string; execArgv: string[] } {
  const url = workerUrl ?? new URL(import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js", import.meta.url);
  // Node 20 worker threads cannot load .ts; from the sources (vitest, tsx) the worker
  // imports tsx's loader first. The built dist/ runs plain .js.
  if (!url.pathname.endsWith(".ts")) return { filename: url.href, execArgv: [] };
  const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  return { filename: url.href, execArgv: ["--import", tsxLoader] };
}
