// `npm run bench`: every benchmark, a table per part. Each row is measured against a baseline
// taken in the same run, so the ratios mean something on any machine; nothing here gates CI.
// `npm run bench -- delivery` (or any prefix of a part's name) runs only those parts;
// `--update-readme` also writes the tables of the parts it ran into README.md.
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { benchDelivery } from "./delivery.bench.js";
import { benchDeliveryBacklog } from "./delivery-backlog.bench.js";
import { benchDeliveryEndToEnd } from "./delivery-e2e.bench.js";
import { benchReplay } from "./replay.bench.js";
import { benchReplicas } from "./replicas.bench.js";
import { benchSidecar } from "./sidecar.bench.js";
import { benchSidecarInstructions } from "./sidecar-instructions.bench.js";
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
  ["proxy instructions", benchSidecarInstructions],
  ["delivery throughput", benchDelivery],
  ["delivery backlog", benchDeliveryBacklog],
  ["delivery end to end", benchDeliveryEndToEnd],
  ["delivery replicas", benchReplicas],
  ["replay by window", benchReplay],
] as const;
const wanted = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`;
const measured: { name: string; text: string }[] = [];
for (const [name, bench] of parts) {
  if (wanted.length > 0 && !wanted.some((w) => name.startsWith(w))) continue;
  process.stderr.write(`running ${name} benchmark…\n`);
  const rows = await bench();
  const text = `${table(rows)}\n\nMeasured ${new Date().toISOString().slice(0, 10)} on ${machine} with \`npm run bench -- "${name}"\`.`;
  measured.push({ name, text });
  console.log(`\n${name}\n\n${text}`);
}
if (process.argv.includes("--update-readme")) {
  // Each part has its own block in README.md; a run replaces the blocks of the parts it ran
  // and leaves the others as they were (a new part's block goes before the end marker).
  const readme = new URL("../../README.md", import.meta.url);
  let text = readFileSync(readme, "utf8");
  for (const { name, text: block } of measured) {
    const start = `<!-- bench:${name} -->`;
    const end = `<!-- /bench:${name} -->`;
    const whole = `${start}\n**${name}**\n\n${block}\n${end}`;
    const at = text.indexOf(start);
    const until = text.indexOf(end);
    if (at >= 0 && until > at) text = text.slice(0, at) + whole + text.slice(until + end.length);
    else if (text.includes("<!-- bench:end -->"))
      text = text.replace("<!-- bench:end -->", `${whole}\n\n<!-- bench:end -->`);
    else throw new Error("README.md has no <!-- bench:end --> marker to put the table before");
  }
  writeFileSync(readme, text);
}
