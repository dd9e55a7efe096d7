import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStore } from "../../control-plane/store/open.js";
import { SecretBox } from "../../control-plane/store/secret-box.js";
import { openSqliteStore, type SqliteStore } from "../../control-plane/store/sqlite/store.js";
import { completionEvent, describeStoreConformance, endpoint, streamingEvent } from "./conformance.js";
import { claimDue } from "../support/claims.js";
import { waitFor } from "../support/wait.js";

describeStoreConformance("sqlite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "aigw-store-"));
  const store = await openSqliteStore(join(dir, "nested", "aigw.db"), {});
  return {
    store,
    async cleanup() {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe("SqliteStore on disk", () => {
  let dir: string;
  let path: string;
  const open: SqliteStore[] = [];
  const openAt = async (options: { encryptionKey?: string } = {}) => {
    const store = await openSqliteStore(path, options);
    open.push(store);
    return store;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "aigw-sqlite-"));
    path = join(dir, "aigw.db");
  });

  afterEach(async () => {
    for (const store of open.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps everything across a reopen; leases resume by expiry", async () => {
    const first = await openAt();
    await first.createEndpoint(endpoint("a"), "whsec_c2VjcmV0");
    const events = [completionEvent(), completionEvent(), completionEvent()];
    await first.ingest(events, () => ["a"]);
    const now = Date.now();
    const [short] = await claimDue(first, { now, limit: 1, leaseOwner: "crashed", leaseMs: 1_000 });
    const [long] = await claimDue(first, { now, limit: 1, leaseOwner: "alive", leaseMs: 3_600_000 });
    await first.close();

    const second = await openAt();
    expect(await second.countEvents()).toBe(3);
    expect(await second.countPending()).toBe(3);
    expect((await second.activeSigningKeys("a", now)).map((k) => k.secret)).toEqual(["whsec_c2VjcmV0"]);
    expect((await second.readFeed(undefined, 10)).map((s) => s.event.id)).toEqual(events.map((e) => e.id));

    expect(await claimDue(second, { now: now + 999, leaseOwner: "new", leaseMs: 1_000 })).toHaveLength(1);
    const resumed = await claimDue(second, { now: now + 1_000, leaseOwner: "new", leaseMs: 1_000 });
    expect(resumed.map((d) => d.id)).toEqual([short!.id]);
    expect(resumed.map((d) => d.id)).not.toContain(long!.id);
  });

  it("creates a 0600 key file beside the database and reuses it", async () => {
    const store = await openAt();
    await store.createEndpoint(endpoint("a"), "whsec_a2V5ZmlsZQ==");
    await store.close();
    const keyPath = `${path}.key`;
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600);
    const key = (await readFile(keyPath, "utf8")).trim();
    expect(() => SecretBox.fromBase64(key, keyPath)).not.toThrow();

    const reopened = await openAt();
    expect((await reopened.activeSigningKeys("a", Date.now()))[0]!.secret).toBe("whsec_a2V5ZmlsZQ==");
    expect((await readFile(keyPath, "utf8")).trim()).toBe(key);

    // The secret is not in the database file in clear text.
    await reopened.close();
    const raw = new Database(path, { readonly: true });
    try {
      const sealed = raw.prepare("SELECT secret FROM signing_keys").pluck().all() as string[];
      expect(sealed).toHaveLength(1);
      expect(sealed[0]).toMatch(/^v1:/);
      expect(sealed[0]).not.toContain("a2V5ZmlsZQ");
    } finally {
      raw.close();
    }
  });

  it("fails clearly with a wrong, malformed or missing key", async () => {
    const keyA = SecretBox.generateKey();
    const store = await openAt({ encryptionKey: keyA });
    await store.createEndpoint(endpoint("a"), "whsec_d3Jvbmc=");
    await store.close();

    await expect(openSqliteStore(path, { encryptionKey: SecretBox.generateKey() })).rejects.toThrow(
      /encryption key does not match/,
    );
    await expect(openSqliteStore(path, { encryptionKey: "c2hvcnQ=" })).rejects.toThrow(
      /storage.encryption_key: the encryption key must be the base64 of exactly 32 bytes/,
    );
    // No key given and no key file: a fresh key could never open these secrets.
    await expect(openSqliteStore(path, {})).rejects.toThrow(/key file .*aigw\.db\.key is missing/);
    await expect(stat(`${path}.key`)).rejects.toMatchObject({ code: "ENOENT" });

    const again = await openAt({ encryptionKey: keyA });
    expect((await again.activeSigningKeys("a", Date.now()))[0]!.secret).toBe("whsec_d3Jvbmc=");
  });

  it("never returns garbage for a sealed value opened with another key or context", () => {
    const box = SecretBox.fromBase64(SecretBox.generateKey(), "test");
    const sealed = box.seal("whsec_x", "signing key key_1");
    expect(box.open(sealed, "signing key key_1")).toBe("whsec_x");
    expect(box.seal("whsec_x", "signing key key_1")).not.toBe(sealed);
    expect(() => box.open(sealed, "signing key key_2")).toThrow(/cannot decrypt/);
    const other = SecretBox.fromBase64(SecretBox.generateKey(), "test");
    expect(() => other.open(sealed, "signing key key_1")).toThrow(/not the one it was sealed with/);
    expect(() => box.open("v9:abc", "k")).toThrow(/unknown format/);
  });

  it("runs in WAL mode with foreign keys; durable writes wait for a WAL flush made off the main thread", async () => {
    const store = await openAt();
    expect(store.pragma("journal_mode")).toBe("wal");
    expect(store.pragma("foreign_keys")).toBe(1);
    expect(store.pragma("busy_timeout")).toBeGreaterThan(0);
    // Commits never flush on the main thread (NORMAL = 1): an ingest resolves (and is acked)
    // only after a flush of the WAL made off it; attempt results do without one.
    expect(store.pragma("synchronous")).toBe(1);
    expect(store.pragma("wal_autocheckpoint")).toBe(0);
    const before = store.durability().walSyncs;
    await store.ingest([completionEvent()], () => ["a"]);
    expect(store.durability().walSyncs).toBe(before + 1);
    // Batches submitted together share one flush.
    await Promise.all(Array.from({ length: 20 }, () => store.ingest([completionEvent()], () => ["a"])));
    expect(store.durability().walSyncs).toBeLessThanOrEqual(before + 3);
    const [claimed] = await claimDue(store, { now: Date.now(), limit: 1, leaseOwner: "w", leaseMs: 1_000 });
    const syncs = store.durability().walSyncs;
    await store.completeAttempt(
      claimed!,
      { startedAt: Date.now(), statusCode: 200, latencyMs: 1, error: "", responseBody: "" },
      { status: "delivered" },
    );
    expect(store.durability().walSyncs).toBe(syncs);
    await store.close();
  });

  it("checkpoints in its own thread, so the WAL does not grow without bound", async () => {
    const store = await openAt();
    await store.createEndpoint(endpoint("a"), "whsec_a2V5ZmlsZWtleWZpbGVrZXk=");
    // About 20 MB of writes, well past the 4 MiB checkpoint mark.
    for (let i = 0; i < 40; i++) {
      await store.ingest(
        Array.from({ length: 500 }, () => completionEvent()),
        () => ["a"],
      );
    }
    await waitFor("a checkpoint", () => store.durability().checkpoints > 0, 30_000);
    await store.close();
  });

  it("claims a lane from its own index range: another lane's backlog and rows not yet due are never read", async () => {
    const store = await openAt();
    const plan = store.explainClaim().join("\n");
    // A range seek on (endpoint, due_at): the claim starts at this endpoint's first due row
    // and stops at its first row not yet due (or at the limit).
    expect(plan).toMatch(/SEARCH d USING INDEX deliveries_due \(endpoint=\? AND due_at<\?\)/);
    expect(plan).not.toContain("TEMP B-TREE");

    for (let batch = 0; batch < 20; batch++) {
      const events = Array.from({ length: 500 }, (_, i) =>
        i % 5 === 0 ? streamingEvent(`req_${batch}_${i}`, 1) : completionEvent(),
      );
      await store.ingest(events, () => ["a", "b"]);
    }
    expect(await store.countPending()).toBe(20_000);
    // "a" holds 10k due rows; claiming "b" reads b's rows only.
    const [claim] = await store.claim({
      now: Date.now(),
      leaseOwner: "w",
      leaseMs: 30_000,
      lanes: [{ endpoint: "b", limit: 100 }],
    });
    expect(claim!.deliveries).toHaveLength(100);
    expect(claim!.deliveries.every((d) => d.endpoint === "b")).toBe(true);
    // Rows not yet due (a retry an hour away) are not walked either.
    expect(await store.pendingLanes("", 10)).toHaveLength(2);
  });

  it("a claim records the attempt results submitted before it, settled or not (claimsSeeSubmittedResults)", async () => {
    const store = await openAt();
    expect(store.claimsSeeSubmittedResults).toBe(true);
    await store.createEndpoint(endpoint("a"), "whsec_c2VjcmV0");
    await store.ingest([streamingEvent("req_1", 1), streamingEvent("req_1", 2)], () => ["a"]);
    const now = Date.now();
    const [first, ...rest] = await claimDue(store, { now, leaseOwner: "w", leaseMs: 30_000 });
    // The second token waits for the first.
    expect(rest).toHaveLength(0);
    const attempt = { startedAt: now, statusCode: 200, latencyMs: 1, error: "", responseBody: "" };
    const recorded = store.completeAttempt(first!, attempt, { status: "delivered" });
    // Not awaited: the claim in the same turn records it first, so the next token is due.
    const [second] = await claimDue(store, { now, leaseOwner: "w", leaseMs: 30_000 });
    expect(second?.eventId).not.toBe(first!.eventId);
    expect((await recorded).recorded).toBe(true);
    expect((await store.getDelivery(first!.id))?.delivery.status).toBe("delivered");
  });

  it("refuses a database from a newer aigw", async () => {
    await (await openAt()).close();
    const raw = new Database(path);
    raw.prepare("INSERT INTO schema_version (version) VALUES (99)").run();
    raw.close();
    await expect(openSqliteStore(path, {})).rejects.toThrow(/schema version 99, newer than this aigw supports/);
  });

  it("names the file when it is not a database", async () => {
    await writeFile(path, "this is not sqlite, just text long enough to fill a header ".repeat(20));
    await expect(openSqliteStore(path, {})).rejects.toThrow(/cannot open SQLite store .*aigw\.db/);
  });
});

describe("openStore", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "aigw-open-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("opens sqlite:PATH relative to the working directory", async () => {
    const store = await openStore(`sqlite:${relative(process.cwd(), join(dir, "sub", "x.db"))}`);
    try {
      expect(store.kind).toBe("sqlite");
      await store.ingest([completionEvent()], () => []);
      expect((await stat(join(dir, "sub", "x.db"))).isFile()).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("rejects other urls clearly", async () => {
    await expect(openStore("postgres://aigw:hunter2@localhost/aigw")).rejects.toThrow(
      "PostgreSQL store postgres://aigw:***@localhost/aigw: storage.encryption_key is required",
    );
    await expect(openStore("sqlite::memory:")).rejects.toThrow(/real file/);
    await expect(openStore("sqlite:")).rejects.toThrow(/path is missing/);
    await expect(openStore("mysql://x")).rejects.toThrow(/use sqlite:PATH or postgres/);
  });
});
