import { createLogger, type Logger } from "../common/logger.js";
import { parseHostPort } from "../common/host-port.js";
import { VERSION } from "../common/version.js";
import { type RunningAdminServer, startAdminServer } from "./admin/admin-server.js";
import { ProxyMetrics } from "./proxy/proxy-metrics.js";
import { type IdleCollection, startIdleCollection } from "./proxy/idle-gc.js";
import { loadNativeMemory, setMallocTrimThreshold } from "./proxy/malloc-trim.js";
import { startProxy } from "./proxy/server.js";
import { boundYoungGeneration, DEFAULT_YOUNG_GENERATION_BYTES } from "./proxy/young-generation.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings, settingsFromSnapshot } from "./proxy/settings.js";
import { Uplink } from "./uplink/uplink.js";

/** The admin port's default (--admin-listen): /healthz, /readyz, /metrics. */
export const DEFAULT_ADMIN_LISTEN = "127.0.0.1:8081";

export interface SidecarOptions {
  /**
   * The control plane's gRPC address ("http://127.0.0.1:7070" or "127.0.0.1:7070"), or several
   * (a list, or comma-separated): the sidecar uses one and moves to the next when it is
   * refused or unreachable.
   */
  controlPlane: string | readonly string[];
  /** HOST:PORT; default 127.0.0.1:8080 (port 0: any free port). */
  listen?: string;
  /** HOST:PORT of /healthz, /readyz and /metrics; default 127.0.0.1:8081 (port 0: any free port). */
  adminListen?: string;
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
  /** The admin port's base URL (http://host:port). */
  adminUrl: string;
  uplink: Uplink;
  close(): Promise<void>;
}

export async function runSidecar(options: SidecarOptions): Promise<RunningSidecar> {
  const logger = options.logger ?? createLogger({ name: "sidecar" });
  const { host, port } = parseHostPort(options.listen ?? "127.0.0.1:8080", "--listen");
  const admin = parseHostPort(options.adminListen ?? DEFAULT_ADMIN_LISTEN, "--admin-listen");
  const controlPlanes = controlPlaneList(options.controlPlane);
  const app = options.app ?? "default";
  const orgId = options.orgId ?? "default";
  const youngGenerationBytes = youngGenerationFromEnvironment();
  const idleCollectionMs = idleCollectionFromEnvironment();
  // The native memory calls (malloc-trim.ts): malloc's trim threshold from the start, the
  // idle collection's calls after loads.
  const native = loadNativeMemory();
  const trimThreshold = setMallocTrimThreshold(native);
  if (native === undefined) {
    logger.debug("idle collection with gc() alone (dist/sidecar/malloc-trim.node not built or not loadable)");
  } else {
    logger.debug({ trimThreshold }, "malloc trim threshold");
  }
  // Until the control plane has spoken; then its latest good snapshot.
  let settings: ProxySettings = DEFAULT_PROXY_SETTINGS;
  const uplink = new Uplink({
    target: controlPlanes,
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
  const metrics = new ProxyMetrics();
  let adminServer: RunningAdminServer | undefined;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  try {
    adminServer = await startAdminServer({ host: admin.host, port: admin.port, uplink, proxy: metrics });
    proxy = await startProxy({
      host,
      port,
      upstreams: options.upstreams ?? { openai: "https://api.openai.com" },
      sink: uplink,
      orgId,
      app,
      logger: logger.child({ component: "proxy" }),
      settings: () => settings,
      metrics,
    });
  } catch (err) {
    await adminServer?.close();
    await uplink.close();
    throw err;
  }
  let idleCollection: IdleCollection | undefined;
  if (idleCollectionMs > 0) {
    idleCollection = startIdleCollection({
      idleMs: idleCollectionMs,
      // Busy is the proxy serving or the uplink sending: a backlog the control plane takes
      // after the load has stopped is garbage too, and is collected once it is sent.
      activity: () => metrics.dispatched + uplink.eventsAcked,
      lowMemoryNotification: native?.lowMemoryNotification,
      mallocTrim: native?.mallocTrim,
      onCollect: (info) => logger.debug(info, "idle: full garbage collection"),
    });
  }
  const youngGeneration = boundYoungGeneration(youngGenerationBytes);
  const adminUrl = adminServer.url;
  logger.info({ url: proxy.url, admin: adminUrl, controlPlanes, upstreams: options.upstreams }, "sidecar ready");
  return {
    url: proxy.url,
    adminUrl,
    uplink,
    close: async () => {
      idleCollection?.stop();
      youngGeneration.stop();
      await proxy.close();
      await uplink.flush({ timeoutMs: 5000 }).catch(() => {});
      await uplink.close();
      await adminServer.close();
    },
  };
}

/** Every address of a repeated or comma-separated --control-plane, each checked at start. */
export function controlPlaneList(given: string | readonly string[]): string[] {
  const list = (typeof given === "string" ? [given] : given)
    .flatMap((entry) => entry.split(","))
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  if (list.length === 0) {
    throw new Error("--control-plane: at least one address is required (for example http://127.0.0.1:7070)");
  }
  for (const address of list) checkControlPlaneAddress(address);
  return list;
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

/**
 * How long the sidecar is quiet before its idle collection gives the load's memory back:
 * 30 s unless AIGW_SIDECAR_IDLE_GC says (seconds; 0 turns it off). Not sooner: what it gives
 * back, the next busy period takes again, a page fault at a time (7,000–7,500 faults, 30 MB,
 * in the first second of load after each collection, measured), and those land on requests.
 * A pause of a few seconds between bursts is traffic, not idleness.
 */
export const DEFAULT_IDLE_COLLECTION_MS = 30_000;

function idleCollectionFromEnvironment(): number {
  const seconds = numberFromEnvironment(
    "AIGW_SIDECAR_IDLE_GC",
    86_400,
    "a number of seconds (expected 0..86400; 0 turns the idle collection off)",
  );
  return seconds === undefined ? DEFAULT_IDLE_COLLECTION_MS : seconds * 1000;
}

/** The young generation's bound: 8 MiB unless AIGW_SIDECAR_YOUNG_GENERATION_MB says (0: V8's own sizing). */
function youngGenerationFromEnvironment(): number {
  const mb = numberFromEnvironment(
    "AIGW_SIDECAR_YOUNG_GENERATION_MB",
    1024,
    "a size in MiB (expected 0..1024; 0 leaves V8's own sizing)",
  );
  return mb === undefined ? DEFAULT_YOUNG_GENERATION_BYTES : mb * 1024 * 1024;
}

/** A number from 0 to `max` in the environment variable `name`; undefined when unset or blank; else refuses, naming it. */
function numberFromEnvironment(name: string, max: number, expected: string): number | undefined {
  const value = process.env[name];
  if (value === undefined || value.trim() === "") return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > max) throw new Error(`${name}: ${JSON.stringify(value)} is not ${expected}`);
  return n;
}
