import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { ulid } from "../../common/ids.js";
import { openStore } from "../../control-plane/store/open.js";
import type { Store } from "../../control-plane/store/store.js";

/**
 * The one way tests get a store, so the whole suite runs on either backend:
 * AIGW_TEST_STORE=postgres (default sqlite) gives each test file a fresh PostgreSQL
 * database on AIGW_TEST_PG_URL's server (default postgres://postgres@127.0.0.1:5432),
 * dropped afterwards.
 */
export type TestBackend = "sqlite" | "postgres";

export const TEST_BACKEND: TestBackend = process.env.AIGW_TEST_STORE === "postgres" ? "postgres" : "sqlite";
const PG_SERVER = process.env.AIGW_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
/** The key PostgreSQL stores need (replicas share it); a fixed test value. */
export const TEST_ENCRYPTION_KEY = Buffer.alloc(32, 42).toString("base64");

let reachable: Promise<boolean> | undefined;

/** Whether the test PostgreSQL server answers (asked once per test file). */
export function postgresReachable(): Promise<boolean> {
  reachable ??= (async () => {
    const client = new pg.Client({ connectionString: PG_SERVER, connectionTimeoutMillis: 3_000 });
    try {
      await client.connect();
      await client.query("SELECT 1");
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  })();
  return reachable;
}

/**
 * For describe.skipIf: true when PostgreSQL is not reachable here, saying so once; under
 * CI=true an unreachable PostgreSQL is an error instead (those tests must run in CI).
 */
export async function skipWithoutPostgres(what: string): Promise<boolean> {
  if (await postgresReachable()) return false;
  if (process.env.CI) throw new Error(`${what} needs PostgreSQL at ${PG_SERVER} (CI=true: it must run)`);
  console.warn(`skipping ${what}: no PostgreSQL at ${PG_SERVER} (set AIGW_TEST_PG_URL)`);
  return true;
}

/** A fresh, empty database on the test server; drop() removes it (and its connections). */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `aigw_t_${ulid().toLowerCase()}`;
  const admin = new pg.Client({ connectionString: PG_SERVER });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_SERVER);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: PG_SERVER });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export interface TestStoreLocation {
  /** A --store / storage.url value. */
  url: string;
  /** storage.encryption_key to use with it (always set for PostgreSQL). */
  encryptionKey?: string;
  cleanup(): Promise<void>;
}

/** Where a test's control plane or store keeps its data, on the backend under test. */
export async function testStoreLocation(backend: TestBackend = TEST_BACKEND): Promise<TestStoreLocation> {
  if (backend === "postgres") {
    const db = await createTestDatabase();
    return { url: db.url, encryptionKey: TEST_ENCRYPTION_KEY, cleanup: () => db.drop() };
  }
  const dir = mkdtempSync(join(tmpdir(), "aigw-store-"));
  return {
    url: `sqlite:${join(dir, "aigw.db")}`,
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A store opened on the backend under test; cleanup() closes and removes it. */
export async function openTestStore(
  backend: TestBackend = TEST_BACKEND,
): Promise<{ store: Store; location: TestStoreLocation; cleanup(): Promise<void> }> {
  const location = await testStoreLocation(backend);
  const store = await openLocation(location);
  return {
    store,
    location,
    async cleanup() {
      await store.close();
      await location.cleanup();
    },
  };
}

/**
 * A config file's text with the storage key a PostgreSQL store needs (for control planes
 * started as processes with `--store`); unchanged for SQLite or when it names one itself.
 */
export function withStorageKey(yaml: string, location: TestStoreLocation): string {
  if (!location.encryptionKey || /^storage:/m.test(yaml)) return yaml;
  return `${yaml}\nstorage:\n  encryption_key: "${location.encryptionKey}"\n`;
}

/** Opens the store at a location (again: a second process, a restart). */
export function openLocation(location: TestStoreLocation): Promise<Store> {
  return openStore(location.url, location.encryptionKey ? { encryptionKey: location.encryptionKey } : {});
}
