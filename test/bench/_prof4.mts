import { Agent } from "undici";
import deliver from "../../control-plane/delivery/worker.js";
const url = "http://127.0.0.1:18999/";
const task = { deliveryId: "d", url, body: JSON.stringify({ event: "completion", id: "evt_x", model: "gpt-4", tokens_used: 150, x: "y".repeat(300) }), webhookId: "evt_x", secrets: ["whsec_aGVsbG8="], signatureHeader: "X-Webhook-Signature", timeoutMs: 10000, requireHttps: false, allowedNetworks: ["127.0.0.0/8"], userAgent: "aigw/0.1.0" };
const agent = new Agent({ keepAliveTimeout: 10_000 });
const raw = async () => { const r = await agent.request({ origin: "http://127.0.0.1:18999", path: "/", method: "POST", headers: { "content-type": "application/json" }, body: task.body }); await r.body.dump(); return { statusCode: r.statusCode }; };
for (const [name, run] of [["raw", raw], ["deliver", () => deliver(task)], ["raw", raw], ["deliver", () => deliver(task)]] as const) {
  const N = 10000; let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 64 }, async () => { while (next < N) { next++; const r = await run(); if (r.statusCode !== 200) throw new Error(JSON.stringify(r)); } }));
  console.log(name, (N / ((performance.now() - t0) / 1000)).toFixed(0), "/s");
}
process.exit(0);
