import { PerformanceObserver } from "node:perf_hooks";
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";

/**
 * A bound on V8's young generation, set at run time. Under load V8 doubles the new space
 * after scavenges until it reaches its maximum (2 × 16 MiB): 32 MB of RSS that the proxy does
 * not need, and that stays committed after the load. `--max-semi-space-size` bounds it, but
 * only on the command line; the growth factor, though, is read each time V8 grows the space,
 * so after each scavenge that left the new space at the bound or above, growth is turned off
 * (`--semi-space-growth-factor=1`), and on again should V8 shrink it below the bound. A bound
 * of 8 MiB (4 MiB semi-spaces) keeps what short-lived objects a request makes out of the old
 * generation; at 4 MiB the old one filled with promoted garbage instead.
 *
 * Not started when the process was given a semi-space flag of its own (NODE_OPTIONS or the
 * command line): that one decides.
 */
export interface YoungGenerationBound {
  stop(): void;
}

export const DEFAULT_YOUNG_GENERATION_BYTES = 8 * 1024 * 1024;
/** V8's own growth factor, restored while the new space is below the bound. */
const V8_GROWTH_FACTOR = 2;

let users = 0;
let observer: PerformanceObserver | undefined;
let bound = DEFAULT_YOUNG_GENERATION_BYTES;
let growing = true;

function newSpaceBytes(): number {
  for (const space of getHeapSpaceStatistics()) if (space.space_name === "new_space") return space.space_size;
  return 0;
}

function check(): void {
  const grow = newSpaceBytes() < bound;
  if (grow === growing) return;
  growing = grow;
  setFlagsFromString(`--semi-space-growth-factor=${grow ? V8_GROWTH_FACTOR : 1}`);
}

/** Whether this process was told its young generation's size by a flag. */
export function semiSpaceFlagGiven(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions = process.env.NODE_OPTIONS ?? "",
): boolean {
  return [...execArgv, nodeOptions].some((arg) => /semi[-_]space/.test(arg));
}

/**
 * Bounds the new space at `bytes` (default 8 MiB) for as long as any caller holds it (one
 * observer per process, however many sidecars it runs). No-op when a flag already decides.
 */
export function boundYoungGeneration(bytes: number = DEFAULT_YOUNG_GENERATION_BYTES): YoungGenerationBound {
  if (semiSpaceFlagGiven() || !(bytes > 0)) return { stop() {} };
  try {
    if (users === 0) {
      bound = bytes;
      growing = true;
      observer = new PerformanceObserver(check);
      observer.observe({ entryTypes: ["gc"] });
      check();
    }
    users++;
  } catch {
    // A runtime that refuses the flag or the observer: V8's own sizing, as before.
    return { stop() {} };
  }
  let stopped = false;
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      users--;
      if (users > 0) return;
      observer?.disconnect();
      observer = undefined;
      if (!growing) setFlagsFromString(`--semi-space-growth-factor=${V8_GROWTH_FACTOR}`);
      growing = true;
    },
  };
}
