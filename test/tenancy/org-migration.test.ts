import Database from "better-sqlite3";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { openLocation, skipWithoutPostgres, testStoreLocation } from "../support/store.js";
import { LATER_POSTGRES, LATER_SQLITE } from "../support/later-migrations.js";

// Schema v6 (orgs): a store from before keeps its one-off endpoints one-off (their org_id
// meant that then) and its configured endpoints operator endpoints.

const noPostgres = await skipWithoutPostgres("the PostgreSQL org migration test");

async function oneOffAndConfigured(backend: "sqlite" | "postgres", rewind: (url: string) => Promise<void>) {
  const location = await testStoreLocation(backend);
  try {
    const store = await openLocation(location);
    await store.upsertEndpoint(
      { name: "primary", url: "https://a.example.com/h", enabled: true, eventTypes: [], failoverTo: "" },
      "s1",
    );
    await store.ensureOneOffEndpoint("oneoff-0123456789abcdef", "acme", "https://b.example.com/cb", () => "s2");
    await store.close();
    await rewind(location.url);
    const migrated = await openLocation(location);
    expect((await migrated.listEndpoints()).map((e) => [e.name, e.orgId, e.oneOff])).toEqual([["primary", "", false]]);
    expect(await migrated.getEndpoint("oneoff-0123456789abcdef")).toMatchObject({
      orgId: "acme",
      oneOff: true,
      apps: [],
    });
    expect((await migrated.activeSigningKeys("oneoff-0123456789abcdef", Date.now())).map((k) => k.secret)).toEqual([
      "s2",
    ]);
    expect(await migrated.listTokens()).toEqual([]);
    await migrated.close();
  } finally {
    await location.cleanup();
  }
}

describe("endpoints across the orgs migration (SQLite v6, PostgreSQL v3)", () => {
  it("SQLite", async () => {
    await oneOffAndConfigured("sqlite", async (url) => {
      const raw = new Database(url.slice("sqlite:".length));
      raw.exec(LATER_SQLITE);
      raw.exec(
        "ALTER TABLE endpoints DROP COLUMN one_off; ALTER TABLE endpoints DROP COLUMN apps; DROP TABLE api_tokens",
      );
      raw.prepare("DELETE FROM schema_version WHERE version >= 6").run();
      raw.close();
    });
  });

  it.skipIf(noPostgres)("PostgreSQL", async () => {
    await oneOffAndConfigured("postgres", async (url) => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(LATER_POSTGRES);
        await client.query(
          "ALTER TABLE endpoints DROP COLUMN one_off; ALTER TABLE endpoints DROP COLUMN apps; DROP TABLE api_tokens",
        );
        await client.query("DELETE FROM aigw_schema_version WHERE version >= 3");
      } finally {
        await client.end();
      }
    });
  });
});
