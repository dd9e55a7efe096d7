import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The dashboard page: control-plane/dashboard-ui, bundled by `npm run build` into one file
 * (dist/dashboard/index.html, script and styles inline) that talks to the Admin and Feed
 * services over Connect on the same origin. With auth.admin_tokens set, the page itself
 * needs the token too: GET / without it answers the login page below, which fetches this
 * one with the token.
 * An org's admin token works as well: the Admin API scopes every answer to its org, and the
 * page says which (WhoAmI) in #scope.
 */
export function dashboardHtml(): string {
  page ??= readDashboard();
  return page;
}

let page: string | undefined;

function readDashboard(): string {
  // From control-plane/http (sources under tsx) or dist/control-plane/http (built): the
  // package root is the nearest folder up with a package.json.
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  const file = join(dir, "dist", "dashboard", "index.html");
  if (!existsSync(file)) return missingDashboard(file);
  return readFileSync(file, "utf8");
}

function missingDashboard(file: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>aigw</title></head><body>
<h1>aigw control plane</h1><p id="error">The dashboard is not built: ${file} is missing. Run <code>npm run build</code>.</p>
<p><a href="/metrics">/metrics</a></p></body></html>`;
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
