import { availableParallelism } from "node:os";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { MessageChannel } from "node:worker_threads";
import { Piscina } from "piscina";
import type { BatchResults, DeliveryBatch, DeliveryBatchMessage, DeliveryResult, DeliveryTask } from "./task.js";

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
  /**
   * A batch of attempts in one worker task. `onResult` is called once per item, as soon as
   * that attempt ends (not when the batch does). If the pool fails, every item not yet
   * reported gets a network-error result naming the failure, so each is retried. Resolves
   * when every item has been reported, with the pool's failure if there was one; never rejects.
   */
  runBatch(batch: DeliveryBatch, onResult: (index: number, result: DeliveryResult) => void): Promise<Error | undefined>;
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
  const piscina = new Piscina<DeliveryTask | DeliveryBatch | DeliveryBatchMessage, DeliveryResult | number>({
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
        return (await piscina.run(task)) as DeliveryResult;
      } catch (err) {
        throw poolFailure(err, broken);
      }
    },
    runBatch(batch, onResult) {
      const reported = new Uint8Array(batch.items.length);
      let left = batch.items.length;
      if (left === 0) return Promise.resolve(undefined);
      const failRest = (err: Error) => {
        const result: DeliveryResult = {
          statusCode: 0,
          latencyMs: 0,
          error: err.message,
          responseBody: "",
          timedOut: false,
          networkError: true,
          refused: false,
        };
        for (let i = 0; i < reported.length; i++) if (reported[i] === 0) onResult(i, result);
        left = 0;
      };
      if (closed) {
        const failure = new Error("delivery pool is closed");
        failRest(failure);
        return Promise.resolve(failure);
      }
      if (batch.items.length === 1) {
        // One attempt (deliveries one at a time, at low rates): its result is the task's
        // own, without a result port to make and transfer.
        return piscina.run(batch, { name: "deliverOne" }).then(
          (result) => {
            onResult(0, result as DeliveryResult);
            return undefined;
          },
          (err: unknown) => {
            const failure = poolFailure(err, broken);
            failRest(failure);
            return failure;
          },
        );
      }
      return new Promise<Error | undefined>((resolve) => {
        const { port1, port2 } = new MessageChannel();
        const finish = (failure?: Error) => {
          port1.close();
          resolve(failure);
        };
        port1.on("message", (results: BatchResults) => {
          for (const [index, result] of results) {
            // A worker sends each index once; the check keeps a confused one from double-recording.
            if (index >= reported.length || reported[index] !== 0) continue;
            reported[index] = 1;
            left--;
            onResult(index, result);
          }
          if (left === 0) finish();
        });
        const message: DeliveryBatchMessage = { ...batch, results: port2 };
        // The task resolving says nothing about the port: the two channels are not ordered,
        // so completion is counted from results. A failed task has no more to say, though:
        // whatever was not reported yet is retried (at-least-once; receivers dedupe by id).
        piscina.run(message, { name: "deliverBatch", transferList: [port2] }).catch((err: unknown) => {
          if (left === 0) return;
          const failure = poolFailure(err, broken);
          failRest(failure);
          finish(failure);
        });
      });
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

function poolFailure(err: unknown, broken: Error | undefined): Error {
  const cause = err instanceof Error ? err : broken;
  return new Error(`delivery worker failed: ${cause?.message ?? String(err)}`, { cause });
}

function workerLocation(workerUrl: URL | undefined): { filename: string; execArgv: string[] } {
  const url = workerUrl ?? new URL(import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js", import.meta.url);
  // Node 20 worker threads cannot load .ts; from the sources (vitest, tsx) the worker
  // imports tsx's loader first. The built dist/ runs plain .js.
  if (!url.pathname.endsWith(".ts")) return { filename: url.href, execArgv: [] };
  const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  return { filename: url.href, execArgv: ["--import", tsxLoader] };
}
