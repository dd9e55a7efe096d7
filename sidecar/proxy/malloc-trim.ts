import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The sidecar's native memory calls, from the Node-API module sidecar/native/malloc-trim.c
 * that the build compiles to dist/sidecar/malloc-trim.node:
 *
 * - `lowMemoryNotification`: node::LowMemoryNotification(), V8's collection for a system low
 *   on memory (full collections until nothing more is freed, the young generation shrunk to
 *   its starting size, free pages unmapped). After a load the young generation stays at the
 *   size the load grew it to (8 MB, young-generation.ts) through any number of gc() calls.
 * - `mallocTrim`: glibc's malloc_trim(0). After a load, the sidecar's freed native memory
 *   (HTTP/2 frames, buffers, compiler zones) stays in malloc's heaps wherever it is not at a
 *   heap's top: ~14 MB of RSS that no garbage collection gives back.
 * - `setTrimThreshold`: mallopt(M_TRIM_THRESHOLD), see setMallocTrimThreshold.
 *
 * The idle-time collection (idle-gc.ts) makes the first two. Undefined where the module was
 * not built (no C compiler, not Linux) or cannot load (no glibc): the sidecar collects with
 * gc() alone.
 */
export type MallocTrim = () => boolean;

export interface NativeMemory {
  /** malloc_trim(0): true when memory went back to the kernel. */
  mallocTrim: MallocTrim;
  /** node::LowMemoryNotification(): true when node had it (and the collection was made). */
  lowMemoryNotification: () => boolean;
  /** mallopt(M_TRIM_THRESHOLD, bytes): true when glibc took it. */
  setTrimThreshold: (bytes: number) => boolean;
}

/** Where the module is, seen from the bundle (dist/sidecar/), this file built (dist/sidecar/proxy/) or its source (sidecar/proxy/). */
const CANDIDATES = ["./malloc-trim.node", "../malloc-trim.node", "../../dist/sidecar/malloc-trim.node"];

export function loadNativeMemory(paths: readonly string[] = CANDIDATES.map(fromHere)): NativeMemory | undefined {
  for (const path of paths) {
    if (!existsSync(path)) continue;
    try {
      const module = {
        exports: {} as { mallocTrim?: unknown; lowMemoryNotification?: unknown; setTrimThreshold?: unknown },
      };
      process.dlopen(module, path);
      const { mallocTrim, lowMemoryNotification, setTrimThreshold } = module.exports;
      if (typeof mallocTrim !== "function") continue;
      // A module built before a call existed: that call says false (gc() collects instead).
      return {
        mallocTrim: mallocTrim as MallocTrim,
        lowMemoryNotification:
          typeof lowMemoryNotification === "function" ? (lowMemoryNotification as () => boolean) : () => false,
        setTrimThreshold:
          typeof setTrimThreshold === "function" ? (setTrimThreshold as (bytes: number) => boolean) : () => false,
      };
    } catch {
      // built for another libc or machine: without it
    }
  }
  return undefined;
}

/** glibc's own starting trim threshold (M_TRIM_THRESHOLD), kept fixed from the sidecar's start. */
export const SIDECAR_TRIM_THRESHOLD_BYTES = 128 * 1024;

/**
 * Keeps malloc's trim threshold at `bytes` for the process: a free top of an arena larger
 * than it goes back to the kernel as memory is freed, in every thread's arena. glibc raises
 * the threshold by itself, up to 64 MB, whenever a chunk it had mmap'd is freed, as under a
 * load; the arenas of V8's helper threads then kept ~1 MB each resident after the load
 * (their tops, which malloc_trim leaves alone): 4.5 MB of thread arenas 60 s after a load,
 * 0.6–0.9 MB with the threshold fixed. `env` when MALLOC_TRIM_THRESHOLD_ is set (glibc's
 * own setting decides), `unavailable` without the module.
 */
export function setMallocTrimThreshold(
  native: NativeMemory | undefined,
  bytes: number = SIDECAR_TRIM_THRESHOLD_BYTES,
  env: NodeJS.ProcessEnv = process.env,
): "set" | "env" | "unavailable" {
  if (env.MALLOC_TRIM_THRESHOLD_ !== undefined && env.MALLOC_TRIM_THRESHOLD_ !== "") return "env";
  return native?.setTrimThreshold(bytes) === true ? "set" : "unavailable";
}

function fromHere(relative: string): string {
  return fileURLToPath(new URL(relative, import.meta.url));
}
