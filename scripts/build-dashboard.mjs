// Bundles the dashboard (control-plane/dashboard-ui) with esbuild into one HTML file,
// dist/dashboard/index.html: script and styles inline, so the page loads with one request
// (the login page fetches it with the admin token, which a <script src> could not send).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const ui = join(root, "control-plane", "dashboard-ui");
const out = join(root, "dist", "dashboard");

const result = await build({
  entryPoints: [join(ui, "main.ts")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["chrome111", "firefox115", "safari16"],
  minify: true,
  legalComments: "none",
  write: false,
  tsconfig: join(ui, "tsconfig.json"),
  logLevel: "warning",
});
const script = result.outputFiles[0].text.replaceAll("</script", "<\\/script");
const css =
  readFileSync(join(root, "node_modules", "uplot", "dist", "uPlot.min.css"), "utf8") +
  readFileSync(join(ui, "style.css"), "utf8");
const html = readFileSync(join(ui, "index.html"), "utf8")
  .replace("/*STYLE*/", () => css.replaceAll("</style", "<\\/style"))
  .replace("/*SCRIPT*/", () => script);
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "index.html"), html);
console.log(`dashboard: ${join("dist", "dashboard", "index.html")} (${Math.round(html.length / 1024)} KiB)`);
