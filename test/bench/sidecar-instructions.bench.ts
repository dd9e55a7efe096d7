// Instructions per proxied request, counted by valgrind's callgrind: the sidecar (events
// live: control plane and verifying receiver running, completions subscribed), nginx and the
// naive Node pipe proxy, each given the same fixed number of requests after the same warm-up.
// A count of instructions does not move with the machine's speed or with what else runs on
// it, so a change of a few per cent shows in one run, where the wall-clock benchmark
// (sidecar.bench.ts) on a machine that drifts needs many. It counts user-space instructions
// only: not the kernel's share (the socket writes and reads, a third of the sidecar's CPU), not
// cache misses, so it ranks changes to aigw's own code and is no measure of throughput.
// The main thread is counted apart from V8's helper threads, whose compiling under valgrind
// varies from run to run; the main thread's count repeats within about 1 %.
//
// `npm run bench -- "proxy instructions"`. Knobs: AIGW_BENCH_INSTR_REQUESTS (2,000
// measured, after as many uncounted), AIGW_BENCH_INSTR_CONNS (4), AIGW_BENCH_COMPARE (another
// built checkout: its sidecar is counted too, and the table gives this build ÷ that one).
// Skipped, saying so, where valgrind is not installed (Debian: apt-get install valgrind).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  freePort,
  get,
  hasNginx,
  nginxArgs,
  metric,
  type Proc,
  sidecarCommand,
  start,
  startSubscribedControlPlane,
  waitUntil,
} from "./sidecar.bench.js";
import type { BenchRow } from "./types.js";

const REQUESTS = Number(process.env.AIGW_BENCH_INSTR_REQUESTS ?? 2_000);
const CONNS = Number(process.env.AIGW_BENCH_INSTR_CONNS ?? 4);
const COMPARE = process.env.AIGW_BENCH_COMPARE;
const HERE = fileURLToPath(new URL("./proxy/", import.meta.url));
/** Under valgrind a Node process takes tens of seconds to start. */
const START_MS = 300_000;

const hasValgrind = spawnSync("valgrind", ["--version"]).error === undefined;

function note(text: string): void {
  process.stderr.write(`sidecar instructions: ${text}\n`);
}

/** Instructions of one callgrind dump: the main thread's (file -01) and all threads'. */
function readDump(prefix: string, dump: number): { main: number; all: number } {
  const dir = join(prefix, "..");
  const base = `${prefix.slice(dir.length + 1)}.${dump}-`;
  let main = 0;
  let all = 0;
  for (const file of readdirSync(dir)) {
    if (!file.startsWith(base)) continue;
    const text = readFileSync(join(dir, file), "utf8");
    const count = Number(/^(?:summary|totals): (\d+)/m.exec(text)?.[1] ?? 0);
    all += count;
    if (file === `${base}01`) main = count;
  }
  return { main, all };
}

/** Runs the fixed-count load generator (its own process) and checks every request succeeded. */
function fixedLoad(url: string, requests: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(HERE, "fixedload.mjs"), url, String(CONNS), String(requests)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    child.once("exit", () => {
      let result: { done?: number; bad?: number } = {};
      try {
        result = JSON.parse(out) as typeof result;
      } catch {
        // reported below with what it printed
      }
      if (result.done === requests && result.bad === 0) resolve();
      else reject(new Error(`sidecar instructions: load against ${url} ended with ${out.trim() || "nothing"}`));
    });
  });
}

function callgrindControl(pid: number, command: "--zero" | "--dump"): void {
  const run = spawnSync("callgrind_control", [command, String(pid)], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`callgrind_control ${command} ${pid} failed: ${run.stderr || run.stdout}`);
}

interface Counted {
  /** Main-thread instructions per request. */
  main: number;
  /** All threads' instructions per request. */
  all: number;
}

/**
 * Starts `args` under callgrind (counting from the start, one file per thread), waits for
 * `ready`, sends the warm-up, zeroes the counters, sends the measured requests, waits for
 * `settled` (the sidecar's events acked), and dumps.
 */
async function count(
  dir: string,
  label: string,
  args: string[],
  url: string,
  ready: () => Promise<boolean>,
  settled: (requests: number) => Promise<boolean>,
): Promise<Counted> {
  const prefix = join(dir, `${label}.callgrind`);
  const proc: Proc = start(
    "valgrind",
    ["--tool=callgrind", "--separate-threads=yes", "--dump-instr=no", `--callgrind-out-file=${prefix}`, ...args],
    0,
  );
  try {
    await waitUntil(`${label} ready under valgrind`, async () => (await ready()) || undefined, START_MS);
    await fixedLoad(url, REQUESTS);
    await waitUntil(`${label} done with the warm-up`, async () => (await settled(REQUESTS)) || undefined, START_MS);
    const pid = proc.child.pid!;
    callgrindControl(pid, "--zero");
    await fixedLoad(url, REQUESTS);
    await waitUntil(
      `${label} done with the measured requests`,
      async () => (await settled(2 * REQUESTS)) || undefined,
      START_MS,
    );
    callgrindControl(pid, "--dump");
    const { main, all } = readDump(prefix, 1);
    if (main === 0) throw new Error(`sidecar instructions: no callgrind dump for ${label} in ${dir}`);
    note(
      `${label}: ${(main / REQUESTS).toFixed(0)} instructions per request on the main thread, ${(all / REQUESTS).toFixed(0)} in all threads`,
    );
    return { main: main / REQUESTS, all: all / REQUESTS };
  } finally {
    await proc.stop();
  }
}

const answers = (url: string) => async (): Promise<boolean> => (await get(url)).status > 0;

export async function benchSidecarInstructions(): Promise<BenchRow[]> {
  if (!hasValgrind) {
    note("valgrind is not installed (Debian: apt-get install valgrind): skipped");
    return [];
  }
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-instructions-"));
  const procs: Proc[] = [];
  try {
    const [upstreamPort, nginxPort, pipePort] = await Promise.all(Array.from({ length: 3 }, freePort));
    const upstream = start(process.execPath, [join(HERE, "upstream.mjs"), String(upstreamPort)], 0);
    procs.push(upstream);
    await waitUntil("upstream", () => upstream.stdout().includes("ready") || undefined);
    const upstreamUrl = `http://127.0.0.1:${upstreamPort}`;

    const { grpcUrl } = await startSubscribedControlPlane(dir, ["completion"], procs);

    const idle = async (): Promise<boolean> => true;
    const results = new Map<string, Counted>();

    if (hasNginx) {
      const url = `http://127.0.0.1:${nginxPort}`;
      results.set(
        "nginx",
        await count(
          dir,
          "nginx",
          // One process (no master): the one valgrind counts.
          ["nginx", ...nginxArgs(dir, upstreamPort!, nginxPort!, true)],
          url,
          answers(url),
          idle,
        ),
      );
    } else {
      note("nginx is not installed (Debian: apt-get install nginx-light): no nginx row");
    }

    const pipeUrl = `http://127.0.0.1:${pipePort}`;
    results.set(
      "pipe proxy",
      await count(
        dir,
        "pipe",
        [process.execPath, join(HERE, "pipeproxy.mjs"), String(pipePort), String(upstreamPort)],
        pipeUrl,
        answers(pipeUrl),
        idle,
      ),
    );

    const sidecar = async (label: string, checkout: string): Promise<Counted> => {
      const [port, admin] = await Promise.all([freePort(), freePort()]);
      const adminUrl = `http://127.0.0.1:${admin}`;
      return count(
        dir,
        label,
        [
          process.execPath,
          ...sidecarCommand({
            checkout,
            grpcUrl,
            port,
            admin,
            upstreamUrl,
            spool: join(dir, `spool-${label}`),
            app: label,
          }),
        ],
        `http://127.0.0.1:${port}`,
        async () => (await get(`${adminUrl}/readyz`)).body.includes("connected"),
        // Every event of the requests so far sent and acked: their whole cost is counted.
        async (requests) => {
          const text = (await get(`${adminUrl}/metrics`)).body;
          return (
            (metric(text, "aigw_sidecar_events_sent_total") ?? 0) >= requests &&
            metric(text, "aigw_sidecar_events_queued") === 0
          );
        },
      );
    };
    results.set("aigw sidecar", await sidecar("sidecar", "."));
    if (COMPARE) results.set("the other build's sidecar", await sidecar("sidecar-other", COMPARE));

    const self = results.get("aigw sidecar")!;
    const rows: BenchRow[] = [];
    const compared = (name: string, baseline: string, main: boolean): void => {
      const other = results.get(baseline);
      if (!other) return;
      const value = main ? self.main : self.all;
      const base = main ? other.main : other.all;
      rows.push({
        name: `sidecar instructions per request, ${main ? "main thread" : "all threads"} (events live)`,
        value: value / 1000,
        unit: "k",
        baseline: `${name}, ${main ? "main thread" : "all threads"}, same run`,
        baselineValue: base / 1000,
        ratio: value / base,
      });
    };
    compared("nginx", "nginx", true);
    compared("pipe proxy", "pipe proxy", true);
    compared(`the other build (${COMPARE})`, "the other build's sidecar", true);
    compared(`the other build (${COMPARE})`, "the other build's sidecar", false);
    process.stderr.write(
      `\nsidecar instructions per request (callgrind, ${REQUESTS} requests over ${CONNS} connections after as many uncounted)\n\n| target | main thread | all threads |\n|---|---|---|\n${[
        ...results,
      ]
        .map(([name, r]) => `| ${name} | ${(r.main / 1000).toFixed(1)}k | ${(r.all / 1000).toFixed(1)}k |`)
        .join("\n")}\n\n`,
    );
    return rows;
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}
