import { resolve } from "node:path";
import type { Logger } from "../../common/logger.js";
import type { StorageConfig } from "../config/types.js";
import { isLoopbackHost } from "../http/auth.js";
import type { HostPort } from "../http/listen.js";
import { keyFileBeside } from "../store/secret-box.js";

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
