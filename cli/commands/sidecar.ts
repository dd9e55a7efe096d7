import { existsSync } from "node:fs";
import type { CommandGroup } from "../command.js";
import { UsageError } from "../command.js";
import { parseHostPort } from "../../common/host-port.js";
import { isTestEvent } from "../../common/test-events.js";

type SidecarModule = typeof import("../../sidecar/run.js");

/**
 * HOST:PORT or a usage error. This module imports nothing that loads generated code or the
 * other verbs' helpers: the sidecar's own code comes from its bundle.
 */
function checkHostPort(text: string, flag: string): void {
  try {
    parseHostPort(text, flag);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * The sidecar's code: the one-file bundle the build makes (dist/sidecar/run.bundle.js, see
 * scripts/build-sidecar.mjs) when it is there, else the modules (running from the sources).
 */
async function loadSidecar(): Promise<SidecarModule> {
  const bundle = new URL("../../sidecar/run.bundle.js", import.meta.url);
  if (existsSync(bundle)) return (await import(bundle.href)) as SidecarModule;
  return await import("../../sidecar/run.js");
}

export const sidecar: CommandGroup = {
  name: "sidecar",
  summary: "the sidecar beside each app: its provider base URL, reporting events to the control plane",
  section: "run",
  verbs: [
    {
      name: "",
      summary: "run a sidecar until SIGINT/SIGTERM",
      synopsis: [
        "--control-plane URL[,URL…] [--listen HOST:PORT] [--admin-listen HOST:PORT] [--upstream URL | --upstream NAME=URL …] [--org ID] [--app NAME] [--token T] [--spool DIR]",
      ],
      details:
        "The app's base URL for its provider (default listen 127.0.0.1:8080, upstream\n" +
        'https://api.openai.com). /v1/messages (and paths below it) go to the "anthropic"\n' +
        'upstream, other paths to "openai" (or to the single --upstream). Per request:\n' +
        '"Prefer: respond-async" answers 202 and delivers the result by webhook (status at\n' +
        'GET /aigw/v1/requests/{id}); "x-aigw-webhook-url: URL" adds a one-off endpoint.\n' +
        "--control-plane may be repeated or comma-separated: one is used, the next when it is\n" +
        "refused or unreachable. /healthz, /readyz and /metrics on --admin-listen.",
      flags: {
        "control-plane": {
          type: "string",
          value: "URL",
          required: true,
          multiple: true,
          help: "a control plane's gRPC address, e.g. http://127.0.0.1:7070 (repeat, or URL,URL, for fallbacks)",
        },
        listen: { type: "string", value: "HOST:PORT", help: "where the app connects (default 127.0.0.1:8080)" },
        "admin-listen": {
          type: "string",
          value: "HOST:PORT",
          help: "/healthz, /readyz and /metrics of the sidecar (default 127.0.0.1:8081)",
        },
        upstream: {
          type: "string",
          value: "URL",
          multiple: true,
          help: "the provider's origin, or NAME=URL (openai, anthropic) once per provider",
        },
        org: { type: "string", value: "ID", help: "the org its events belong to" },
        app: { type: "string", value: "NAME", help: "the app its events belong to" },
        token: { type: "string", value: "T", help: "sidecar bearer token (env AIGW_SIDECAR_TOKEN)" },
        spool: { type: "string", value: "DIR", help: "on-disk spool for events while the control plane is away" },
      },
      async run({ flags, io }) {
        const controlPlane = flags.list("control-plane");
        const token = flags.string("token") ?? io.env.AIGW_SIDECAR_TOKEN;
        const listen = flags.string("listen");
        const adminListen = flags.string("admin-listen");
        if (listen !== undefined) checkHostPort(listen, "--listen");
        if (adminListen !== undefined) checkHostPort(adminListen, "--admin-listen");
        const org = flags.string("org");
        const app = flags.string("app");
        if (app !== undefined && isTestEvent({ app }))
          throw new UsageError(
            `--app: "${app}" is the app of test events (aigw endpoints send-test); choose another name`,
          );
        const spool = flags.string("spool");
        const { runSidecar } = await loadSidecar();
        const sc = await runSidecar({
          controlPlane,
          ...(listen ? { listen } : {}),
          ...(adminListen ? { adminListen } : {}),
          upstreams: parseUpstreams(flags.list("upstream")),
          ...(org ? { orgId: org } : {}),
          ...(app ? { app } : {}),
          ...(token ? { token } : {}),
          ...(spool ? { spoolDir: spool } : {}),
        });
        await io.stopped;
        await sc.close();
        return 0;
      },
    },
  ],
};

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
      throw new UsageError(`--upstream: "${spec}" is not a URL or NAME=URL (for example https://api.openai.com)`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new UsageError(`--upstream: "${spec}" must be an http or https URL`);
    }
    if (out[name] !== undefined) throw new UsageError(`--upstream: "${name}" given twice`);
    out[name] = url.replace(/\/+$/, "");
  }
  return out;
}
