import type { Logger } from "../../common/logger.js";
import { openPostgresStore } from "./postgres/store.js";
import { openSqliteStore } from "./sqlite/store.js";
import type { Store } from "./store.js";

export interface OpenStoreOptions {
  /** base64 of 32 bytes for signing secrets at rest; absent or "": a key file beside a SQLite file. */
  encryptionKey?: string;
  logger?: Logger;
}

/**
 * Opens the store a `storage.url` / `--store` value names: "sqlite:PATH" (PATH relative
 * to the working directory) or "postgres://…".
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length);
    if (path === "") throw new Error(`store url "${url}": the SQLite file path is missing (e.g. sqlite:.aigw/aigw.db)`);
    if (path === ":memory:" || path.startsWith("file:")) {
      throw new Error(`store url "${url}": the store must be a real file path, so events survive a restart`);
    }
    return openSqliteStore(path, options);
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    return openPostgresStore(url, options);
  }
  throw new Error(`store url "${url}" is not supported: use sqlite:PATH or postgres://...`);
}
