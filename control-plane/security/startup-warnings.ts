import { resolve } from "node:path";
import type { Logger } from "../../common/logger.js";
import type { SecurityConfig, StorageConfig } from "../config/types.js";
import { isLoopbackHost } from "../http/auth.js";
import type { HostPort } from "../http/listen.js";
import { keyFileBeside } from "../store/secret-box.js";
import type { EndpointRecord } from "../store/store.js";
import { DestinationPolicy } from "./destination-policy.js";

// What an operator should hear at start about the security of this deployment.

/**
 * Endpoints created through the Admin API outlive a config change: when the destination
 * rules were tightened (allowed_networks narrowed, require_https turned on), the stored
 * endpoints they now refuse are named at start. Their deliveries fail at once, refused
 * before any connection (the worker applies the same rule), until the URL or the rules change.
 */
export function warnRefusedEndpoints(
  logger: Logger,
  security: SecurityConfig,
  endpoints: readonly EndpointRecord[],
): void {
  const policy = new DestinationPolicy(security);
  for (const endpoint of endpoints) {
    const problem = policy.urlProblem(endpoint.url);
    if (problem === undefined || !endpoint.enabled) continue;
    logger.warn(
      { code: problem.code, endpoint: endpoint.name, problem: problem.message },
      `endpoint ${endpoint.name} is refused by the destination rules (${problem.message}); its deliveries will fail until its url or security.allowed_networks / require_https change`,
    );
  }
}

/**
 * Signing secrets are sealed at rest with storage.encryption_key, or, when it is not set,
 * with a key file created beside the SQLite database. That is fine on a laptop; in
 * production one backup or copy of that folder then holds the secrets and their key. When
 * the control plane listens beyond loopback (a real deployment) with the key file beside
 * the database, this says so at start, with the way out.
 */
export function warnIfKeyBesideDatabase(
  logger: Logger,
  storage: StorageConfig,
  storeUrl: string,
  listeners: readonly HostPort[],
): void {
  if (storage.encryptionKey !== "" || !storeUrl.startsWith("sqlite:")) return;
  const open = listeners.filter((l) => !isLoopbackHost(l.host));
  if (open.length === 0) return;
  const keyFile = keyFileBeside(resolve(storeUrl.slice("sqlite:".length)));
  logger.warn(
    { code: "AIGW_KEY_FILE_BESIDE_DATABASE", keyFile, listen: open.map((l) => `${l.host}:${l.port}`) },
    `signing secrets are sealed with ${keyFile}, beside the database: one copy of that folder holds both. ` +
      `In production set storage.encryption_key from the environment (e.g. "\${AIGW_ENCRYPTION_KEY}") or a mounted secret, ` +
      `with the contents of that file once it exists`,
  );
}
