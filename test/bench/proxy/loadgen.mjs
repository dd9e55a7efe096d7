// The load generator when wrk is absent: CONNS keep-alive connections, each sending the wrk
// script's POST back to back for SECONDS (after WARMUP seconds), in its own process.
// Prints one JSON line: {requests, seconds, p50Us, p90Us, p99Us, errors}.
// Usage: node loadgen.mjs URL CONNS SECONDS WARMUP
import http from "node:http";
const [url, conns, seconds, warmup] = process.argv.slice(2);
const target = new URL(url);
const body = '{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}';
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(conns) });
const latencies = [];
let measuring = false;
let stop = false;
let errors = 0;
function one() {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": body.length },
      },
      (res) => {
        res.resume();
        res.on("end", () => {
          if (measuring) latencies.push(Number(process.hrtime.bigint() - t0) / 1000);
          if (res.statusCode !== 200) errors++;
          resolve();
        });
      },
    );
    req.on("error", () => {
      errors++;
      resolve();
    });
    req.end(body);
  });
}
async function loop() {
  while (!stop) await one();
}
const loops = Array.from({ length: Number(conns) }, loop);
await new Promise((r) => setTimeout(r, Number(warmup) * 1000));
measuring = true;
const started = performance.now();
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
measuring = false;
const elapsed = (performance.now() - started) / 1000;
stop = true;
await Promise.all(loops);
latencies.sort((a, b) => a - b);
const at = (p) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] ?? 0;
process.stdout.write(
  `${JSON.stringify({ requests: latencies.length, seconds: elapsed, p50Us: at(50), p90Us: at(90), p99Us: at(99), errors })}\n`,
);
agent.destroy();
