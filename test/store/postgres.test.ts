import pg from "pg";
import { afterAll, beforeAll, describe } from "vitest";
import { openPostgresStore } from "../../control-plane/store/postgres/store.js";
import { createTestDatabase, skipWithoutPostgres, TEST_ENCRYPTION_KEY } from "../support/store.js";
import { describeStoreConformance } from "./conformance.js";

// The same conformance suite as SQLite's, on a real PostgreSQL: one database for this
// file, emptied before each test.
const skip = await skipWithoutPostgres("the PostgreSQL store conformance suite");

describe.skipIf(skip)("PostgreSQL store", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  describeStoreConformance("postgres", async () => {
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      const tables = await admin.query<{ tablename: string }>(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('aigw_schema_version', 'meta')",
      );
      if (tables.rows.length > 0) {
        await admin.query(`TRUNCATE ${tables.rows.map((t) => t.tablename).join(", ")} RESTART IDENTITY CASCADE`);
      }
    } finally {
      await admin.end();
    }
    const store = await openPostgresStore(db.url, { encryptionKey: TEST_ENCRYPTION_KEY });
    return { store, cleanup: () => store.close() };
  });
});
