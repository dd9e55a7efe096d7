import { parseDuration } from "../../common/duration.js";
import { checkStorageUrl } from "../../control-plane/config/checks.js";
import type { CommandGroup } from "../command.js";
import { UsageError } from "../command.js";
import { checkHostPort } from "../values.js";

export const controlPlane: CommandGroup = {
  name: "control-plane",
  summary: "the control plane: stores events, delivers webhooks, serves the Admin API and the feed",
  section: "run",
  verbs: [
    {
      name: "",
      summary: "run the control plane until SIGINT/SIGTERM",
      synopsis: [
        "--config FILE [--store sqlite:PATH | postgres://…] [--grpc HOST:PORT] [--http HOST:PORT] [--drain-timeout DURATION]",
      ],
      details:
        "gRPC + Connect (h2c) on --grpc: sidecars, the feed and the Admin API. On --http (HTTP/1.1):\n" +
        "the dashboard at /, /metrics, /healthz, /readyz, and the Admin API as Connect JSON and\n" +
        "gRPC-Web. Beyond loopback it refuses to start without auth.admin_tokens and\n" +
        "auth.sidecar_tokens in the config.\n\n" +
        "SIGTERM or SIGINT stops claiming, waits for webhook requests in flight up to\n" +
        "--drain-timeout, hands unfinished deliveries back and exits; a second signal exits at\n" +
        "once. Nothing acknowledged to a sidecar is lost either way.",
      flags: {
        config: {
          type: "string",
          value: "FILE",
          required: true,
          help: "the config (e.g. examples/webhook_config.yaml)",
        },
        store: {
          type: "string",
          value: "URL",
          help: "sqlite:PATH or postgres://… (default: the config's storage.url, else sqlite:.aigw/aigw.db)",
        },
        grpc: { type: "string", value: "HOST:PORT", help: "gRPC + Connect listen address (default 127.0.0.1:7070)" },
        http: { type: "string", value: "HOST:PORT", help: "HTTP/1.1 listen address (default 127.0.0.1:7080)" },
        "drain-timeout": {
          type: "string",
          value: "DURATION",
          help: "on SIGTERM, how long webhook requests in flight may finish (default 10s)",
        },
      },
      async run({ flags, io }) {
        const configPath = flags.string("config");
        if (configPath === undefined || configPath === "") throw new UsageError("--config FILE is required");
        const store = flags.string("store");
        const grpc = flags.string("grpc");
        const http = flags.string("http");
        if (store !== undefined) {
          const problem = checkStorageUrl(store);
          if (problem !== undefined) throw new UsageError(`--store: ${problem}`); // the URL is not echoed: it may hold a password
        }
        if (grpc !== undefined) checkHostPort(grpc, "--grpc");
        if (http !== undefined) checkHostPort(http, "--http");
        const drain = flags.string("drain-timeout");
        let drainTimeoutMs: number | undefined;
        try {
          drainTimeoutMs = drain === undefined ? undefined : parseDuration(drain, "--drain-timeout");
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
        // Loaded on use: `aigw --help` and the admin verbs start without the control plane's code.
        const { runControlPlane } = await import("../../control-plane/run.js");
        const cp = await runControlPlane({
          configPath,
          ...(store ? { store } : {}),
          ...(grpc ? { grpc } : {}),
          ...(http ? { http } : {}),
          ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}),
          env: io.env,
        });
        await io.stopped;
        await cp.close();
        return 0;
      },
    },
  ],
};
