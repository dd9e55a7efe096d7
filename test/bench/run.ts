// `npm run bench`: every benchmark, one table. Each row is measured against a baseline taken
// in the same run, so the ratios mean something on any machine; nothing here gates CI.
// `npm run bench -- --update-readme` also writes the table into README.md; `npm run bench --
// delivery` (or any prefix of a part's name) runs only those parts.
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { benchDelivery } from "./delivery.bench.js";
import { benchDeliveryBacklog } from "./delivery-backlog.bench.js";
import { benchDeliveryEndToEnd } from "./delivery-e2e.bench.js";
import { benchSidecar } from "./sidecar.bench.js";
import type { BenchRow } from "./types.js";

const fmt = (n: number | undefined, digits = 3): string =>
  n === undefined ? "" : Math.abs(n) >= 100 ? n.toFixed(0) : n.toPrecision(digits);

function table(rows: BenchRow[]): string {
  const head =
    "| benchmark | aigw | unit | baseline | baseline value | ratio | target |\n|---|---|---|---|---|---|---|";
  const body = rows
    .map(
      (r) =>
        `| ${r.name} | ${fmt(r.value)} | ${r.unit} | ${r.baseline ?? ""} | ${fmt(r.baselineValue)} | ${r.ratio === undefined ? "" : r.ratio.toFixed(2)} | ${r.target ?? ""} |`,
    )
    .join("\n");
  return `${head}\n${body}`;
}

const parts = [
  ["sidecar proxy", benchSidecar],
  ["delivery throughput", benchDelivery],
  ["delivery backlog", benchDeliveryBacklog],
  ["delivery end to end", benchDeliveryEndToEnd],
] as const;
const wanted = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const rows: BenchRow[] = [];
for (const [name, bench] of parts) {
  if (wanted.length > 0 && !wanted.some((w) => name.startsWith(w))) continue;
  process.stderr.write(`running ${name} benchmark…\n`);
  rows.push(...(await bench()));
}
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`;
const out = `${table(rows)}\n\nMeasured ${new Date().toISOString().slice(0, 10)} on ${machine} with \`npm run bench\`.`;
console.log(out);
if (process.argv.includes("--update-readme")) {
  const readme = new URL("../../README.md", import.meta.url);
  const text = readFileSync(readme, "utf8");
  const next = text.replace(
    /<!-- bench:start -->[\s\S]*<!-- bench:end -->/,
    `<!-- bench:start -->\n${out}\n<!-- bench:end -->`,
  );
  writeFileSync(readme, next);
}
