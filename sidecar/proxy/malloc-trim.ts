import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * glibc's malloc_trim(0), from the Node-API module sidecar/native/malloc-trim.c that the
 * build compiles to dist/sidecar/malloc-trim.node. After a load, the sidecar's freed native
 * memory (HTTP/2 frames, buffers, compiler zones) stays in malloc's heaps wherever it is not
 * at a heap's top: ~14 MB of RSS that no garbage collection gives back. The idle-time
 * collection (idle-gc.ts) calls this after its gc(). Undefined where the module was not built
 * (no C compiler, not Linux) or cannot load (no glibc): the sidecar runs as before.
 */
export type MallocTrim = () => boolean;

/** Where the module is, seen from the bundle (dist/sidecar/), this file built (dist/sidecar/proxy/) or its source (sidecar/proxy/). */
const CANDIDATES = ["./malloc-trim.node", "../malloc-trim.node", "../../dist/sidecar/malloc-trim.node"];

export function loadMallocTrim(paths: readonly string[] = CANDIDATES.map(fromHere)): MallocTrim | undefined {
  for (const path of paths) {
    if (!existsSync(path)) continue;
    try {
      const module = { exports: {} as { mallocTrim?: unknown } };
      process.dlopen(module, path);
      const trim = module.exports.mallocTrim;
      if (typeof trim === "function") return trim as MallocTrim;
    } catch {
      // built for another libc or machine: without it
    }
  }
  return undefined;
}

/**
 * The trim, loaded when first called (a sidecar that never sees a load never maps the
 * module); false, and `unavailable` told once, where it cannot load.
 */
export function mallocTrimOnFirstUse(unavailable: () => void = () => {}): MallocTrim {
  let trim: MallocTrim | undefined | null = null;
  return () => {
    if (trim === null) {
      trim = loadMallocTrim();
      if (trim === undefined) unavailable();
    }
    return trim?.() ?? false;
  };
}

function fromHere(relative: string): string {
  return fileURLToPath(new URL(relative, import.meta.url));
}
