/**
 * The dashboard page: delivery analytics (GetStats, ListDeliveries) and the live feed
 * (FeedService.Watch as a Connect server stream), all from the Admin API on the same
 * origin. With auth.admin_tokens set, the page itself needs the token too: GET / without it
 * answers the login page below, which fetches this one with the token. An org's admin token
 * works as well: the Admin API scopes every answer to its org, and the page says which
 * (WhoAmI) in #scope.
 */
export function dashboardHtml(): string {
  return PAGE;
}

/**
 * What GET / answers (401) when auth.admin_tokens is set and the request has no accepted
 * token: no data and none of the dashboard, only a form. The token is kept in the tab
 * (sessionStorage, as the dashboard keeps it) and the dashboard is fetched with it and put
 * in place of this page; a browser cannot send a bearer token on a plain navigation.
 */
export function dashboardLoginHtml(): string {
  return LOGIN_PAGE;
}

const LOGIN_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aigw</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:14px system-ui,sans-serif;margin:2rem;color:#222}h1{font-size:1.4rem}.bad{color:#b00}</style>
</head><body>
<h1>aigw control plane</h1>
<p>This dashboard needs an admin token (<code>auth.admin_tokens</code>, or an org's admin token).</p>
<form id="auth"><label>Admin token <input id="token" type="password" size="40" autofocus></label> <button>Use</button></form>
<p id="error" class="bad"></p>
<script>
(() => {
  // No top-level names: the dashboard written in place of this page runs in the same window.
  const load = async (token) => {
    const res = await fetch("/", {headers: {authorization: "Bearer " + token}, cache: "no-store"});
    if (!res.ok) {
      sessionStorage.removeItem("aigw-token");
      document.querySelector("#error").textContent = res.status === 401 ? "token not accepted" : "HTTP " + res.status;
      return;
    }
    const html = await res.text();
    document.open();
    document.write(html);
    document.close();
  };
  document.querySelector("#auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = document.querySelector("#token").value;
    sessionStorage.setItem("aigw-token", token);
    load(token).catch((err) => { document.querySelector("#error").textContent = String(err.message || err); });
  });
  const saved = sessionStorage.getItem("aigw-token");
  if (saved) load(saved).catch(() => {});
})();
</script></body></html>
`;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aigw</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:2rem;color:#222}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}.bad{color:#b00}.ok{color:#070}code{background:#f4f4f4;padding:0 .2rem}
#feed td{font-family:ui-monospace,monospace;font-size:12px}#auth{display:none;margin:1rem 0}
</style></head><body>
<h1>aigw control plane</h1>
<p id="scope"></p>
<p>Delivery analytics for the last hour, refreshed every 2 seconds; the live feed as events are stored. <a href="/metrics">/metrics</a></p>
<form id="auth"><label>Admin token <input id="token" type="password" size="40"></label> <button>Use</button></form>
<p id="error" class="bad"></p>
<h2>Endpoints</h2><table id="stats"><thead><tr><th>endpoint</th><th>delivered</th><th>failed</th><th>dead-lettered</th><th>pending</th><th>success</th><th>p50 ms</th><th>p99 ms</th><th>circuit</th><th>top failure</th></tr></thead><tbody></tbody></table>
<h2>Recent deliveries</h2><table id="deliveries"><thead><tr><th>id</th><th>endpoint</th><th>event</th><th>status</th><th>attempts</th><th>last error</th></tr></thead><tbody></tbody></table>
<h2>Live events</h2><table id="feed"><thead><tr><th>time</th><th>event</th><th>org / app</th><th>details</th></tr></thead><tbody></tbody></table>
<script>
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\\"":"&quot;"}[c]));
const headers = (type) => {
  const h = {"content-type": type};
  const t = sessionStorage.getItem("aigw-token");
  if (t) h.authorization = "Bearer " + t;
  return h;
};
$("#auth").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem("aigw-token", $("#token").value); $("#auth").style.display = "none"; refresh(); watch(); });
function needsToken(status) { if (status === 401) $("#auth").style.display = "block"; return status === 401; }
async function call(method, body) {
  const r = await fetch("/aigw.v1.AdminService/" + method, {method: "POST", headers: headers("application/json"), body: JSON.stringify(body || {})});
  const j = await r.json();
  if (!r.ok) { needsToken(r.status); throw new Error(method + ": " + (j.message || r.statusText)); }
  return j;
}
async function showScope() {
  const who = await call("WhoAmI", {});
  $("#scope").textContent = who.orgId ? "Scoped to org " + who.orgId + ": its endpoints, deliveries and events only." : "Operator: every org.";
}
async function refresh() {
  try {
    if (!$("#scope").textContent) await showScope();
    const stats = await call("GetStats", {windowSeconds: 3600});
    $("#stats tbody").innerHTML = (stats.endpoints || []).map((e) => "<tr><td>" + esc(e.endpoint) + "</td><td>" + (e.delivered||0) + "</td><td>" + (e.failed||0) + "</td><td>" + (e.deadLettered||0) + "</td><td>" + (e.pending||0) + "</td><td>" + Math.round((e.successRate ?? 1) * 1000) / 10 + "%</td><td>" + (e.latencyP50Ms||0) + "</td><td>" + (e.latencyP99Ms||0) + "</td><td class=" + (e.circuitOpen ? "bad>open" : "ok>closed") + "</td><td>" + esc((e.failureReasons||[])[0]?.reason) + "</td></tr>").join("");
    const list = await call("ListDeliveries", {pageSize: 10});
    $("#deliveries tbody").innerHTML = (list.deliveries || []).map((d) => "<tr><td><code>" + esc(d.id) + "</code></td><td>" + esc(d.endpoint) + "</td><td>" + esc(d.eventId) + "</td><td>" + esc((d.status||"").replace("DELIVERY_STATUS_","").toLowerCase()) + "</td><td>" + (d.attemptCount||0) + "</td><td>" + esc(d.lastError) + "</td></tr>").join("");
    $("#error").textContent = "";
  } catch (e) { $("#error").textContent = String(e.message || e); }
}
const KINDS = ["completion", "error", "streaming", "budget", "rateLimit"];
function summary(p) {
  const keep = ["model", "tokensUsed", "usageUnknown", "costUsd", "latencyMs", "errorType", "statusCode", "severity", "tokenIndex", "content", "finishReason", "usagePercent", "threshold", "source", "limitType", "remaining"];
  return keep.filter((k) => p[k] !== undefined && p[k] !== "").map((k) => k + "=" + esc(typeof p[k] === "string" ? p[k].slice(0, 40) : p[k])).join(" ");
}
function addEvent(ev) {
  const kind = KINDS.find((k) => ev[k]) || "?";
  const row = document.createElement("tr");
  row.innerHTML = "<td>" + esc(ev.time) + "</td><td>" + esc(kind) + "</td><td>" + esc(ev.orgId) + " / " + esc(ev.app) + "</td><td>" + summary(ev[kind] || {}) + "</td>";
  const body = $("#feed tbody");
  body.prepend(row);
  while (body.rows.length > 50) body.deleteRow(-1);
}
// Connect server streaming over HTTP/1.1: enveloped JSON messages (1 flag byte, 4 length bytes).
let cursor = "";
let watching = false;
async function watch() {
  if (watching) return;
  watching = true;
  try {
    const req = new TextEncoder().encode(JSON.stringify(cursor ? {cursor} : {}));
    const body = new Uint8Array(5 + req.length);
    new DataView(body.buffer).setUint32(1, req.length);
    body.set(req, 5);
    const res = await fetch("/aigw.v1.FeedService/Watch", {method: "POST", headers: headers("application/connect+json"), body});
    if (!res.ok) { needsToken(res.status); throw new Error("Watch: HTTP " + res.status); }
    const reader = res.body.getReader();
    let buf = new Uint8Array(0);
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      const next = new Uint8Array(buf.length + value.length); next.set(buf); next.set(value, buf.length); buf = next;
      while (buf.length >= 5) {
        const len = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
        if (buf.length < 5 + len) break;
        const flags = buf[0];
        const msg = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + len)));
        buf = buf.subarray(5 + len);
        if (flags & 2) { if (msg.error) { needsToken(msg.error.code === "unauthenticated" ? 401 : 0); throw new Error("Watch: " + msg.error.message); } continue; }
        if (msg.cursor) cursor = msg.cursor;
        if (msg.event) addEvent(msg.event);
      }
    }
  } catch (e) { $("#error").textContent = String(e.message || e); }
  watching = false;
  setTimeout(watch, 2000);
}
refresh(); setInterval(refresh, 2000); watch();
</script></body></html>
`;
