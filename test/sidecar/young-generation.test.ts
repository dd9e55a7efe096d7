import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { semiSpaceFlagGiven } from "../../sidecar/proxy/young-generation.js";
import { runSidecar } from "../../sidecar/run.js";

// Each case runs in a fresh node process (the built module, as `aigw sidecar` loads it): the
// young generation's size is the process's, and a test worker's heap has grown already.
const MODULE = fileURLToPath(new URL("../../dist/sidecar/proxy/young-generation.js", import.meta.url));

/** Allocates like a busy proxy (short-lived objects, a few kept for a while) and prints the largest new space seen, in MiB. */
function largestNewSpace(bound: number | undefined, nodeArgs: string[] = []): number {
  const script = `
    import { getHeapSpaceStatistics } from "node:v8";
    const { boundYoungGeneration } = await import(${JSON.stringify(MODULE)});
    const held = ${bound === undefined ? "undefined" : `boundYoungGeneration(${bound})`};
    const newSpace = () => getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size;
    let largest = newSpace();
    const kept = [];
    for (let round = 0; round < 60; round++) {
      for (let i = 0; i < 20000; i++) {
        const o = { i, text: "request " + i, parts: [i, i + 1] };
        if (i % 200 === 0) kept.push(o);
      }
      if (kept.length > 3000) kept.splice(0, 1500);
      // A turn of the event loop between rounds, as between requests: the gc observer runs.
      await new Promise((resolve) => setImmediate(resolve));
      largest = Math.max(largest, newSpace());
    }
    held?.stop();
    console.log(largest / 1048576);
  `;
  const run = spawnSync(process.execPath, [...nodeArgs, "--input-type=module", "-e", script], {
    encoding: "utf8",
    env: { ...process.env, NODE_OPTIONS: "" },
    timeout: 60_000,
  });
  expect(run.stderr).toBe("");
  return Number(run.stdout.trim());
}

describe("young generation bound", () => {
  it("keeps the new space at the bound under allocation that grows it past the bound without one", () => {
    const unbounded = largestNewSpace(undefined);
    const bounded = largestNewSpace(4 * 1024 * 1024);
    expect(unbounded).toBeGreaterThan(4);
    expect(bounded).toBeLessThanOrEqual(4);
  });

  it("leaves the sizing to a semi-space flag the process was given", () => {
    expect(semiSpaceFlagGiven(["--max-semi-space-size=2"], "")).toBe(true);
    expect(semiSpaceFlagGiven([], "--max-old-space-size=512 --max_semi_space_size=4")).toBe(true);
    expect(semiSpaceFlagGiven(["--cpu-prof"], "--max-old-space-size=512")).toBe(false);
    // Given one, the bound does nothing: the flag's 16 MiB semi-spaces grow as V8 likes.
    expect(largestNewSpace(1024 * 1024, ["--max-semi-space-size=16"])).toBeGreaterThan(1);
  });

  it("refuses a bound that is not a size, naming the variable, before it starts anything", async () => {
    const before = process.env.AIGW_SIDECAR_YOUNG_GENERATION_MB;
    try {
      for (const value of ["lots", "-1", "8MB", "2048"]) {
        process.env.AIGW_SIDECAR_YOUNG_GENERATION_MB = value;
        await expect(
          runSidecar({ listen: "127.0.0.1:0", adminListen: "127.0.0.1:0", controlPlane: "http://127.0.0.1:9" }),
        ).rejects.toThrow(`AIGW_SIDECAR_YOUNG_GENERATION_MB: ${JSON.stringify(value)} is not a size in MiB`);
      }
    } finally {
      if (before === undefined) delete process.env.AIGW_SIDECAR_YOUNG_GENERATION_MB;
      else process.env.AIGW_SIDECAR_YOUNG_GENERATION_MB = before;
    }
  });
});
