// Bundles the sidecar (dist/sidecar/run.js and everything it imports but undici) with
// esbuild into one module, dist/sidecar/run.bundle.js, which `aigw sidecar` loads when it is
// there. One module instead of ~150 files: only the parts of @bufbuild/protobuf and pino the
// sidecar uses, and no module records or per-file wrappers; the sidecar's idle RSS is
// ~8 MB lower (README, "Sidecar performance"). Not minified, so stack traces keep their names.
import { build } from "esbuild";
import { statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = join(root, "dist", "sidecar", "run.js");
const outfile = join(root, "dist", "sidecar", "run.bundle.js");

await build({
  entryPoints: [entry],
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  outfile,
  // The proxy requires undici's Pool by path (createRequire), so undici stays in node_modules.
  // CommonJS packages bundled into ESM call require() for Node's own modules: give them one.
  banner: {
    js: 'import { createRequire as __aigwCreateRequire } from "node:module";\nconst require = __aigwCreateRequire(import.meta.url);',
  },
  legalComments: "none",
  logLevel: "warning",
});
console.log(`sidecar: ${relative(root, outfile)} (${Math.round(statSync(outfile).size / 1024)} KiB)`);

// The sidecar's native memory calls (sidecar/native/malloc-trim.c: malloc_trim, malloc's trim
// threshold, V8's low-memory collection): a Node-API module built with the C compiler alone
// (no node-gyp, no Node headers). Linux only; without a compiler the sidecar runs without it,
// collecting with gc() alone, and says so in its debug log (RSS after a load stays higher).
if (process.platform === "linux") {
  const { spawnSync } = await import("node:child_process");
  const compiler = process.env.CC || "cc";
  const source = join(root, "sidecar", "native", "malloc-trim.c");
  const addon = join(root, "dist", "sidecar", "malloc-trim.node");
  const built = spawnSync(compiler, ["-shared", "-fPIC", "-O2", "-Wall", "-o", addon, source], { encoding: "utf8" });
  if (built.status === 0) console.log(`sidecar: ${relative(root, addon)}`);
  else
    console.log(
      `sidecar: ${relative(root, addon)} not built (${compiler}: ${(built.error?.message ?? built.stderr).trim().split("\n")[0]}); the sidecar runs without its native memory calls`,
    );
}
