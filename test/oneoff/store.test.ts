import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStore } from "../../control-plane/store/open.js";
import { type Store, StoreConflictError } from "../../control-plane/store/store.js";
import { type TestStoreLocation, TEST_BACKEND, TEST_ENCRYPTION_KEY, testStoreLocation } from "../support/store.js";

// The store's side of one-off endpoints and endpoint filters, on the backend under test.
describe(`${TEST_BACKEND} store: one-off endpoints, org keys, endpoint filters`, () => {
  let location: TestStoreLocation;
  let store: Store;
  const open = () => openStore(location.url, { encryptionKey: TEST_ENCRYPTION_KEY });
  beforeEach(async () => {
    location = await testStoreLocation();
    store = await open();
  });
  afterEach(async () => {
    await store.close();
    await location.cleanup();
  });

  it("creates a one-off endpoint once, with the org's key generated only when it has none", async () => {
    let generated = 0;
    const gen = () => {
      generated++;
      return `whsec_${Buffer.alloc(32, generated).toString("base64")}`;
    };
    const first = await store.ensureOneOffEndpoint("oneoff-0000000000000001", "org_a", "https://a.example/cb", gen);
    expect(first.createdOrgKey).toBe(true);
    expect(first.endpoint).toMatchObject({ orgId: "org_a", enabled: true, signingKeyCount: 1 });
    const again = await store.ensureOneOffEndpoint("oneoff-0000000000000001", "org_a", "https://a.example/cb", gen);
    expect(again.createdOrgKey).toBe(false);
    // A second URL of the same org shares the org's key.
    const other = await store.ensureOneOffEndpoint("oneoff-0000000000000002", "org_a", "https://b.example/cb", gen);
    expect(other.createdOrgKey).toBe(false);
    expect(generated).toBe(1);

    // Its keys are the org's, through rotation and overlap.
    const now = Date.now();
    await store.addOrgSigningKey("org_a", "whsec_bmV3LW9yZy1rZXktMzItYnl0ZXMtbG9uZy1lbm91Z2g=", now + 60_000);
    const keys = await store.activeSigningKeys("oneoff-0000000000000002", now);
    expect(keys.map((k) => k.secret)).toEqual([
      "whsec_bmV3LW9yZy1rZXktMzItYnl0ZXMtbG9uZy1lbm91Z2g=",
      `whsec_${Buffer.alloc(32, 1).toString("base64")}`,
    ]);
    expect((await store.activeSigningKeys("oneoff-0000000000000002", now + 120_000)).length).toBe(1);
    expect((await store.getEndpoint("oneoff-0000000000000001"))?.signingKeyCount).toBe(2);

    // Hidden from the configured endpoints.
    expect(await store.listEndpoints()).toEqual([]);
    // A name taken by another (org, URL) is a conflict, never a takeover.
    await expect(
      store.ensureOneOffEndpoint("oneoff-0000000000000001", "org_b", "https://a.example/cb", gen),
    ).rejects.toBeInstanceOf(StoreConflictError);
  });

  it("stores endpoint filters, patches them, and keeps them across a reopen", async () => {
    const created = await store.createEndpoint(
      {
        name: "orders",
        url: "https://o.example/h",
        enabled: true,
        eventTypes: [],
        failoverTo: "",
        filters: { completionModels: ["gpt-4*"], completionMinTokens: 5, errorSeverities: [] },
      },
      "whsec_b3JkZXJzLW9yZGVycy1vcmRlcnM=",
    );
    expect(created.filters).toEqual({ completionModels: ["gpt-4*"], completionMinTokens: 5, errorSeverities: [] });
    expect(created.orgId).toBe("");
    await store.updateEndpoint("orders", {
      filters: { completionModels: [], completionMinTokens: 0, errorSeverities: ["critical"] },
    });
    // A patch without filters keeps them.
    await store.updateEndpoint("orders", { enabled: false });
    await store.close();
    store = await open();
    expect((await store.getEndpoint("orders"))?.filters).toEqual({
      completionModels: [],
      completionMinTokens: 0,
      errorSeverities: ["critical"],
    });
  });
});
