// The sidecar as users run it, against nginx, a naive Node pipe proxy and direct calls, in one
// run (`npm run bench -- sidecar` runs this part alone). Every target is its own process:
// the provider (test/bench/proxy/upstream.mjs) and the proxies on core 0, the load generator
// (wrk from Debian; a Node generator when wrk is absent), the control plane and a verifying
// webhook receiver subscribed to completions on core 1. Latency percentiles and throughput at
// 1, 4 and 16 connections, medians of several runs, ratios against direct and nginx measured
// in the same run; streaming (added time to first byte, per-chunk delay); the sidecar's RSS
// idle, under load and a while after. Never a CI gate.
//
// Knobs: AIGW_BENCH_SECONDS (6 per measurement), AIGW_BENCH_RUNS (3), AIGW_BENCH_CONNS
// ("1,4,16"), AIGW_BENCH_RSS_AFTER_S (60), AIGW_BENCH_SIDECAR_NODE_OPTIONS (e.g.
// "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the sidecar under this load, "--trace-gc"
// for its collections), AIGW_BENCH_SIDECAR_STDOUT (a file for the first MB of its stdout),
// AIGW_BENCH_SIDECAR_LOG_LEVEL ("warn"; "debug" logs its idle collections),
// AIGW_BENCH_EVENTS (the webhook's subscribed event types, "completion"; "error" to see what
// the events cost: the bench's calls all succeed, so then no event is made),
// AIGW_BENCH_COMPARE (another checkout, built: its sidecar runs beside this one, on the same
// core and control plane, and both are loaded at the same time, each by its own wrk, at every
// concurrency and run; the table gives this build ÷ that one. On a machine whose speed drifts
// from one minute to the next, a change is only seen this way: both builds share each moment;
// AIGW_BENCH_COMPARE=. compares this build with itself), AIGW_BENCH_COMPARE_NODE_OPTIONS (the
// other sidecar's Node options, AIGW_BENCH_SIDECAR_NODE_OPTIONS unless set: a V8 flag's effect
// is measured the same way, e.g. AIGW_BENCH_COMPARE=. AIGW_BENCH_SIDECAR_NODE_OPTIONS=--some-flag).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchRow } from "./types.js";

const SECONDS = Number(process.env.AIGW_BENCH_SECONDS ?? 6);
const RUNS = Number(process.env.AIGW_BENCH_RUNS ?? 3);
const CONNS = (process.env.AIGW_BENCH_CONNS ?? "1,4,16").split(",").map(Number);
const RSS_AFTER_S = Number(process.env.AIGW_BENCH_RSS_AFTER_S ?? 60);
const EVENTS = (process.env.AIGW_BENCH_EVENTS ?? "completion").split(",").filter(Boolean);
const COMPARE = process.env.AIGW_BENCH_COMPARE;
const WARMUP_S = 1;
/** Seconds past the first 2 after which the idle RSS is read (V8's memory reducer has run). */
const IDLE_SETTLE_S = 10;
const STREAMS = 40;
const STREAM_CHUNKS = 20;
const STREAM_CHUNK_MS = 5;
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const HERE = fileURLToPath(new URL("./proxy/", import.meta.url));
export const SECRET = "whsec_YWlndy1sb2NhbC1kZXZlbG9wbWVudC1zZWNyZXQh";

/**
 * Where the sidecar's memory is: the V8 heap (used / reserved) and external memory from its
 * /metrics, and the kernel's split of the RSS into file-backed (code, mapped libraries) and
 * anonymous pages (heaps: V8's, malloc's) from /proc/PID/smaps_rollup when there is one.
 */
function memoryBreakdown(metricsText: string, pid: number | undefined): string {
  const mb = (bytes: number | undefined) => (bytes === undefined ? "?" : (bytes / 1048576).toFixed(1));
  const parts = [
    `heap ${mb(metric(metricsText, "nodejs_heap_used_bytes"))} used / ${mb(metric(metricsText, "nodejs_heap_size_total_bytes"))} reserved MB`,
    `external ${mb(metric(metricsText, "nodejs_external_memory_bytes"))} MB`,
  ];
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1]) * 1024;
    parts.push(
      `RSS ${mb(kb("Rss"))} MB = anonymous ${mb(kb("Anonymous"))} + file-backed ${mb(kb("Rss") - kb("Anonymous"))}`,
    );
  } catch {
    // no /proc (not Linux) or the process is gone: the metrics alone
  }
  return parts.join(", ");
}

type Target = "direct" | "nginx" | "pipe proxy" | "aigw sidecar";

interface Measurement {
  p50Us: number;
  p99Us: number;
  rps: number;
  /** CPU time of the target's proxy process per request (µs); undefined for direct. */
  cpuUs?: number | undefined;
}

export interface Proc {
  child: ChildProcess;
  /** The first MB of stdout. */
  stdout: () => string;
  /** Lines printed on stdout so far. */
  lines: () => number;
  stop(): Promise<void>;
}

const canPin = cpus().length >= 2 && spawnSync("taskset", ["-V"]).status === 0;
const hasWrk = spawnSync("wrk", ["-v"]).error === undefined;
export const hasNginx = spawnSync("nginx", ["-v"]).error === undefined;

/**
 * Runs a command pinned to `core` when the machine has two cores and taskset; `background`
 * runs it at a lower priority (nice 10), so that the control plane's delivery backlog, which
 * shares the load generator's core, cannot starve the generator and inflate every row.
 */
export function start(
  command: string,
  args: string[],
  core: 0 | 1,
  env: Record<string, string> = {},
  background = false,
): Proc {
  const niced: [string, string[]] = background ? ["nice", ["-n", "10", command, ...args]] : [command, args];
  const [file, argv]: [string, string[]] = canPin ? ["taskset", ["-c", String(core), niced[0], ...niced[1]]] : niced;
  const child = spawn(file, argv, { cwd: REPO, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  let lines = 0;
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    if (out.length < 1_000_000) out += chunk;
    for (let at = chunk.indexOf("\n"); at !== -1; at = chunk.indexOf("\n", at + 1)) lines++;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    if (err.length < 100_000) err += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    child,
    stdout: () => out,
    lines: () => lines,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export async function waitUntil<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  ms = 30_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`sidecar bench: no ${what} within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * A verifying webhook receiver and a control plane (SQLite in `dir`) subscribed to
 * `events`, as users run them, on core 1 (the control plane at nice 10); both are added to
 * `procs`. Resolves to the control plane's gRPC address and the receiver (it prints a line
 * on start, then one per verified event).
 */
export async function startSubscribedControlPlane(
  dir: string,
  events: readonly string[],
  procs: Proc[],
): Promise<{ grpcUrl: string; receiver: Proc }> {
  const receiverPort = await freePort();
  const receiver = start(
    process.execPath,
    ["dist/examples/receiver.js", "--port", String(receiverPort), "--secret", SECRET],
    1,
  );
  procs.push(receiver);
  const configPath = join(dir, "config.yaml");
  writeFileSync(
    configPath,
    `webhooks:\n  primary:\n    url: "http://127.0.0.1:${receiverPort}/webhooks/ai"\n    secret: "${SECRET}"\n    enabled: true\nevents:\n  subscribe: ${JSON.stringify(events)}\nsecurity:\n  require_https: false\n  allowed_networks: ["127.0.0.0/8"]\ndelivery:\n  concurrent_deliveries: 64\n`,
  );
  const cp = start(
    process.execPath,
    [
      "bin/aigw.js",
      "control-plane",
      "--config",
      configPath,
      "--store",
      `sqlite:${join(dir, "cp.db")}`,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ],
    1,
    { AIGW_LOG_LEVEL: "info" },
    true,
  );
  procs.push(cp);
  const grpcUrl = await waitUntil("control plane", () => /"grpc":"([^"]+)"/.exec(cp.stdout())?.[1]);
  return { grpcUrl, receiver };
}

/** The sidecar's command line (after node's own options), as the benches run it. */
export function sidecarCommand(o: {
  checkout: string;
  grpcUrl: string;
  port: number;
  admin: number;
  upstreamUrl: string;
  spool: string;
  app: string;
}): string[] {
  return [
    join(o.checkout, "bin/aigw.js"),
    "sidecar",
    "--control-plane",
    o.grpcUrl,
    "--listen",
    `127.0.0.1:${o.port}`,
    "--admin-listen",
    `127.0.0.1:${o.admin}`,
    "--upstream",
    o.upstreamUrl,
    "--spool",
    o.spool,
    "--org",
    "org_bench",
    "--app",
    o.app,
  ];
}

/**
 * Writes the nginx baseline's config (shared/anchor-proxy/nginx.conf with the ports) under
 * `dir` and returns nginx's arguments. `singleProcess`: no master process, so the one process
 * started is the one that serves (what valgrind counts).
 */
export function nginxArgs(dir: string, upstreamPort: number, listenPort: number, singleProcess = false): string[] {
  const nginxDir = join(dir, "nginx");
  mkdirSync(join(nginxDir, "tmp"), { recursive: true });
  let conf = readFileSync(join(HERE, "nginx.conf.template"), "utf8")
    .replace("UPSTREAM_PORT", String(upstreamPort))
    .replace("LISTEN_PORT", String(listenPort));
  if (singleProcess) conf = conf.replace("daemon off;", "daemon off;\nmaster_process off;");
  writeFileSync(join(nginxDir, "nginx.conf"), conf);
  return ["-p", nginxDir, "-c", join(nginxDir, "nginx.conf")];
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}

export function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

export function metric(text: string, name: string): number | undefined {
  const match = new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text);
  return match ? Number(match[1]) : undefined;
}

/** utime + stime of a process and its children (nginx's worker), in µs (Linux /proc). */
/** CPU µs per request over a measurement (its warm-up included, as the CPU times are), from two cpuTimeUs readings. */
function cpuPerRequest(before: number | undefined, after: number | undefined, rps: number): number | undefined {
  return before !== undefined && after !== undefined ? (after - before) / (rps * (SECONDS + WARMUP_S)) : undefined;
}

function cpuTimeUs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ");
    const ticks = Number(fields?.[11]) + Number(fields?.[12]);
    let children = 0;
    try {
      for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)) {
        if (child) children += cpuTimeUs(Number(child)) ?? 0;
      }
    } catch {
      // no children list on this kernel: the process alone
    }
    return (ticks * 1e6) / 100 + children; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

function parseWrkDuration(text: string): number {
  const match = /([0-9.]+)(us|ms|s)/.exec(text);
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value : match[2] === "ms" ? value * 1000 : value * 1e6;
}

/** One load run against `url` with `conns` connections; the generator on core 1. */
async function load(url: string, conns: number, seconds: number): Promise<Omit<Measurement, "cpuUs">> {
  if (hasWrk) {
    const script = join(HERE, "post.lua");
    const warm = start("wrk", ["-t1", `-c${conns}`, `-d${WARMUP_S}s`, "-s", script, url], 1);
    await new Promise((resolve) => warm.child.once("exit", resolve));
    const run = start("wrk", ["-t1", `-c${conns}`, `-d${seconds}s`, "--latency", "-s", script, url], 1);
    await new Promise((resolve) => run.child.once("exit", resolve));
    const out = run.stdout();
    const p50 = /^\s+50%\s+(\S+)/m.exec(out)?.[1];
    const p99 = /^\s+99%\s+(\S+)/m.exec(out)?.[1];
    const rps = /^Requests\/sec:\s+([0-9.]+)/m.exec(out)?.[1];
    if (!p50 || !p99 || !rps) throw new Error(`sidecar bench: unreadable wrk output:\n${out}`);
    return { p50Us: parseWrkDuration(p50), p99Us: parseWrkDuration(p99), rps: Number(rps) };
  }
  const run = start(
    process.execPath,
    [join(HERE, "loadgen.mjs"), url, String(conns), String(seconds), String(WARMUP_S)],
    1,
  );
  await new Promise((resolve) => run.child.once("exit", resolve));
  const result = JSON.parse(run.stdout().trim().split("\n").at(-1) ?? "{}") as {
    requests: number;
    seconds: number;
    p50Us: number;
    p99Us: number;
  };
  return { p50Us: result.p50Us, p99Us: result.p99Us, rps: result.requests / result.seconds };
}

/** Time to first byte and chunk arrival times (ms after the request) of one streamed call. */
function stream(url: string): Promise<{ ttfbMs: number; lastChunkMs: number; chunks: number }> {
  const body = JSON.stringify({ model: "gpt-4", stream: true, messages: [{ role: "user", content: "hi" }] });
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let ttfb = 0;
    let last = 0;
    let chunks = 0;
    const req = httpRequest(
      url,
      { method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
      (res) => {
        res.on("data", (chunk: Buffer) => {
          const now = performance.now() - t0;
          if (ttfb === 0) ttfb = now;
          last = now;
          chunks += chunk.toString("latin1").split("\n\n").length - 1;
        });
        res.on("end", () => resolve({ ttfbMs: ttfb, lastChunkMs: last, chunks }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const us = (value: number): string => (value >= 1000 ? `${(value / 1000).toFixed(2)} ms` : `${value.toFixed(0)} µs`);

export async function benchSidecar(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-sidecar-"));
  const procs: Proc[] = [];
  const note = (line: string): void => {
    process.stderr.write(`sidecar bench: ${line}\n`);
  };
  const loadAtStart = loadavg()[0] ?? 0;
  // This process measures streams; keep it off the proxies' core.
  if (canPin) spawnSync("taskset", ["-p", "-c", "1", String(process.pid)]);
  try {
    if (!hasWrk)
      note("wrk not found (apt-get install wrk): using the Node load generator (test/bench/proxy/loadgen.mjs)");
    if (!hasNginx) note("nginx not found (apt-get install nginx): no nginx row, ratios against the pipe proxy instead");
    if (!canPin) note("fewer than 2 cores or no taskset: processes are not pinned");
    const [upstreamPort, nginxPort, pipePort, sidecarPort, adminPort] = await Promise.all(
      Array.from({ length: 5 }, freePort),
    );
    const upstream = start(
      process.execPath,
      [join(HERE, "upstream.mjs"), String(upstreamPort), String(STREAM_CHUNKS), String(STREAM_CHUNK_MS)],
      0,
    );
    procs.push(upstream);
    await waitUntil("upstream", () => upstream.stdout().includes("ready") || undefined);

    const targets = new Map<Target, { url: string; proc?: Proc }>();
    targets.set("direct", { url: `http://127.0.0.1:${upstreamPort}` });
    if (hasNginx) {
      const nginx = start("nginx", nginxArgs(dir, upstreamPort!, nginxPort!), 0);
      procs.push(nginx);
      targets.set("nginx", { url: `http://127.0.0.1:${nginxPort}`, proc: nginx });
    }
    const pipe = start(process.execPath, [join(HERE, "pipeproxy.mjs"), String(pipePort), String(upstreamPort)], 0);
    procs.push(pipe);
    targets.set("pipe proxy", { url: `http://127.0.0.1:${pipePort}`, proc: pipe });

    // The control plane with a verifying receiver subscribed to completions, as users run it.
    const { grpcUrl, receiver } = await startSubscribedControlPlane(dir, EVENTS, procs);
    // The sidecar's command line; the other build's (AIGW_BENCH_COMPARE) differs in its
    // checkout, ports, spool and app name.
    const nodeOptions = (value: string | undefined): string[] => value?.split(" ").filter(Boolean) ?? [];
    const sidecarArgs = (
      options: readonly string[],
      checkout: string,
      port: number | undefined,
      admin: number | undefined,
      spool: string,
      app: string,
    ): string[] => [
      ...options,
      ...sidecarCommand({
        checkout,
        grpcUrl,
        port: port!,
        admin: admin!,
        upstreamUrl: `http://127.0.0.1:${upstreamPort}`,
        spool: join(dir, spool),
        app,
      }),
    ];
    const sidecar = start(
      process.execPath,
      sidecarArgs(
        nodeOptions(process.env.AIGW_BENCH_SIDECAR_NODE_OPTIONS),
        "",
        sidecarPort,
        adminPort,
        "spool",
        "bench",
      ),
      0,
      {
        AIGW_LOG_LEVEL: process.env.AIGW_BENCH_SIDECAR_LOG_LEVEL ?? "warn",
      },
    );
    procs.push(sidecar);
    targets.set("aigw sidecar", { url: `http://127.0.0.1:${sidecarPort}`, proc: sidecar });
    const adminUrl = `http://127.0.0.1:${adminPort}`;
    await waitUntil(
      "sidecar connected to the control plane",
      async () => (await get(`${adminUrl}/readyz`)).body.includes("connected") || undefined,
    );
    // The other build's sidecar, for the simultaneous comparison (AIGW_BENCH_COMPARE).
    let other: { url: string; proc: Proc } | undefined;
    if (COMPARE) {
      const [otherPort, otherAdminPort] = await Promise.all([freePort(), freePort()]);
      const proc = start(
        process.execPath,
        sidecarArgs(
          nodeOptions(process.env.AIGW_BENCH_COMPARE_NODE_OPTIONS ?? process.env.AIGW_BENCH_SIDECAR_NODE_OPTIONS),
          COMPARE,
          otherPort,
          otherAdminPort,
          "spool-other",
          "bench-other",
        ),
        0,
        { AIGW_LOG_LEVEL: "warn" },
      );
      procs.push(proc);
      other = { url: `http://127.0.0.1:${otherPort}`, proc };
      await waitUntil(
        "the other build's sidecar connected to the control plane",
        async () => (await get(`http://127.0.0.1:${otherAdminPort}/readyz`)).body.includes("connected") || undefined,
      );
    }
    for (const [name, { url }] of targets) await waitUntil(name, async () => (await get(url)).status > 0 || undefined);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const startedMetrics = (await get(`${adminUrl}/metrics`)).body;
    const rssStarted = metric(startedMetrics, "process_resident_memory_bytes") ?? Number.NaN;
    note(`sidecar memory just started: ${memoryBreakdown(startedMetrics, sidecar.child.pid)}`);
    // Idle is what the sidecar holds once it has settled: V8's memory reducer gives back what
    // starting up left (~4 MB) about 8 s after its last collection, of its own accord.
    await new Promise((resolve) => setTimeout(resolve, IDLE_SETTLE_S * 1000));
    const idleMetrics = (await get(`${adminUrl}/metrics`)).body;
    const rssIdle = metric(idleMetrics, "process_resident_memory_bytes") ?? Number.NaN;
    note(
      `sidecar memory idle (${IDLE_SETTLE_S + 2} s after start): ${memoryBreakdown(idleMetrics, sidecar.child.pid)}`,
    );

    // Interleaved: each run measures every target at every concurrency, so drift hits all alike.
    const results = new Map<string, Measurement[]>();
    let rssPeak = 0;
    // The sidecar's event-loop delay under the largest load (its /metrics, per 500 ms scrape).
    const loopDelayP99s: number[] = [];
    let loopDelayMax = 0;
    for (let run = 0; run < RUNS; run++) {
      for (const conns of CONNS) {
        for (const [name, { url, proc }] of targets) {
          const cpuBefore = cpuTimeUs(proc?.child.pid);
          let sampler: NodeJS.Timeout | undefined;
          if (name === "aigw sidecar" && conns === Math.max(...CONNS)) {
            // A scrape resets the delay histogram: what came before this load (the idle
            // collection after the last one) is not counted in it.
            await get(`${adminUrl}/metrics`).catch(() => undefined);
            sampler = setInterval(() => {
              void get(`${adminUrl}/metrics`)
                .then(({ body }) => {
                  rssPeak = Math.max(rssPeak, metric(body, "process_resident_memory_bytes") ?? 0);
                  loopDelayP99s.push(metric(body, "nodejs_eventloop_delay_p99_seconds") ?? 0);
                  loopDelayMax = Math.max(loopDelayMax, metric(body, "nodejs_eventloop_delay_max_seconds") ?? 0);
                })
                .catch(() => {});
            }, 500);
          }
          const measured = await load(`${url}/v1/chat/completions`, conns, SECONDS);
          clearInterval(sampler);
          const cpuAfter = cpuTimeUs(proc?.child.pid);
          const cpuUs = cpuPerRequest(cpuBefore, cpuAfter, measured.rps);
          const key = `${name}|${conns}`;
          results.set(key, [...(results.get(key) ?? []), { ...measured, cpuUs }]);
          note(
            `run ${run + 1}/${RUNS} ${name} c=${conns}: p50 ${us(measured.p50Us)} p99 ${us(measured.p99Us)} ${measured.rps.toFixed(0)} req/s${cpuUs === undefined ? "" : `, CPU ${us(cpuUs)}/req`}`,
          );
        }
      }
    }

    // Streaming: the same stream direct and through the sidecar, alternately; twice. First
    // right after the load, while the uplink still sends the load's events (its work shares
    // the sidecar's thread: spool reads, encoding, HTTP/2 writes), then once it has caught up.
    const backlog = async (): Promise<number> =>
      metric((await get(`${adminUrl}/metrics`)).body, "aigw_sidecar_events_queued") ?? Number.NaN;
    // The control plane (at nice 10) takes the load's events more slowly than the sidecar made
    // them: wait while the queue shrinks, however long that is; fail when it stops moving.
    const drained = async (): Promise<string> => {
      let lowest = Number.POSITIVE_INFINITY;
      let movedAt = Date.now();
      for (;;) {
        const body = await get(`${adminUrl}/metrics`)
          .then((r) => r.body)
          .catch(() => "");
        const queued = metric(body, "aigw_sidecar_events_queued");
        if (queued === 0) return body;
        if (queued !== undefined && queued < lowest) {
          lowest = queued;
          movedAt = Date.now();
        }
        if (Date.now() - movedAt > 60_000)
          throw new Error(`sidecar bench: the sidecar's queue stopped draining at ${lowest} events for 60 s`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    };
    type Streams = Record<"direct" | "sidecar", { ttfb: number[]; lastChunk: number[] }>;
    const streams = async (): Promise<Streams> => {
      const out: Streams = { direct: { ttfb: [], lastChunk: [] }, sidecar: { ttfb: [], lastChunk: [] } };
      for (let i = 0; i < STREAMS; i++) {
        for (const side of ["direct", "sidecar"] as const) {
          const url = side === "direct" ? targets.get("direct")!.url : targets.get("aigw sidecar")!.url;
          const s = await stream(`${url}/v1/chat/completions`);
          if (i >= 5) {
            out[side].ttfb.push(s.ttfbMs);
            out[side].lastChunk.push(s.lastChunkMs - s.ttfbMs);
          }
        }
      }
      return out;
    };
    const backlogAtStart = await backlog();
    const busy = await streams();
    const backlogAtEnd = await backlog();
    note(
      `streaming while the uplink caught up: ${backlogAtStart} events queued at its start, ${backlogAtEnd} at its end`,
    );
    await drained();
    const quiet = await streams();
    const ttfb = { direct: quiet.direct.ttfb, sidecar: quiet.sidecar.ttfb };
    const lastChunk = { direct: quiet.direct.lastChunk, sidecar: quiet.sidecar.lastChunk };

    // Every event the sidecar published reaches the control plane; then RSS once quiet.
    const sidecarMetrics = await drained();
    const eventsSent = metric(sidecarMetrics, "aigw_sidecar_events_sent_total") ?? 0;
    const dropped = metric(sidecarMetrics, "aigw_sidecar_events_dropped_total") ?? 0;
    note(
      `${eventsSent} events acked by the control plane, ${dropped} dropped; waiting ${RSS_AFTER_S} s for the RSS after load`,
    );
    await new Promise((resolve) => setTimeout(resolve, RSS_AFTER_S * 1000));
    const afterMetrics = (await get(`${adminUrl}/metrics`)).body;
    const rssAfter = metric(afterMetrics, "process_resident_memory_bytes") ?? Number.NaN;
    note(`sidecar memory ${RSS_AFTER_S} s after load: ${memoryBreakdown(afterMetrics, sidecar.child.pid)}`);
    // The receiver prints a line on start, then one per verified event.
    const webhooks = receiver.lines() - 1;
    // Both builds at once, each loaded by its own wrk: the same moments of the machine for both.
    const paired = new Map<string, Array<{ mine: Measurement; theirs: Measurement }>>();
    if (other) {
      // After everything above, with this build's queue drained; the other build has been idle
      // so far, so both first take one round of load that is not counted (compiled code, and
      // each its own backlog of events, alike).
      const sidecarProc = targets.get("aigw sidecar")!;
      const most = Math.max(...CONNS);
      await Promise.all([
        load(`${sidecarProc.url}/v1/chat/completions`, most, SECONDS),
        load(`${other.url}/v1/chat/completions`, most, SECONDS),
      ]);
      for (let run = 0; run < RUNS; run++) {
        for (const conns of CONNS) {
          const cpuBefore = [cpuTimeUs(sidecarProc.proc?.child.pid), cpuTimeUs(other.proc.child.pid)];
          const [mine, theirs] = await Promise.all([
            load(`${sidecarProc.url}/v1/chat/completions`, conns, SECONDS),
            load(`${other.url}/v1/chat/completions`, conns, SECONDS),
          ]);
          const cpuAfter = [cpuTimeUs(sidecarProc.proc?.child.pid), cpuTimeUs(other.proc.child.pid)];
          const pair = {
            mine: { ...mine, cpuUs: cpuPerRequest(cpuBefore[0], cpuAfter[0], mine.rps) },
            theirs: { ...theirs, cpuUs: cpuPerRequest(cpuBefore[1], cpuAfter[1], theirs.rps) },
          };
          paired.set(String(conns), [...(paired.get(String(conns)) ?? []), pair]);
          note(
            `run ${run + 1}/${RUNS} both builds c=${conns}: this ${pair.mine.rps.toFixed(0)} req/s, CPU ${us(pair.mine.cpuUs ?? Number.NaN)}/req; other ${pair.theirs.rps.toFixed(0)} req/s, CPU ${us(pair.theirs.cpuUs ?? Number.NaN)}/req`,
          );
        }
      }
    }

    const med = (name: Target, conns: number, field: keyof Measurement): number =>
      median((results.get(`${name}|${conns}`) ?? []).map((m) => m[field] ?? Number.NaN));
    const baselineName: Target = hasNginx ? "nginx" : "pipe proxy";

    // The matrix, as the issue states it.
    const lines = [
      "",
      `sidecar proxy, medians of ${RUNS} runs of ${SECONDS} s (${hasWrk ? "wrk" : "Node load generator"}; ${canPin ? "proxies on core 0, load generator and (at nice 10) control plane and receiver on core 1" : "unpinned"}; load average ${loadAtStart.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end)`,
      "",
      `| target | ${CONNS.map((c) => `${c} conn p50 / p99 / req/s / CPU per req`).join(" | ")} |`,
      `|---|${CONNS.map(() => "---").join("|")}|`,
      ...[...targets.keys()].map(
        (name) =>
          `| ${name} | ${CONNS.map((c) => `${us(med(name, c, "p50Us"))} / ${us(med(name, c, "p99Us"))} / ${(med(name, c, "rps") / 1000).toFixed(1)}k / ${name === "direct" ? "–" : us(med(name, c, "cpuUs"))}`).join(" | ")} |`,
      ),
      `| sidecar ÷ direct | ${CONNS.map((c) => `${(med("aigw sidecar", c, "p50Us") / med("direct", c, "p50Us")).toFixed(2)} / ${(med("aigw sidecar", c, "p99Us") / med("direct", c, "p99Us")).toFixed(2)} / ${(med("aigw sidecar", c, "rps") / med("direct", c, "rps")).toFixed(2)} / –`).join(" | ")} |`,
      `| sidecar ÷ ${baselineName} | ${CONNS.map((c) => `${(med("aigw sidecar", c, "p50Us") / med(baselineName, c, "p50Us")).toFixed(2)} / ${(med("aigw sidecar", c, "p99Us") / med(baselineName, c, "p99Us")).toFixed(2)} / ${(med("aigw sidecar", c, "rps") / med(baselineName, c, "rps")).toFixed(2)} / ${(med("aigw sidecar", c, "cpuUs") / med(baselineName, c, "cpuUs")).toFixed(2)}`).join(" | ")} |`,
      "",
      `streaming (${STREAM_CHUNKS} chunks ${STREAM_CHUNK_MS} ms apart, ${STREAMS - 5} streams), the uplink caught up: time to first byte ${median(ttfb.direct).toFixed(2)} ms direct, ${median(ttfb.sidecar).toFixed(2)} ms through the sidecar; last chunk after the first ${median(lastChunk.direct).toFixed(2)} / ${median(lastChunk.sidecar).toFixed(2)} ms`,
      `streaming right after the load, while the uplink sent its events (${backlogAtStart} queued at the start, ${backlogAtEnd} at the end): time to first byte ${median(busy.direct.ttfb).toFixed(2)} ms direct, ${median(busy.sidecar.ttfb).toFixed(2)} ms through the sidecar; last chunk after the first ${median(busy.direct.lastChunk).toFixed(2)} / ${median(busy.sidecar.lastChunk).toFixed(2)} ms`,
      `sidecar RSS: ${(rssStarted / 1048576).toFixed(0)} MB just started, ${(rssIdle / 1048576).toFixed(0)} MB idle, ${(rssPeak / 1048576).toFixed(0)} MB peak under ${Math.max(...CONNS)}-connection load, ${(rssAfter / 1048576).toFixed(0)} MB ${RSS_AFTER_S} s after`,
      `sidecar event-loop delay under ${Math.max(...CONNS)}-connection load: p99 ${(median(loopDelayP99s) * 1000).toFixed(2)} ms (median of ${loopDelayP99s.length} half-second scrapes), max ${(loopDelayMax * 1000).toFixed(2)} ms`,
      `events: ${eventsSent} acked by the control plane, ${dropped} dropped; ${webhooks} signed webhooks verified by the receiver by the end`,
      "",
    ];
    if (other) {
      const pairedMedian = (conns: number, side: "mine" | "theirs", field: keyof Measurement): number =>
        median((paired.get(String(conns)) ?? []).map((p) => p[side][field] ?? Number.NaN));
      // Each run's ratio, then their median: a run's two sides share the machine's state.
      const ratio = (conns: number, field: keyof Measurement): number =>
        median(
          (paired.get(String(conns)) ?? []).map((p) => (p.mine[field] ?? Number.NaN) / (p.theirs[field] ?? Number.NaN)),
        );
      lines.push(
        `both builds loaded at the same time (this one and ${COMPARE}), medians of ${RUNS} runs`,
        "",
        `| build | ${CONNS.map((c) => `${c} conn p50 / p99 / req/s / CPU per req`).join(" | ")} |`,
        `|---|${CONNS.map(() => "---").join("|")}|`,
        ...(["mine", "theirs"] as const).map(
          (side) =>
            `| ${side === "mine" ? "this build" : "the other build"} | ${CONNS.map((c) => `${us(pairedMedian(c, side, "p50Us"))} / ${us(pairedMedian(c, side, "p99Us"))} / ${(pairedMedian(c, side, "rps") / 1000).toFixed(1)}k / ${us(pairedMedian(c, side, "cpuUs"))}`).join(" | ")} |`,
        ),
        `| this ÷ other (median of each run's ratio) | ${CONNS.map((c) => `${ratio(c, "p50Us").toFixed(3)} / ${ratio(c, "p99Us").toFixed(3)} / ${ratio(c, "rps").toFixed(3)} / ${ratio(c, "cpuUs").toFixed(3)}`).join(" | ")} |`,
        "",
      );
    }
    process.stdout.write(`${lines.join("\n")}\n`);
    if (process.env.AIGW_BENCH_SIDECAR_STDOUT) writeFileSync(process.env.AIGW_BENCH_SIDECAR_STDOUT, sidecar.stdout());

    const rows: BenchRow[] = [];
    const c1 = CONNS[0] ?? 1;
    rows.push({
      name: `sidecar added p50, ${c1} connection`,
      value: (med("aigw sidecar", c1, "p50Us") - med("direct", c1, "p50Us")) / 1000,
      unit: "ms",
      baseline: `${baselineName} added p50 (direct p50 ${us(med("direct", c1, "p50Us"))})`,
      baselineValue: (med(baselineName, c1, "p50Us") - med("direct", c1, "p50Us")) / 1000,
      target: "≤ 0.06 ms",
    });
    for (const conns of CONNS) {
      rows.push({
        name: `sidecar p99, ${conns} conn (events live)`,
        value: med("aigw sidecar", conns, "p99Us") / 1000,
        unit: "ms",
        baseline: `${baselineName} p99, same run`,
        baselineValue: med(baselineName, conns, "p99Us") / 1000,
        ratio: med("aigw sidecar", conns, "p99Us") / med(baselineName, conns, "p99Us"),
        target: "≤ 1.5 ×",
      });
    }
    for (const conns of CONNS) {
      rows.push({
        name: `sidecar throughput, ${conns} conn (events live)`,
        value: med("aigw sidecar", conns, "rps"),
        unit: "req/s",
        baseline: `${baselineName}, same run (direct ${med("direct", conns, "rps").toFixed(0)})`,
        baselineValue: med(baselineName, conns, "rps"),
        ratio: med("aigw sidecar", conns, "rps") / med(baselineName, conns, "rps"),
        ...(conns >= 4 ? { target: "≥ 0.6 ×" } : {}),
      });
    }
    rows.push({
      name: "sidecar streaming: added time to first byte",
      value: median(ttfb.sidecar) - median(ttfb.direct),
      unit: "ms",
      baseline: "direct time to first byte",
      baselineValue: median(ttfb.direct),
      target: "≤ 1 ms",
    });
    rows.push({
      name: "sidecar streaming: added time to first byte, while the uplink sends the load's events",
      value: median(busy.sidecar.ttfb) - median(busy.direct.ttfb),
      unit: "ms",
      baseline: `direct time to first byte (${backlogAtStart} events queued at the start)`,
      baselineValue: median(busy.direct.ttfb),
    });
    rows.push({
      name: "sidecar streaming: added delay per chunk",
      value: (median(lastChunk.sidecar) - median(lastChunk.direct)) / STREAM_CHUNKS,
      unit: "ms",
      target: "≤ 1 ms",
    });
    rows.push(
      { name: "sidecar RSS just started (2 s, before V8's memory reducer)", value: rssStarted / 1048576, unit: "MB" },
      { name: `sidecar RSS idle (${IDLE_SETTLE_S + 2} s)`, value: rssIdle / 1048576, unit: "MB", target: "≤ 60 MB" },
      {
        name: `sidecar RSS peak, ${Math.max(...CONNS)} conn`,
        value: rssPeak / 1048576,
        unit: "MB",
        target: "≤ 100 MB",
      },
      {
        name: `sidecar RSS ${RSS_AFTER_S} s after load`,
        value: rssAfter / 1048576,
        unit: "MB",
        baseline: "idle",
        baselineValue: rssIdle / 1048576,
        ratio: rssAfter / rssIdle,
        target: "≤ 1.1 ×",
      },
      { name: "sidecar events acked during the run (dropped)", value: eventsSent, unit: `events (${dropped} dropped)` },
    );
    return rows;
  } finally {
    for (const proc of procs.reverse()) await proc.stop();
    if (canPin) spawnSync("taskset", ["-p", "-c", `0-${cpus().length - 1}`, String(process.pid)]);
    rmSync(dir, { recursive: true, force: true });
  }
}
