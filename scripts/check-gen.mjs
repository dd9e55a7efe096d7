// Fails when gen/ differs from what `buf generate` makes of proto/ (CI runs this via npm run check).
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "aigw-gen-"));
try {
  cpSync(join(root, "proto"), join(work, "proto"), { recursive: true });
  cpSync(join(root, "buf.yaml"), join(work, "buf.yaml"));
  cpSync(join(root, "buf.gen.yaml"), join(work, "buf.gen.yaml"));
  const buf = join(root, "node_modules", ".bin", "buf");
  const env = { ...process.env, PATH: `${join(root, "node_modules", ".bin")}:${process.env.PATH}` };
  execFileSync(buf, ["generate"], { cwd: work, env, stdio: "inherit" });
  const list = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const p = join(dir, name);
      return statSync(p).isDirectory() ? list(p) : [p];
    });
  const fresh = new Map(list(join(work, "gen")).map((p) => [relative(join(work, "gen"), p), readFileSync(p, "utf8")]));
  const committed = new Map(
    list(join(root, "gen")).map((p) => [relative(join(root, "gen"), p), readFileSync(p, "utf8")]),
  );
  const stale = [];
  for (const [name, text] of fresh) if (committed.get(name) !== text) stale.push(name);
  for (const name of committed.keys()) if (!fresh.has(name)) stale.push(name);
  if (stale.length > 0) {
    console.error(`gen/ is out of date with proto/ (${stale.join(", ")}): run "npx buf generate" and commit gen/.`);
    process.exit(1);
  }
  console.log("gen/ matches proto/");
} finally {
  rmSync(work, { recursive: true, force: true });
}
