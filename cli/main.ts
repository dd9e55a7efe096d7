import { parseArgs } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import { parseDuration } from "../common/duration.js";
import { errorCodeOf } from "../common/errors.js";
import { describeRpcError } from "../common/rpc-errors.js";
import { VERSION } from "../common/version.js";
import { ConfigError } from "../control-plane/config/types.js";
import { runSidecar } from "../sidecar/run.js";
import { ADMIN_USAGE, runAdminCommand } from "./admin-commands.js";

export const USAGE = `aigw ${VERSION} — signed, retried webhooks for your AI traffic

Usage:
  aigw control-plane --config FILE [--store sqlite:PATH | postgres://…] [--grpc HOST:PORT] [--http HOST:PORT]
                     [--drain-timeout DURATION]
      gRPC + Connect (h2c) on --grpc (default 127.0.0.1:7070); dashboard, /metrics, /healthz,
      /readyz and the Admin API (Connect JSON, gRPC-Web) on --http (default 127.0.0.1:7080).
      SIGTERM or SIGINT stops claiming, waits for webhook requests in flight up to
      --drain-timeout (default 10s), hands unfinished deliveries back and exits; a second
      signal exits at once. Nothing acknowledged to a sidecar is lost either way.
  aigw sidecar --control-plane URL[,URL…] [--listen HOST:PORT] [--admin-listen HOST:PORT]
               [--upstream URL | --upstream NAME=URL …] [--org ID] [--app NAME] [--token T] [--spool DIR]
      The app's base URL for its provider (default listen 127.0.0.1:8080, upstream
      https://api.openai.com). /v1/messages (and paths below it) go to the "anthropic"
      upstream, other paths to "openai" (or to the single --upstream). Per request:
      "Prefer: respond-async" answers 202 and delivers the result by webhook (status at
      GET /aigw/v1/requests/{id}); "x-aigw-webhook-url: URL" adds a one-off endpoint.
      --control-plane may be repeated or comma-separated: one is used, the next when it is
      refused or unreachable. /healthz, /readyz and /metrics on --admin-listen (default
      127.0.0.1:8081).
  aigw watch [--events completion,error] [--json] [--admin URL] [--token T]
      The live event feed.
  aigw dev
      The whole local stack on embedded defaults (what \`npm start\` runs).

${ADMIN_USAGE}
  aigw --help | --version

Environment: AIGW_ADMIN_URL, AIGW_ADMIN_TOKEN, AIGW_SIDECAR_TOKEN, AIGW_LOG_LEVEL; \${VAR} in config files.
`;

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
  /** Resolves when the process should stop (SIGINT/SIGTERM); long-running commands wait on it. */
  stopped: Promise<void>;
}

/** The CLI: returns the exit code. A thin bin/aigw.js calls this. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case "help":
      case "--help":
      case "-h":
        io.out(USAGE);
        return command === undefined ? 2 : 0;
      case "--version":
      case "version":
        io.out(`${VERSION}\n`);
        return 0;
      case "control-plane":
        return await controlPlane(rest, io);
      case "sidecar":
        return await sidecar(rest, io);
      case "watch":
        return await watch(rest, io);
      case "verify":
        // Loaded on use, like the control plane's modules: the sidecar verb stays small.
        return await (await import("./verify.js")).verifyCommand(rest, io);
      case "dev": {
        const { startLocalStack } = await import("../examples/local-stack.js");
        const stack = await startLocalStack({ out: io.out });
        await io.stopped;
        await stack.close();
        return 0;
      }
      default:
        return await runAdminCommand(argv, io);
    }
  } catch (err) {
    return report(err, io);
  }
}

function report(err: unknown, io: CliIo): number {
  if (err instanceof ConfigError) {
    io.err(`aigw: ${err.code}: ${err.message}\n`);
    return 2;
  }
  if (err instanceof ConnectError) {
    io.err(`aigw: ${describeRpcError(err)}\n`);
    return 1;
  }
  if (err instanceof Error && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS")) {
    io.err(`aigw: ${err.message}\nRun "aigw --help" for usage.\n`);
    return 2;
  }
  const code = errorCodeOf(err);
  io.err(`aigw: ${code ? `${code}: ` : ""}${err instanceof Error ? err.message : String(err)}\n`);
  return 1;
}

async function controlPlane(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string" },
      store: { type: "string" },
      grpc: { type: "string" },
      http: { type: "string" },
      "drain-timeout": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (!values.config) throw usageError("control-plane: --config FILE is required (try examples/webhook_config.yaml)");
  let drainTimeoutMs: number | undefined;
  if (values["drain-timeout"] !== undefined) {
    try {
      drainTimeoutMs = parseDuration(values["drain-timeout"], "--drain-timeout");
    } catch (err) {
      throw usageError((err as Error).message);
    }
  }
  // Loaded on use: the sidecar verb never carries the control plane's modules (RSS).
  const { runControlPlane } = await import("../control-plane/run.js");
  const cp = await runControlPlane({
    configPath: values.config,
    ...(values.store ? { store: values.store } : {}),
    ...(values.grpc ? { grpc: values.grpc } : {}),
    ...(values.http ? { http: values.http } : {}),
    ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}),
    env: io.env,
  });
  await io.stopped;
  await cp.close();
  return 0;
}

async function sidecar(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "control-plane": { type: "string", multiple: true },
      listen: { type: "string" },
      "admin-listen": { type: "string" },
      upstream: { type: "string", multiple: true },
      org: { type: "string" },
      app: { type: "string" },
      token: { type: "string" },
      spool: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const controlPlaneUrl = values["control-plane"];
  if (!controlPlaneUrl?.length)
    throw usageError("sidecar: --control-plane URL is required (for example http://127.0.0.1:7070)");
  const token = values.token ?? io.env.AIGW_SIDECAR_TOKEN;
  const sc = await runSidecar({
    controlPlane: controlPlaneUrl,
    ...(values.listen ? { listen: values.listen } : {}),
    ...(values["admin-listen"] ? { adminListen: values["admin-listen"] } : {}),
    upstreams: parseUpstreams(values.upstream ?? []),
    ...(values.org ? { orgId: values.org } : {}),
    ...(values.app ? { app: values.app } : {}),
    ...(token ? { token } : {}),
    ...(values.spool ? { spoolDir: values.spool } : {}),
  });
  await io.stopped;
  await sc.close();
  return 0;
}

/** `--upstream URL` (one, serving every path) or `--upstream NAME=URL` (several). */
export function parseUpstreams(specs: readonly string[]): Record<string, string> {
  if (specs.length === 0) return { openai: "https://api.openai.com" };
  const out: Record<string, string> = {};
  for (const spec of specs) {
    const m = /^([a-z][a-z0-9_-]*)=(.+)$/i.exec(spec);
    const name = m ? (m[1] as string).toLowerCase() : "openai";
    const url = m ? (m[2] as string) : spec;
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw usageError(`--upstream: "${spec}" is not a URL or NAME=URL (for example https://api.openai.com)`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw usageError(`--upstream: "${spec}" must be an http or https URL`);
    }
    if (out[name] !== undefined) throw usageError(`--upstream: "${name}" given twice`);
    out[name] = url.replace(/\/+$/, "");
  }
  return out;
}

async function watch(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      events: { type: "string" },
      json: { type: "boolean" },
      admin: { type: "string" },
      token: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const abort = new AbortController();
  void io.stopped.then(() => abort.abort());
  const token = values.token ?? io.env.AIGW_ADMIN_TOKEN;
  try {
    const { watchFeed } = await import("./watch.js");
    await watchFeed({
      admin: values.admin ?? io.env.AIGW_ADMIN_URL ?? "http://127.0.0.1:7080",
      ...(token ? { token } : {}),
      events: values.events
        ? values.events
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean)
        : [],
      json: values.json ?? false,
      out: (line) => io.out(`${line}\n`),
      signal: abort.signal,
    });
  } catch (err) {
    if (abort.signal.aborted) return 0;
    throw err;
  }
  return 0;
}

function usageError(message: string): Error {
  return Object.assign(new Error(message), { code: "ERR_PARSE_ARGS_USAGE" });
}
