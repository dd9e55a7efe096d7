/** The dashboard page: delivery analytics and the live feed, from the Admin API (Connect JSON). */
export function dashboardHtml(): string {
  return PAGE;
}

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aigw</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:2rem;color:#222}h1{font-size:1.4rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
th{background:#f4f4f4}.bad{color:#b00}.ok{color:#070}code{background:#f4f4f4;padding:0 .2rem}
</style></head><body>
<h1>aigw control plane</h1>
<p>Delivery analytics for the last hour. Refreshes every 2 seconds. <a href="/metrics">/metrics</a></p>
<h2>Endpoints</h2><table id="stats"><thead><tr><th>endpoint</th><th>delivered</th><th>failed</th><th>dead-lettered</th><th>pending</th><th>success</th><th>p50 ms</th><th>p99 ms</th><th>circuit</th><th>top failure</th></tr></thead><tbody></tbody></table>
<h2>Recent deliveries</h2><table id="deliveries"><thead><tr><th>id</th><th>endpoint</th><th>event</th><th>status</th><th>attempts</th><th>last error</th></tr></thead><tbody></tbody></table>
<p id="error" class="bad"></p>
<script>
const call = (method, body) => fetch("/aigw.v1.AdminService/" + method, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body || {})}).then(r => r.json().then(j => { if (!r.ok) throw new Error(j.message || r.statusText); return j; }));
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\\"":"&quot;"}[c]));
async function refresh() {
  try {
    const stats = await call("GetStats", {windowSeconds: 3600});
    document.querySelector("#stats tbody").innerHTML = (stats.endpoints || []).map(e => "<tr><td>" + esc(e.endpoint) + "</td><td>" + (e.delivered||0) + "</td><td>" + (e.failed||0) + "</td><td>" + (e.deadLettered||0) + "</td><td>" + (e.pending||0) + "</td><td>" + Math.round((e.successRate ?? 1) * 1000) / 10 + "%</td><td>" + (e.latencyP50Ms||0) + "</td><td>" + (e.latencyP99Ms||0) + "</td><td class=" + (e.circuitOpen ? "bad>open" : "ok>closed") + "</td><td>" + esc((e.failureReasons||[])[0]?.reason) + "</td></tr>").join("");
    const list = await call("ListDeliveries", {pageSize: 20});
    document.querySelector("#deliveries tbody").innerHTML = (list.deliveries || []).map(d => "<tr><td><code>" + esc(d.id) + "</code></td><td>" + esc(d.endpoint) + "</td><td>" + esc(d.eventId) + "</td><td>" + esc((d.status||"").replace("DELIVERY_STATUS_","").toLowerCase()) + "</td><td>" + (d.attemptCount||0) + "</td><td>" + esc(d.lastError) + "</td></tr>").join("");
    document.querySelector("#error").textContent = "";
  } catch (e) { document.querySelector("#error").textContent = String(e); }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
`;
