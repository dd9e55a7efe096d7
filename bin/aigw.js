#!/usr/bin/env node
// Thin entry point: the CLI lives in cli/main.ts (built to dist/ by `npm ci` / `npm run build`).
import { main } from "../dist/cli/main.js";

const stopped = new Promise((resolve) => {
  for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => resolve());
});
const code = await main(process.argv.slice(2), {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  env: process.env,
  isTTY: process.stdout.isTTY === true,
  stopped,
});
process.exit(code);
