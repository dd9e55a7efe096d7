import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AigwProcess, REPO_ROOT, runAigwAt } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

const run = promisify(execFile);

// The package as the Dockerfile installs it: `npm pack`, the tarball unpacked with the
// lockfile beside it, `npm ci --omit=dev --ignore-scripts`, better-sqlite3's addon built.
// Then `aigw --help` and a real control plane from the installed files, delivering a
// signed webhook through its worker threads: proof the tarball holds everything it runs.
describe("the npm package, installed from its tarball", () => {
  let dir: string;
  let app: string;
  let files: string[];
  let receiver: TestReceiver | undefined;
  let cp: AigwProcess | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-pack-"));
    app = join(dir, "app");
    mkdirSync(app);
    // --ignore-scripts: dist/ is already built (pretest); `npm pack` alone would rebuild it
    // (prepare) under the other test files that are running it.
    const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", dir], {
      cwd: REPO_ROOT,
    });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    files = packed!.files.map((f) => f.path);
    await run("tar", ["-xzf", join(dir, packed!.filename), "-C", app, "--strip-components=1"]);
    copyFileSync(join(REPO_ROOT, "package-lock.json"), join(app, "package-lock.json"));
    await run("npm", ["ci", "--omit=dev", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund"], {
      cwd: app,
      timeout: 240_000,
    });
    // The Dockerfile runs `npm rebuild better-sqlite3` (a prebuilt download or a compile);
    // here the repo's own build of the same version, for this Node, stands in for it.
    const addon = "node_modules/better-sqlite3/build/Release/better_sqlite3.node";
    mkdirSync(join(app, "node_modules/better-sqlite3/build/Release"), { recursive: true });
    copyFileSync(join(REPO_ROOT, addon), join(app, addon));
  }, 300_000);

  afterAll(async () => {
    cp?.child.kill("SIGKILL");
    await cp?.exited;
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("holds the built CLI and what it reads at run time, and no sources, tests or maps", () => {
    for (const f of [
      "package.json",
      "bin/aigw.js",
      "dist/cli/main.js",
      "dist/control-plane/delivery/worker.js",
      "dist/examples/local-stack.js",
      "dist/dashboard/index.html",
      "examples/local.yaml",
      "examples/webhook_config.yaml",
      "proto/aigw/v1/admin.proto",
    ]) {
      expect(files, f).toContain(f);
    }
    expect(files.filter((f) => /^(test|cli|control-plane|sidecar|common)\//.test(f))).toEqual([]);
    expect(files.filter((f) => (f.endsWith(".ts") && !f.endsWith(".d.ts")) || f.endsWith(".map"))).toEqual([]);
    // Every built file has its source: nothing stale from an old build ships.
    // (The dashboard is one file bundled from control-plane/dashboard-ui, which the control plane
    // serves; the sidecar one bundled from sidecar/run.ts, which `aigw sidecar` loads.)
    const bundles = ["dist/dashboard/index.html", "dist/sidecar/run.bundle.js"];
    for (const f of bundles) expect(files, f).toContain(f);
    // The malloc_trim module, compiled from its C source where there is a compiler (Linux CI is).
    const native = "dist/sidecar/malloc-trim.node";
    if (process.platform === "linux" && process.env.CI) expect(files, native).toContain(native);
    for (const f of files.filter((f) => f.startsWith("dist/") && !bundles.includes(f))) {
      const source =
        f === native ? "sidecar/native/malloc-trim.c" : f.slice("dist/".length).replace(/(\.d\.ts|\.js)$/, ".ts");
      expect(existsSync(join(REPO_ROOT, source)), f).toBe(true);
    }
  });

  it("installs production dependencies only", () => {
    const lock = JSON.parse(readFileSync(join(REPO_ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { dev?: boolean; optional?: boolean }>;
    };
    const paths = Object.entries(lock.packages).filter(([path]) => path.startsWith("node_modules/"));
    // Optional ones are other platforms' binaries, installed only where they run.
    const prod = paths.filter(([, p]) => !p.dev && !p.optional).map(([path]) => path);
    const dev = paths.filter(([, p]) => p.dev).map(([path]) => path);
    expect(dev).toContain("node_modules/vitest");
    for (const path of prod) expect(existsSync(join(app, path)), path).toBe(true);
    for (const path of dev) expect(existsSync(join(app, path)), path).toBe(false);
  });

  it("runs aigw --help from the installed files", async () => {
    const { stdout } = await run(process.execPath, [join(app, "bin/aigw.js"), "--help"], { cwd: dir });
    expect(stdout).toMatch(/^aigw \d+\.\d+\.\d+ — /);
    expect(stdout).toContain("aigw control-plane --config FILE");
  });

  it("exports aigw/verify, with its types, to receivers that install it", async () => {
    const { stdout } = await run(
      process.execPath,
      ["--input-type=module", "-e", 'const m = await import("aigw/verify"); console.log(typeof m.verifyWebhook)'],
      { cwd: app },
    );
    expect(stdout.trim()).toBe("function");
    expect(files).toContain("dist/common/verify.d.ts");
  });

  it("runs a control plane that delivers a signed webhook through its workers", async () => {
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    const config = join(dir, "config.yaml");
    writeFileSync(config, testConfigYaml({ primaryUrl: receiver.url }));
    cp = runAigwAt(join(app, "bin/aigw.js"), dir, [
      "control-plane",
      "--config",
      config,
      "--store",
      `sqlite:${join(dir, "cp.db")}`,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    const ready = await cp.waitForLog("control plane ready");
    const http = String(ready.http);
    expect((await fetch(`${http}/readyz`)).status).toBe(200);
    const { stdout } = await run(process.execPath, [join(app, "bin/aigw.js"), "send-test", "--admin", http], {
      cwd: dir,
    });
    const id = /^sent test completion event (evt_\w+)$/m.exec(stdout)?.[1];
    expect(id).toBeDefined();
    await waitFor("the verified webhook", () => receiver!.received.some((r) => r.headers["webhook-id"] === id));
  });
});
