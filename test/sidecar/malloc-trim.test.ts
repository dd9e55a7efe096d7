import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { startIdleCollection } from "../../sidecar/proxy/idle-gc.js";
import { loadNativeMemory } from "../../sidecar/proxy/malloc-trim.js";

// The module the build compiles (scripts/build-sidecar.mjs) and the loader as `aigw sidecar`
// runs it (built, in a fresh process: a test worker's malloc heaps are not a sidecar's).
const ADDON = fileURLToPath(new URL("../../dist/sidecar/malloc-trim.node", import.meta.url));
const LOADER = fileURLToPath(new URL("../../dist/sidecar/proxy/malloc-trim.js", import.meta.url));
const linux = process.platform === "linux";

describe.skipIf(!linux)("malloc_trim after the idle collection", () => {
  it("is built, and found from the built loader and from source", () => {
    // CI builds on Linux with a C compiler: a missing module there is a broken build.
    if (process.env.CI) expect(existsSync(ADDON)).toBe(true);
    if (!existsSync(ADDON)) return;
    expect(loadNativeMemory([ADDON])?.mallocTrim).toBeTypeOf("function");
    expect(loadNativeMemory()?.mallocTrim).toBeTypeOf("function");
  });

  it("gives freed pages in the middle of malloc's heap back to the kernel (a collection alone does not)", () => {
    if (!existsSync(ADDON)) return;
    // 200 MB of 5 kB buffers (malloc'd outside V8's heap), one in 20 kept: the freed ones lie
    // between kept ones, where glibc keeps them.
    const script = `
      const { loadNativeMemory } = await import(${JSON.stringify(LOADER)});
      const trim = loadNativeMemory().mallocTrim;
      const settle = async () => { for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setTimeout(r, 200)); } };
      const kept = [];
      let dropped = [];
      for (let i = 0; i < 40000; i++) {
        const b = Buffer.alloc(5000, i);
        if (i % 20 === 0) kept.push(b); else dropped.push(b);
      }
      dropped = [];
      await settle();
      const collected = process.memoryUsage.rss();
      await settle();
      const collectedAgain = process.memoryUsage.rss();
      const trimmed = trim();
      const after = process.memoryUsage.rss();
      console.log(JSON.stringify({ collected, collectedAgain, trimmed, after, kept: kept.length }));
    `;
    const run = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, NODE_OPTIONS: "" },
      timeout: 60_000,
    });
    expect(run.stderr).toBe("");
    const r = JSON.parse(run.stdout) as {
      collected: number;
      collectedAgain: number;
      trimmed: boolean;
      after: number;
      kept: number;
    };
    const mb = 1024 * 1024;
    expect(r.kept).toBe(2000);
    // Collections leave the freed buffers' pages resident...
    expect(r.collectedAgain).toBeGreaterThan(r.collected - 20 * mb);
    expect(r.collectedAgain).toBeGreaterThan(150 * mb);
    // ...malloc_trim gives them back.
    expect(r.trimmed).toBe(true);
    expect(r.collectedAgain - r.after).toBeGreaterThan(100 * mb);
  });

  it("ignores a file that is not the module, and a path that is not there", () => {
    const dir = mkdtempSync(join(tmpdir(), "aigw-malloc-trim-"));
    try {
      const garbage = join(dir, "malloc-trim.node");
      writeFileSync(garbage, "not a shared object\n");
      expect(loadNativeMemory([garbage, join(dir, "missing.node")])).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs after the idle collection's gc, and says whether it gave memory back", async () => {
    let requests = 0;
    const calls: string[] = [];
    const collected: Array<boolean | undefined> = [];
    const idle = startIdleCollection({
      activity: () => requests,
      idleMs: 100,
      minActivity: 10,
      checkMs: 20,
      mallocTrim: () => {
        calls.push("trim");
        return true;
      },
      onCollect: (info) => collected.push(info.trimmed),
    });
    try {
      requests += 50;
      const deadline = Date.now() + 10_000;
      while (collected.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(calls).toEqual(["trim"]);
      expect(collected).toEqual([true]);
    } finally {
      idle.stop();
    }
  });

  it("makes V8's low-memory collection: the young generation a load grew shrinks back, which gc() leaves grown", () => {
    if (!existsSync(ADDON)) return;
    // A load's worth of short-lived objects with some survivors grows the young generation;
    // then a gc(), then the low-memory collection (in a fresh process: V8's defaults).
    const script = `
      import { getHeapSpaceStatistics } from "node:v8";
      const { loadNativeMemory } = await import(${JSON.stringify(LOADER)});
      const native = loadNativeMemory();
      const young = () => getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size;
      let keep = [];
      for (let round = 0; round < 200; round++) {
        const batch = [];
        for (let i = 0; i < 5000; i++) batch.push({ i, s: "x" + i });
        if (round % 10 === 0) keep.push(batch);
      }
      keep = null;
      const grown = young();
      gc();
      const afterGc = young();
      const rssAfterGc = process.memoryUsage.rss();
      const made = native.lowMemoryNotification();
      const afterLowMemory = young();
      const rssAfterLowMemory = process.memoryUsage.rss();
      console.log(JSON.stringify({ made, grown, afterGc, afterLowMemory, rssAfterGc, rssAfterLowMemory }));
    `;
    const run = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, NODE_OPTIONS: "" },
      timeout: 60_000,
    });
    expect(run.stderr).toBe("");
    const r = JSON.parse(run.stdout) as Record<string, number | boolean>;
    const mb = 1024 * 1024;
    expect(r.made).toBe(true);
    expect(r.grown as number).toBeGreaterThanOrEqual(8 * mb);
    // gc() leaves the young generation as the load left it...
    expect(r.afterGc).toBe(r.grown);
    // ...the low-memory collection shrinks it, and the RSS with it.
    expect(r.afterLowMemory as number).toBeLessThanOrEqual((r.grown as number) / 4);
    expect((r.rssAfterGc as number) - (r.rssAfterLowMemory as number)).toBeGreaterThan(4 * mb);
  });

  it("loads both calls from the module, and neither from a file that is not it", () => {
    if (!existsSync(ADDON)) return;
    const native = loadNativeMemory([ADDON]);
    expect(native?.mallocTrim).toBeTypeOf("function");
    expect(native?.lowMemoryNotification).toBeTypeOf("function");
    expect(loadNativeMemory(["/nonexistent/malloc-trim.node"])).toBeUndefined();
  });

  it("fixes malloc's trim threshold, unless MALLOC_TRIM_THRESHOLD_ is set; without the module, says so", () => {
    if (!existsSync(ADDON)) return;
    // In a fresh process: glibc takes the setting (mallopt says so), and refuses nonsense.
    const script = `
      const { loadNativeMemory, setMallocTrimThreshold } = await import(${JSON.stringify(LOADER)});
      const native = loadNativeMemory();
      console.log(JSON.stringify({
        set: setMallocTrimThreshold(native, 128 * 1024, {}),
        env: setMallocTrimThreshold(native, 128 * 1024, { MALLOC_TRIM_THRESHOLD_: "1048576" }),
        refused: native.setTrimThreshold(-1),
        missing: setMallocTrimThreshold(undefined, 128 * 1024, {}),
      }));
    `;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, NODE_OPTIONS: "" },
      timeout: 60_000,
    });
    expect(run.stderr).toBe("");
    expect(JSON.parse(run.stdout)).toEqual({ set: "set", env: "env", refused: false, missing: "unavailable" });
  });
});
