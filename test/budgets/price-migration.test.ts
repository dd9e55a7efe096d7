import Database from "better-sqlite3";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { LATER_POSTGRES, LATER_SQLITE } from "../support/later-migrations.js";
import { openLocation, skipWithoutPostgres, testStoreLocation } from "../support/store.js";

// A store from before cache prices (SQLite schema 4, PostgreSQL schema 1) keeps its runtime
// prices through the upgrade, their cache prices unset (the default rule), and then keeps
// cache prices set afterwards.

const PRICE = { model: "my-model", inputPerMillion: 2, outputPerMillion: 8 };
const CACHE_COLUMNS = ["cached_input_per_million", "cache_write_per_million", "cache_write_1h_per_million"];
const noPostgres = await skipWithoutPostgres("the PostgreSQL price migration test");

describe("model prices across the cache-price migration", () => {
  it("SQLite: a version 4 database", async () => {
    const location = await testStoreLocation("sqlite");
    try {
      await (await openLocation(location)).close();
      // Back to what version 4 had: the table without the cache columns, one price in it.
      const raw = new Database(location.url.slice("sqlite:".length));
      for (const column of CACHE_COLUMNS) raw.exec(`ALTER TABLE model_prices DROP COLUMN ${column}`);
      // ...and without what later versions added (orgs: v6).
      raw.exec(
        "ALTER TABLE endpoints DROP COLUMN one_off; ALTER TABLE endpoints DROP COLUMN apps; DROP TABLE api_tokens",
      );
      // And without what later migrations added (paused endpoints, replay by window).
      raw.exec(LATER_SQLITE);
      raw.prepare("DELETE FROM schema_version WHERE version > 4").run();
      raw
        .prepare("INSERT INTO model_prices VALUES (?, ?, ?, ?)")
        .run(PRICE.model, PRICE.inputPerMillion, PRICE.outputPerMillion, 0);
      raw.close();

      const store = await openLocation(location);
      expect(await store.listModelPrices()).toEqual([PRICE]);
      await store.putModelPrice({ ...PRICE, cachedInputPerMillion: 0.5 });
      expect(await store.listModelPrices()).toEqual([{ ...PRICE, cachedInputPerMillion: 0.5 }]);
      await store.close();
    } finally {
      await location.cleanup();
    }
  });

  it.skipIf(noPostgres)("PostgreSQL: a version 1 database", async () => {
    const location = await testStoreLocation("postgres");
    try {
      await (await openLocation(location)).close();
      const client = new pg.Client({ connectionString: location.url });
      await client.connect();
      try {
        for (const column of CACHE_COLUMNS) await client.query(`ALTER TABLE model_prices DROP COLUMN ${column}`);
        await client.query(
          "ALTER TABLE endpoints DROP COLUMN one_off; ALTER TABLE endpoints DROP COLUMN apps; DROP TABLE api_tokens",
        );
        await client.query(LATER_POSTGRES);
        await client.query("DELETE FROM aigw_schema_version WHERE version > 1");
        await client.query("INSERT INTO model_prices VALUES ($1, $2, $3, $4)", [
          PRICE.model,
          PRICE.inputPerMillion,
          PRICE.outputPerMillion,
          0,
        ]);
      } finally {
        await client.end();
      }
      const store = await openLocation(location);
      expect(await store.listModelPrices()).toEqual([PRICE]);
      await store.putModelPrice({ ...PRICE, cacheWritePerMillion: 2.5 });
      expect(await store.listModelPrices()).toEqual([{ ...PRICE, cacheWritePerMillion: 2.5 }]);
      await store.close();
    } finally {
      await location.cleanup();
    }
  });
});
