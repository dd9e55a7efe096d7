#!/usr/bin/env node
// Thin entry point: the CLI lives in cli/main.ts (built to dist/ by `npm ci` / `npm run build`).
import { main } from "../dist/cli/main.js";

// The first SIGINT or SIGTERM asks long-running commands to stop gracefully (the control
// plane drains its webhook requests in flight); a second one exits at once.
let stopping = false;
const stopped = new Promise((resolve) => {
  const onSignal = (signal) => {
    if (stopping) {
      process.stderr.write(`aigw: ${signal} again; exiting now\n`);
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    stopping = true;
    resolve();
  };
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, onSignal);
});
const code = await main(process.argv.slice(2), {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  env: process.env,
  isTTY: process.stdout.isTTY === true,
  stopped,
});
process.exit(code);
