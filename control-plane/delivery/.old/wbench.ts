// worker-path microbench: CPU per request of deliverBatch in-process vs raw undici loop
import { spawn } from "node:child_process";
import { MessageChannel } from "node:worker_threads";
import { Agent } from "undici";
import { deliverBatch } from "../worker.js";
import { sign } from "../signing.js";
import { createDeliveryPool } from "../pool.js";
const pool = createDeliveryPool({ concurrentTasksPerWorker: 64 });
const SECRET = `whsec_${Buffer.from("bench-delivery-secret-0123456789").toString("base64")}`;
const SRC = `const http=require("node:http");const s=http.createServer((q,r)=>{q.resume();q.on("end",()=>r.writeHead(200,{"content-length":"0"}).end())});s.keepAliveTimeout=30000;s.listen(0,"127.0.0.1",()=>process.stdout.write(s.address().port+"\\n"));process.stdin.on("end",()=>process.exit(0));process.stdin.resume();`;
const child = spawn(process.execPath, ["-e", SRC], { stdio: ["pipe", "pipe", "inherit"] });
const port: number = await new Promise((r) => child.stdout.once("data", (d) => r(Number(String(d).trim()))));
const url = `http://127.0.0.1:${port}/hook`;
const body = JSON.stringify({
  event: "completion",
  id: "evt_01J",
  org_id: "org",
  app: "bench",
  provider: "openai",
  request_id: "req_x",
  model: "gpt-4",
  tokens_used: 150,
  prompt_tokens: 100,
  completion_tokens: 50,
  cost_usd: 0.0045,
  latency_ms: 420,
  stream: false,
  status_code: 0,
  timestamp: new Date().toISOString(),
});
const N = Number(process.env.N ?? 8000),
  C = 64,
  B = Number(process.env.B ?? 32);
async function ours() {
  let next = 0;
  const lane = async () => {
    while (next < N) {
      const n = Math.min(B, N - next);
      next += n;
      const { port1, port2 } = new MessageChannel();
      let got = 0;
      const done = new Promise<void>((res) =>
        port1.on("message", (m: unknown[]) => {
          got += m.length;
          if (got >= n) {
            port1.close();
            res();
          }
        }),
      );
      await deliverBatch({
        destinations: [{ url, secrets: [SECRET] }],
        items: Array.from({ length: n }, () => ({ destination: 0, body, webhookId: "evt_x" })),
        signatureHeader: "X-Webhook-Signature",
        timeoutMs: 10000,
        requireHttps: false,
        allowedNetworks: ["127.0.0.0/8"],
        userAgent: "aigw",
        results: port2,
      });
      await done;
    }
  };
  await Promise.all(Array.from({ length: C / B }, lane));
}
async function raw() {
  const agent = new Agent({ keepAliveTimeout: 10_000 });
  const t = new URL(url);
  let next = 0;
  const lane = async () => {
    while (next < N) {
      next++;
      const ts = Math.floor(Date.now() / 1000);
      const sig = sign([SECRET], "evt_x", ts, body);
      const res = await agent.request({
        origin: t.origin,
        path: t.pathname,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": "aigw",
          "webhook-id": "evt_x",
          "webhook-timestamp": String(ts),
          "webhook-signature": sig,
        },
        body,
      });
      await res.body.dump();
    }
  };
  await Promise.all(Array.from({ length: C }, lane));
  await agent.close();
}
async function pooled() {
  let next = 0;
  const lane = async () => {
    while (next < N) {
      const n = Math.min(B, N - next);
      next += n;
      await pool.runBatch(
        {
          destinations: [{ url, secrets: [SECRET] }],
          items: Array.from({ length: n }, () => ({ destination: 0, body, webhookId: "evt_x" })),
          signatureHeader: "X-Webhook-Signature",
          timeoutMs: 10000,
          requireHttps: false,
          allowedNetworks: ["127.0.0.0/8"],
          userAgent: "aigw",
        },
        () => {},
      );
    }
  };
  await Promise.all(Array.from({ length: C / B }, lane));
}
await pooled();
for (let r = 0; r < 3; r++)
  for (const [name, fn] of [
    ["raw", raw],
    ["ours", ours],
    ["pooled", pooled],
  ] as const) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    const c = process.cpuUsage(c0);
    console.log(
      name,
      ((c.user + c.system) / N).toFixed(1),
      "µs CPU/req",
      (N / ((performance.now() - t0) / 1000)).toFixed(0),
      "/s",
    );
  }
child.stdin.end();
await pool.close();
process.exit(0);
