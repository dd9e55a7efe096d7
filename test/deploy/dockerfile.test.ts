import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../support/processes.js";

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string): Instruction[] {
  const joined = text
    .split("\n")
    .filter((l) => !/^\s*#/.test(l))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .map((l) => {
      const [op = "", ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}

// No Docker engine runs here: the image's build is checked by what can be — the package
// steps it runs are the ones test/deploy/package.test.ts runs on every CI run (pack, npm ci
// --omit=dev from the tarball, the CLI from the installed files), and this file holds the
// Dockerfile to the rest: Node 24, multi-stage, not root, a healthcheck, aigw as entry point.
describe("Dockerfile", () => {
  const text = readFileSync(join(REPO_ROOT, "Dockerfile"), "utf8");
  const all = instructions(text);
  const stages: Instruction[][] = [];
  for (const i of all) {
    if (i.op === "FROM") stages.push([]);
    stages.at(-1)?.push(i);
  }
  const runtime = stages.at(-1) ?? [];
  const runs = all.filter((i) => i.op === "RUN").map((i) => i.args);

  it("builds in stages on Node 24 and runs on a slim Node 24 image", () => {
    expect(all.find((i) => i.op === "ARG")?.args).toBe("NODE_VERSION=24");
    expect(stages.length).toBeGreaterThanOrEqual(3);
    for (const stage of stages) expect(stage[0]?.args).toMatch(/^node:\$\{NODE_VERSION\}-bookworm/);
    expect(runtime[0]?.args).toMatch(/^node:\$\{NODE_VERSION\}-bookworm-slim$/);
    const engines = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { engines: { node: string } })
      .engines.node;
    expect(engines).toContain("^24");
  });

  it("installs the packed tarball with production dependencies only, as the package test does", () => {
    expect(runs.some((r) => r.includes("npm pack --ignore-scripts"))).toBe(true);
    expect(runs.some((r) => r.includes("npm ci --omit=dev --ignore-scripts"))).toBe(true);
    expect(runs.some((r) => r.includes("npm rebuild better-sqlite3"))).toBe(true);
    const packageTest = readFileSync(join(REPO_ROOT, "test/deploy/package.test.ts"), "utf8");
    for (const step of ['"pack", "--ignore-scripts"', '"ci", "--omit=dev", "--ignore-scripts"']) {
      expect(packageTest).toContain(step);
    }
    // Nothing but the installed package reaches the runtime image.
    expect(runtime.filter((i) => i.op === "COPY").map((i) => i.args)).toEqual(["--from=install /opt/aigw /opt/aigw"]);
  });

  it("runs as a non-root user, with a healthcheck and aigw as its entry point", () => {
    const user = runtime.filter((i) => i.op === "USER").at(-1)?.args;
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(runtime.some((i) => i.op === "HEALTHCHECK" && i.args.includes("AIGW_HEALTH_URL"))).toBe(true);
    expect(runtime.find((i) => i.op === "ENV" && i.args.startsWith("AIGW_HEALTH_URL="))?.args).toBe(
      "AIGW_HEALTH_URL=http://127.0.0.1:7080/healthz",
    );
    expect(runtime.find((i) => i.op === "ENTRYPOINT")?.args).toBe('["aigw"]');
    expect(runtime.find((i) => i.op === "EXPOSE")?.args.split(" ")).toEqual(["7070", "7080", "8080", "8081"]);
    expect(text).toContain("ln -s /opt/aigw/bin/aigw.js /usr/local/bin/aigw");
  });
});
