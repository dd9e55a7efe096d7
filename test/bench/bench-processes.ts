// Child processes for end-to-end benchmarks: the control plane and sidecar as users run
// them (the built CLI), and small single-purpose servers and load generators, each in its
// own process so none shares a thread with what it measures.
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const AIGW_BIN = fileURLToPath(new URL("../../bin/aigw.js", import.meta.url));

export interface Child {
  child: ChildProcess;
  /** The first JSON log line whose msg matches (aigw processes). */
  log(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** The first stdout line (small servers print their port). */
  firstLine: Promise<string>;
  /** Everything the process printed on stdout, once it has exited. */
  output: Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

function wrap(child: ChildProcess): Child {
  let out = "";
  const waiters: { msg: string; resolve: (v: Record<string, unknown>) => void }[] = [];
  let resolveFirst: (line: string) => void = () => {};
  const firstLine = new Promise<string>((resolve) => {
    resolveFirst = resolve;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let gotFirst = false;
  let partial = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
    if (!gotFirst && out.includes("\n")) {
      gotFirst = true;
      resolveFirst(out.slice(0, out.indexOf("\n")));
    }
    const lines = (partial + chunk).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (!line.startsWith("{") || waiters.length === 0) continue;
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      for (const w of [...waiters]) {
        if (parsed.msg === w.msg) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  });
  return {
    child,
    firstLine,
    output: exited.then(() => out),
    log(msg, timeoutMs = 60_000) {
      for (const line of out.split("\n")) {
        if (!line.startsWith("{")) continue;
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (parsed.msg === msg) return Promise.resolve(parsed);
        } catch {
          // the last line, still being written
        }
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`bench: no "${msg}" within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({
          msg,
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v);
          },
        });
      });
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** `aigw ARGS…` from the built package, logging at `level`. */
export function aigw(args: string[], level = "info"): Child {
  // Node options (e.g. --cpu-prof) may come first, before the verb.
  const verb = args.findIndex((a) => !a.startsWith("--"));
  const argv = [...args.slice(0, verb), AIGW_BIN, ...args.slice(verb)];
  return wrap(
    spawn(process.execPath, argv, {
      env: { ...process.env, AIGW_LOG_LEVEL: level },
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
}

/** A CommonJS program given as source, with arguments. */
export function node(source: string, args: string[] = []): Child {
  return wrap(spawn(process.execPath, ["-e", source, "--", ...args], { stdio: ["pipe", "pipe", "inherit"] }));
}

/** A fixed chat completion with usage, as fast as Node serves it (the anchor's upstream, on port 0). */
export const UPSTREAM_SOURCE = `
const http = require("node:http");
const body = JSON.stringify({ id: "chatcmpl-x", object: "chat.completion", created: 1, model: "gpt-4",
  choices: [{ index: 0, message: { role: "assistant", content: "hello world" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 } });
const server = http.createServer((req, res) => { req.resume(); req.on("end", () => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }); res.end(body); }); });
server.keepAliveTimeout = 65000;
server.listen(0, "127.0.0.1", () => process.stdout.write(server.address().port + "\\n"));
process.stdin.on("end", () => process.exit(0)); process.stdin.resume();
`;

/**
 * A webhook receiver that answers 204 and keeps, per request_id, when its first webhook
 * arrived (epoch ms, sub-millisecond); GET /count, GET /arrivals and GET /sample (the first
 * request's body and headers, to verify its signature) report. With the argument
 * "hang" it accepts requests and never answers.
 */
export const RECEIVER_SOURCE = `
const http = require("node:http");
const hang = process.argv[1] === "hang";
const arrivals = new Map();
let count = 0;
let sample = null;
const now = () => performance.timeOrigin + performance.now();
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (req.method === "GET") {
      const out = req.url === "/arrivals" ? Object.fromEntries(arrivals) : req.url === "/sample" ? sample : { count };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(out));
      return;
    }
    count++;
    if (sample === null) sample = { body: Buffer.concat(chunks).toString("utf8"), headers: req.headers };
    if (hang) return;
    const at = now();
    try {
      const id = JSON.parse(Buffer.concat(chunks).toString("utf8")).request_id;
      if (id && !arrivals.has(id)) arrivals.set(id, at);
    } catch {}
    res.writeHead(204).end();
  });
});
server.keepAliveTimeout = 65000;
server.listen(0, "127.0.0.1", () => process.stdout.write(server.address().port + "\\n"));
process.stdin.on("end", () => process.exit(0)); process.stdin.resume();
`;

/**
 * An open-loop load generator (arguments: URL RATE SECONDS HEALTH_URL): POSTs a chat
 * completion to URL at RATE requests a second for SECONDS (on schedule, however long
 * answers take), probing HEALTH_URL
 * (a /healthz URL, or "-") every 50 ms. Prints one JSON line: each request's id and when
 * its response ended (epoch ms), the probe latencies, and the requests that failed.
 */
export const LOADGEN_SOURCE = `
const http = require("node:http");
const [url, rateText, secondsText, healthUrl] = process.argv.slice(1);
const rate = Number(rateText), seconds = Number(secondsText);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
const body = JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] });
const now = () => performance.timeOrigin + performance.now();
const total = Math.round(rate * seconds);
const responses = [];
const health = [];
let sent = 0, done = 0, failed = 0;
const start = now() + 50;
function send() {
  const req = http.request({ host: target.hostname, port: target.port, path: target.pathname, method: "POST", agent,
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), authorization: "Bearer sk-bench" } },
    (res) => { res.resume(); res.on("end", () => {
      if (res.statusCode === 200) responses.push([res.headers["x-aigw-request-id"], now()]); else failed++;
      finish(); }); });
  req.on("error", () => { failed++; finish(); });
  req.end(body);
}
function finish() { done++; if (done === total) report(); }
function tick() {
  const due = Math.min(total, Math.floor(((now() - start) * rate) / 1000) + 1);
  while (sent < due) { sent++; send(); }
  if (sent < total) setTimeout(tick, 1);
}
let probing = healthUrl && healthUrl !== "-";
function probe() {
  if (!probing) return;
  const t = now();
  http.get(healthUrl, { agent }, (res) => { res.resume(); res.on("end", () => { health.push(now() - t); setTimeout(probe, 50); }); })
    .on("error", () => { health.push(Infinity); setTimeout(probe, 50); });
}
function report() {
  probing = false;
  // Exit once the (large) line is flushed: exiting sooner cuts a pipe write short.
  process.stdout.write(JSON.stringify({ responses, health, failed }) + "\\n", () => process.exit(0));
}
setTimeout(tick, Math.max(0, start - now()));
probe();
`;

export async function port(child: Child): Promise<number> {
  const line = await child.firstLine;
  const n = Number(line);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`bench: expected a port, got "${line}"`);
  return n;
}

/** Nearest-rank quantile of unsorted values. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}
