import { createServer } from "node:http";
import { createDeliveryPool } from "../../control-plane/delivery/pool.js";
import deliver from "../../control-plane/delivery/worker.js";
let count = 0;
const server = createServer((req, res) => { req.resume(); req.on("end", () => { count++; res.writeHead(200, {"content-length": "0"}).end(); }); });
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${(server.address() as any).port}/`;
const task = { deliveryId: "d", url, body: JSON.stringify({ event: "completion", id: "evt_x", model: "gpt-4", tokens_used: 150, x: "y".repeat(300) }), webhookId: "evt_x", secrets: ["whsec_aGVsbG8="], signatureHeader: "X-Webhook-Signature", timeoutMs: 10000, requireHttps: false, allowedNetworks: ["127.0.0.0/8"], userAgent: "aigw/0.1.0" };
for (const threads of [2, 1, 2, 1]) {
  const pool = threads ? createDeliveryPool({ maxThreads: threads, concurrentTasksPerWorker: 64 }) : undefined;
  const run = pool ? (t: any) => pool.run(t) : deliver;
  await Promise.all(Array.from({ length: 64 }, () => run(task)));
  const N = 10000; let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 64 }, async () => { while (next < N) { next++; const r = await run(task); if (r.statusCode !== 200) throw new Error(JSON.stringify(r)); } }));
  console.log(threads ? `pool threads=${threads}` : "in-process deliver()", (N / ((performance.now() - t0) / 1000)).toFixed(0), "/s");
  await pool?.close();
}
server.close(); server.closeAllConnections(); process.exit(0);
