// A fixed number of requests, for counting instructions per request: N of the wrk script's
// POSTs over CONNS keep-alive connections, then exit. Prints {"done":N,"bad":B}.
// Usage: node fixedload.mjs URL CONNS N
import http from "node:http";
const [url, conns, count] = process.argv.slice(2);
const target = new URL(url);
const n = Number(count);
const body = '{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}';
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(conns) });
let sent = 0;
let done = 0;
let bad = 0;
await new Promise((resolve) => {
  const settle = (ok) => {
    if (!ok) bad++;
    if (++done === n) resolve();
    else next();
  };
  const next = () => {
    if (sent >= n) return;
    sent++;
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: "/v1/chat/completions",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": body.length },
      },
      (res) => res.resume().on("end", () => settle(res.statusCode === 200)),
    );
    req.on("error", () => settle(false));
    req.end(body);
  };
  for (let i = 0; i < Number(conns); i++) next();
});
agent.destroy();
process.stdout.write(`${JSON.stringify({ done, bad })}\n`);
