import { createLogger, type Logger } from "../common/logger.js";
import { parseHostPort } from "../common/host-port.js";
import { VERSION } from "../common/version.js";
import { startProxy } from "./proxy/server.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings, settingsFromSnapshot } from "./proxy/settings.js";
import { Uplink } from "./uplink/uplink.js";

export interface SidecarOptions {
  /** The control plane's gRPC address: "http://127.0.0.1:7070" or "127.0.0.1:7070". */
  controlPlane: string;
  /** HOST:PORT; default 127.0.0.1:8080 (port 0: any free port). */
  listen?: string;
  /** name → origin; default { openai: "https://api.openai.com" }. */
  upstreams?: Record<string, string>;
  orgId?: string;
  app?: string;
  token?: string;
  spoolDir?: string;
  logger?: Logger;
}

export interface RunningSidecar {
  url: string;
  uplink: Uplink;
  close(): Promise<void>;
}

export async function runSidecar(options: SidecarOptions): Promise<RunningSidecar> {
  const logger = options.logger ?? createLogger({ name: "sidecar" });
  const { host, port } = parseHostPort(options.listen ?? "127.0.0.1:8080", "--listen");
  checkControlPlaneAddress(options.controlPlane);
  const app = options.app ?? "default";
  const orgId = options.orgId ?? "default";
  // Until the control plane has spoken; then its latest good snapshot.
  let settings: ProxySettings = DEFAULT_PROXY_SETTINGS;
  const uplink = new Uplink({
    target: options.controlPlane,
    ...(options.token ? { token: options.token } : {}),
    orgId,
    app,
    version: VERSION,
    spoolDir: options.spoolDir ?? `.aigw/spool-${app}`,
    logger: logger.child({ component: "uplink" }),
    onConfig: (snapshot) => {
      settings = settingsFromSnapshot(snapshot);
      logger.info(
        { version: String(snapshot.version), wanted: [...settings.wantedEventTypes] },
        "config snapshot applied",
      );
    },
  });
  await uplink.start();
  const proxy = await startProxy({
    host,
    port,
    upstreams: options.upstreams ?? { openai: "https://api.openai.com" },
    sink: uplink,
    orgId,
    app,
    logger: logger.child({ component: "proxy" }),
    settings: () => settings,
  }).catch(async (err: unknown) => {
    await uplink.close();
    throw err;
  });
  logger.info({ url: proxy.url, controlPlane: options.controlPlane, upstreams: options.upstreams }, "sidecar ready");
  return {
    url: proxy.url,
    uplink,
    close: async () => {
      await proxy.close();
      await uplink.flush({ timeoutMs: 5000 }).catch(() => {});
      await uplink.close();
    },
  };
}

/** "http://host:port", "https://host:port" (TLS) or "host:port"; refused at start, not retried forever. */
function checkControlPlaneAddress(address: string): void {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
  let url: URL | undefined;
  try {
    url = new URL(withScheme);
  } catch {
    url = undefined;
  }
  if (
    !url ||
    (url.protocol !== "http:" && url.protocol !== "https:") ||
    url.hostname === "" ||
    url.pathname.length > 1
  ) {
    throw new Error(
      `--control-plane: "${address}" is not the control plane's gRPC address (for example http://127.0.0.1:7070)`,
    );
  }
}
