import net from "node:net";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openPostgresStore, type PostgresStore } from "../../control-plane/store/postgres/store.js";
import { PG_SCHEMA_VERSION } from "../../control-plane/store/postgres/schema.js";
import type { ClaimedDelivery, Store } from "../../control-plane/store/store.js";
import { accountingFor, pricedCompletion } from "../budgets/store-conformance.js";
import { createTestDatabase, skipWithoutPostgres, TEST_ENCRYPTION_KEY } from "../support/store.js";
import { attempt, completionEvent, endpoint } from "./conformance.js";

// Two stores on one PostgreSQL database, as two control-plane replicas hold them: what one
// writes the other sees, and the rules that must hold over all replicas hold over both
// (caps, fencing, budget thresholds once, config versions, the feed's commit order).
const skip = await skipWithoutPostgres("the PostgreSQL replica store tests");

const LEASE_MS = 30_000;

describe.skipIf(skip)("two PostgreSQL stores on one database", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: PostgresStore;
  let b: PostgresStore;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  beforeEach(async () => {
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
    a = await openPostgresStore(db.url, { encryptionKey: TEST_ENCRYPTION_KEY, owner: "replica-a" });
    b = await openPostgresStore(db.url, { encryptionKey: TEST_ENCRYPTION_KEY, owner: "replica-b" });
  });
  afterEach(async () => {
    await a?.close();
    await b?.close();
  });

  const claimLane = (store: Store, name: string, limit: number, owner: string, perEndpoint: number) =>
    store
      .claim({
        now: Date.now(),
        leaseOwner: owner,
        leaseMs: LEASE_MS,
        lanes: [{ endpoint: name, limit }],
        caps: { perEndpoint, total: 1_000 },
      })
      .then((claims) => claims.flatMap((c) => c.deliveries));

  it("hold the per-endpoint cap over both when they claim at the same time", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    await a.ingest(
      Array.from({ length: 200 }, () => completionEvent()),
      () => ["hooks"],
    );
    // Many claim rounds at once from both stores, each asking for more than the cap.
    const rounds = await Promise.all(
      Array.from({ length: 20 }, (_, i) => claimLane(i % 2 ? a : b, "hooks", 10, i % 2 ? "a" : "b", 7)),
    );
    const claimed = rounds.flat();
    expect(claimed.length).toBe(7);
    expect(new Set(claimed.map((d) => d.id)).size).toBe(7);
    // One finished: exactly one more may be claimed, by either.
    const [first] = claimed as [ClaimedDelivery];
    expect((await b.completeAttempt(first, attempt(), { status: "delivered" })).recorded).toBe(true);
    const more = (await Promise.all([claimLane(a, "hooks", 5, "a", 7), claimLane(b, "hooks", 5, "b", 7)])).flat();
    expect(more.length).toBe(1);
  });

  it("fence a lease: the owner whose lease expired cannot record over the new claim", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    await a.ingest([completionEvent()], () => ["hooks"]);
    const now = Date.now();
    const [old] = (
      await a.claim({ now, leaseOwner: "a", leaseMs: 1, lanes: [{ endpoint: "hooks", limit: 1 }] })
    ).flatMap((c) => c.deliveries) as [ClaimedDelivery];
    const [fresh] = (
      await b.claim({ now: now + 10, leaseOwner: "b", leaseMs: LEASE_MS, lanes: [{ endpoint: "hooks", limit: 1 }] })
    ).flatMap((c) => c.deliveries) as [ClaimedDelivery];
    expect(fresh.id).toBe(old.id);
    expect(fresh.leaseToken).toBeGreaterThan(old.leaseToken);
    // Even with the new owner's name, the old token is refused.
    expect((await a.completeAttempt({ ...old, leaseOwner: "b" }, attempt(), { status: "delivered" })).recorded).toBe(
      false,
    );
    expect((await b.completeAttempt(fresh, attempt(), { status: "delivered" })).recorded).toBe(true);
    expect((await a.getDelivery(old.id))?.delivery.attemptCount).toBe(1);
  });

  it("record a group of results in one statement, or, when a lease in it went stale, refuse that one alone", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    await a.ingest(
      Array.from({ length: 6 }, () => completionEvent()),
      () => ["hooks"],
    );
    const now = Date.now();
    const claimed = (
      await a.claim({ now, leaseOwner: "a", leaseMs: LEASE_MS, lanes: [{ endpoint: "hooks", limit: 3 }] })
    ).flatMap((c) => c.deliveries);
    expect(claimed).toHaveLength(3);
    // Every lease still held: one statement, no transaction of several round trips.
    const statements: string[] = [];
    const query = a.pool.query.bind(a.pool);
    const connect = a.pool.connect.bind(a.pool);
    let connects = 0;
    a.pool.query = ((...args: unknown[]) => {
      if (typeof args[0] === "string") statements.push(args[0]);
      return (query as (...q: unknown[]) => unknown)(...args);
    }) as typeof a.pool.query;
    a.pool.connect = ((...args: unknown[]) => {
      connects++;
      return (connect as (...q: unknown[]) => unknown)(...args);
    }) as typeof a.pool.connect;
    const results = await Promise.all(
      claimed.map((d, i) =>
        a.completeAttempt(
          d,
          attempt({ statusCode: i === 2 ? 500 : 200 }),
          i === 2 ? { status: "retry", nextAttemptAt: now + 60_000 } : { status: "delivered" },
        ),
      ),
    );
    expect(results.map((r) => r.recorded)).toEqual([true, true, true]);
    expect(results[0]?.eventLatencyMs).toBeGreaterThanOrEqual(0);
    expect(statements.filter((q) => q.includes("aigw_all_recorded"))).toHaveLength(1);
    // Each connect was pool.query's own: no transaction checked a client out.
    expect(connects).toBe(statements.length);
    a.pool.query = query;
    a.pool.connect = connect;
    for (const [i, d] of claimed.entries()) {
      const detail = await b.getDelivery(d.id);
      expect(detail?.delivery.status).toBe(i === 2 ? "pending" : "delivered");
      expect(detail?.delivery.attemptCount).toBe(1);
      expect(detail?.attempts.map((t) => t.statusCode)).toEqual([i === 2 ? 500 : 200]);
    }
    expect(await b.countPending()).toBe(4);

    // Three more, leased for 1 ms; b takes the first of them over once that lease ran out.
    const later = now + 1_000;
    const mine = (
      await a.claim({ now: later, leaseOwner: "a", leaseMs: 1, lanes: [{ endpoint: "hooks", limit: 3 }] })
    ).flatMap((c) => c.deliveries);
    expect(mine).toHaveLength(3);
    const [taken] = (
      await b.claim({ now: later + 10, leaseOwner: "b", leaseMs: LEASE_MS, lanes: [{ endpoint: "hooks", limit: 1 }] })
    ).flatMap((c) => c.deliveries) as [ClaimedDelivery];
    expect(taken.id).toBe(mine[0]?.id);
    // a's group holds one stale lease: that one is refused, the other two are recorded.
    const group = await Promise.all(mine.map((d) => a.completeAttempt(d, attempt(), { status: "delivered" })));
    expect(group.map((r) => r.recorded)).toEqual([false, true, true]);
    expect((await b.getDelivery(taken.id))?.delivery).toMatchObject({ status: "pending", attemptCount: 0 });
    expect((await b.completeAttempt(taken, attempt(), { status: "delivered" })).recorded).toBe(true);
    for (const d of mine) {
      const detail = await a.getDelivery(d.id);
      expect(detail?.delivery).toMatchObject({ status: "delivered", attemptCount: 1 });
      expect(detail?.attempts).toHaveLength(1);
    }
    expect(await a.countPending()).toBe(1);
  });

  it("record a claim's own results in the claim's one statement: the caps over both count them", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    await a.ingest(
      Array.from({ length: 10 }, () => completionEvent()),
      () => ["hooks"],
    );
    const claimed = await claimLane(a, "hooks", 10, "a", 3);
    expect(claimed).toHaveLength(3);
    expect(await claimLane(b, "hooks", 10, "b", 3)).toHaveLength(0);
    const statements: string[] = [];
    const query = a.pool.query.bind(a.pool);
    a.pool.query = ((...args: unknown[]) => {
      if (typeof args[0] === "string") statements.push(args[0]);
      return (query as (...q: unknown[]) => unknown)(...args);
    }) as typeof a.pool.query;
    const [d1, d2] = claimed as [ClaimedDelivery, ClaimedDelivery];
    // Submitted and not awaited: the claim in the same turn records them, then counts.
    const recorded = [
      a.completeAttempt(d1, attempt(), { status: "delivered" }),
      a.completeAttempt(d2, attempt({ statusCode: 503 }), { status: "retry", nextAttemptAt: Date.now() + 60_000 }),
    ];
    const more = await claimLane(a, "hooks", 10, "a", 3);
    expect(more).toHaveLength(2);
    expect((await Promise.all(recorded)).map((r) => r.recorded)).toEqual([true, true]);
    a.pool.query = query;
    // One statement: the results and the claim.
    expect(statements).toHaveLength(1);
    expect(statements[0]).toContain("aigw_claim");
    expect((await b.getDelivery(d1.id))?.delivery).toMatchObject({ status: "delivered", attemptCount: 1 });
    expect((await b.getDelivery(d2.id))?.delivery).toMatchObject({ status: "pending", attemptCount: 1 });
    expect((await b.listAttempts(d2.id)).map((t) => t.statusCode)).toEqual([503]);
    // Three leases live again (one left, two new): the other store still gets none.
    expect(await claimLane(b, "hooks", 10, "b", 3)).toHaveLength(0);
    expect(await b.countPending()).toBe(9);
  });

  it("fence a claim's own results: one whose lease the other store took is refused, the others and the claim go on", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    await a.ingest(
      Array.from({ length: 2 }, () => completionEvent()),
      () => ["hooks"],
    );
    const now = Date.now();
    const mine = (
      await a.claim({ now, leaseOwner: "a", leaseMs: 1, lanes: [{ endpoint: "hooks", limit: 2 }] })
    ).flatMap((c) => c.deliveries);
    expect(mine).toHaveLength(2);
    // a's first lease ran out and b claimed that delivery.
    const [taken] = (
      await b.claim({ now: now + 10, leaseOwner: "b", leaseMs: LEASE_MS, lanes: [{ endpoint: "hooks", limit: 1 }] })
    ).flatMap((c) => c.deliveries) as [ClaimedDelivery];
    expect(taken.id).toBe(mine[0]?.id);
    const [third] = (await a.ingest([completionEvent()], () => ["hooks"])).stored;
    const results = mine.map((d) => a.completeAttempt(d, attempt(), { status: "delivered" }));
    const next = (
      await a.claim({
        now: Date.now() + 20,
        leaseOwner: "a",
        leaseMs: LEASE_MS,
        lanes: [{ endpoint: "hooks", limit: 5 }],
        caps: { perEndpoint: 10, total: 100 },
      })
    ).flatMap((c) => c.deliveries);
    expect((await Promise.all(results)).map((r) => r.recorded)).toEqual([false, true]);
    // The third delivery; not the one b holds.
    expect(next.map((d) => d.eventId)).toEqual([third?.event.id]);
    expect((await b.getDelivery(taken.id))?.delivery).toMatchObject({ status: "pending", attemptCount: 0 });
    expect(await b.listAttempts(taken.id)).toHaveLength(0);
    expect((await b.completeAttempt(taken, attempt(), { status: "delivered" })).recorded).toBe(true);
    expect((await a.getDelivery(mine[1]!.id))?.delivery).toMatchObject({ status: "delivered", attemptCount: 1 });
  });

  it("fire each budget threshold once when both ingest spend at the same time", async () => {
    await a.putBudget({
      orgId: "org_a",
      limitType: "monthly",
      budgetLimit: 1,
      thresholds: [50, 80, 100],
      enforce: false,
    });
    const periods = { daily: "2026-03-31", monthly: "2026-03" };
    const batches = Array.from({ length: 20 }, () => Array.from({ length: 5 }, () => pricedCompletion("org_a", 0.02)));
    const results = await Promise.all(
      batches.map((batch, i) => (i % 2 ? a : b).ingest(batch, () => [], accountingFor(periods))),
    );
    const fired = results.flatMap((r) => r.generated ?? []);
    const thresholds = fired.map((e) => (e.event.payload.case === "budget" ? e.event.payload.value.threshold : -1));
    expect(thresholds.sort((x, y) => x - y)).toEqual([50, 80, 100]);
    const [budget] = await b.listBudgets((t) => periods[t]);
    expect(budget?.currentSpend).toBeCloseTo(2, 6);
    expect(budget?.firedThresholds.sort((x, y) => x - y)).toEqual([50, 80, 100]);
  });

  it("hand out config versions that only grow, whichever store is asked", async () => {
    const versions = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).nextConfigVersion(Date.now())),
    );
    expect(new Set(versions.map(String)).size).toBe(versions.length);
    const later = await a.nextConfigVersion(0);
    for (const v of versions) expect(later > v).toBe(true);
  });

  it("share circuits, connected sidecars and settings", async () => {
    await a.putCircuit({ endpoint: "hooks", open: true, openedAt: 1_000 });
    expect(await b.listCircuits()).toEqual([{ endpoint: "hooks", open: true, openedAt: 1_000, failingSince: 0 }]);
    // A run of failed attempts spans replicas: the one recorded first is the one that counts.
    expect(await a.startFailingRun("hooks", 5_000)).toBe(5_000);
    expect(await b.startFailingRun("hooks", 9_000)).toBe(5_000);
    await b.endFailingRun("hooks");
    expect((await a.listCircuits())[0]?.failingSince).toBe(0);
    const now = Date.now();
    await a.putSidecars("replica-a", [{ id: "sc_1", orgId: "org_a", app: "chat" }], now);
    await b.putSidecars("replica-b", [{ id: "sc_2", orgId: "org_a", app: "chat" }], now);
    expect((await a.listSidecars(now - 1_000)).map((s) => s.id).sort()).toEqual(["sc_1", "sc_2"]);
    await b.putSetting("runtime", "x");
    expect(await a.getSetting("runtime")).toBe("x");
  });

  it("make each operator event once when both record the same change at the same time", async () => {
    for (const name of ["hooks", "ops"]) await a.upsertEndpoint(endpoint(name), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    for (const s of [a, b]) s.routeOperatorEvents(() => ["ops"]);
    await a.putCircuit({ endpoint: "hooks", open: true, openedAt: Date.now() });
    const closes = await Promise.all(
      Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).putCircuit({ endpoint: "hooks", open: false, openedAt: 0 })),
    );
    expect(closes.flatMap((c) => c.generated)).toHaveLength(1);
    const why = {
      detail: "every attempt failed",
      statusCode: 503,
      lastError: "HTTP 503",
      failingSince: 0,
      failedAttempts: 3,
    };
    const disables = await Promise.all(
      Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).autoDisableEndpoint("hooks", why)),
    );
    expect(disables.flatMap((d) => d.generated)).toHaveLength(1);
    // Both in the shared feed, once each, and one delivery each to ops.
    const feed = (await b.readFeed(undefined, 100)).map((e) => e.event.payload.case);
    expect(feed.sort()).toEqual(["endpointDisabled", "endpointRecovered"]);
    expect(await b.countEndpointPending("ops")).toBe(2);
  });

  it("a run of failures one replica ended disables nothing for the other", async () => {
    for (const name of ["hooks", "ops"]) await a.upsertEndpoint(endpoint(name), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    for (const s of [a, b]) s.routeOperatorEvents(() => ["ops"]);
    const since = Date.now() - 120_000;
    expect(await a.startFailingRun("hooks", since)).toBe(since);
    // b delivered to hooks: its success ends the run for everyone.
    await b.endFailingRun("hooks");
    const why = {
      detail: "every attempt failed for 2m (3 attempts)",
      statusCode: 503,
      lastError: "HTTP 503",
      failingSince: since,
      failedAttempts: 3,
      runStartedAt: since,
    };
    // Both at once, as two replicas could: neither disables.
    const answers = await Promise.all([a.autoDisableEndpoint("hooks", why), b.autoDisableEndpoint("hooks", why)]);
    expect(answers.map((x) => x.runInStore)).toEqual([0, 0]);
    expect((await b.getEndpoint("hooks"))?.enabled).toBe(true);
    // A run both see as theirs disables once.
    await b.startFailingRun("hooks", since + 1_000);
    const later = { ...why, runStartedAt: since + 1_000 };
    const disables = await Promise.all([a.autoDisableEndpoint("hooks", later), b.autoDisableEndpoint("hooks", later)]);
    expect(disables.flatMap((d) => d.generated)).toHaveLength(1);
    expect((await a.getEndpoint("hooks"))?.enabled).toBe(false);
  });

  it("pause an endpoint for both: neither claims it, and it is no lane of either", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    await a.ingest(
      Array.from({ length: 5 }, () => completionEvent()),
      () => ["hooks"],
    );
    expect((await b.pauseEndpoint("hooks", true)).pending).toBe(5);
    expect(await claimLane(a, "hooks", 10, "a", 10)).toEqual([]);
    expect(await a.pendingLanes("", 10)).toEqual([]);
    expect(await a.countHeld()).toBe(5);
    await a.pauseEndpoint("hooks", false);
    expect(await claimLane(b, "hooks", 10, "b", 10)).toHaveLength(5);
  });

  it("read the feed in commit order: a reader following both writers never skips or repeats an event", async () => {
    const written: string[] = [];
    const seen: string[] = [];
    let cursor = await b.feedHead();
    let writing = true;
    const reader = (async () => {
      for (;;) {
        const done = !writing;
        const page = await b.readFeed(cursor, 100);
        for (const e of page) {
          if (cursor !== undefined) expect(b.compareCursors(cursor, e.cursor)).toBeLessThan(0);
          cursor = e.cursor;
          seen.push(e.event.id);
        }
        if (done && page.length === 0) return;
      }
    })();
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const batch = Array.from({ length: 1 + (i % 7) }, () => completionEvent());
        await (i % 2 ? a : b).ingest(batch, () => []);
        written.push(...batch.map((e) => e.id));
      }),
    );
    writing = false;
    await reader;
    expect(seen.length).toBe(written.length);
    expect(new Set(seen)).toEqual(new Set(written));
  });

  it("keep working when a newer replica changes a table under statements prepared before", async () => {
    await a.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    const deliverAll = async () => {
      const claimed = await claimLane(a, "hooks", 50, "a", 50);
      const results = await Promise.all(claimed.map((d) => a.completeAttempt(d, attempt(), { status: "delivered" })));
      return results.filter((r) => r.recorded).length;
    };
    // Statements prepared on several pooled connections (concurrent claims and completions).
    await a.ingest(
      Array.from({ length: 40 }, () => completionEvent()),
      () => ["hooks"],
    );
    await Promise.all([deliverAll(), a.listDeliveries({ pageSize: 10 }), a.countPending()]);
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      await admin.query("ALTER TABLE deliveries ADD COLUMN added_later integer NOT NULL DEFAULT 0");
    } finally {
      await admin.end();
    }
    await a.ingest(
      Array.from({ length: 40 }, () => completionEvent()),
      () => ["hooks"],
    );
    expect(await deliverAll()).toBe(40);
    expect(await a.countPending()).toBe(0);
    expect((await a.listDeliveries({ pageSize: 100 })).deliveries).toHaveLength(80);
  });

  it("ride out killed connections at once, and say AIGW_STORE_UNREACHABLE while the server is away", async () => {
    // The store reaches PostgreSQL through a TCP relay this test can cut and restore.
    const target = new URL(db.url);
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((client) => {
      const server = net.connect(Number(target.port || 5432), target.hostname);
      sockets.add(client).add(server);
      client.pipe(server).pipe(client);
      const drop = () => {
        client.destroy();
        server.destroy();
      };
      client.on("error", drop).on("close", drop);
      server.on("error", drop).on("close", drop);
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    const relayPort = (relay.address() as net.AddressInfo).port;
    const viaRelay = new URL(db.url);
    viaRelay.host = `127.0.0.1:${relayPort}`;
    const store = await openPostgresStore(viaRelay.toString(), { encryptionKey: TEST_ENCRYPTION_KEY });
    try {
      await store.upsertEndpoint(endpoint("hooks"), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
      await store.ingest([completionEvent()], () => ["hooks"]);

      // Every connection killed by the server: the next writes and reads just work.
      const admin = new pg.Client({ connectionString: db.url });
      await admin.connect();
      await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'aigw'",
      );
      await admin.end();
      expect((await store.ingest([completionEvent()], () => ["hooks"])).stored).toHaveLength(1);
      expect(await store.countEvents()).toBe(2);

      // The server away: writes and reads fail with the catalogue code, nothing half-done.
      await new Promise<void>((resolve) => {
        relay.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      const refused = await store.ingest([completionEvent()], () => ["hooks"]).catch((err: unknown) => err);
      expect(refused).toMatchObject({ code: "AIGW_STORE_UNREACHABLE" });
      expect(String((refused as Error).message)).toMatch(/cannot be reached/);
      await expect(store.countEvents()).rejects.toMatchObject({ code: "AIGW_STORE_UNREACHABLE" });

      // Back on the same address: everything works again, the refused batch was never stored.
      await new Promise<void>((resolve) => relay.listen(relayPort, "127.0.0.1", resolve));
      expect((await store.ingest([completionEvent()], () => ["hooks"])).stored).toHaveLength(1);
      expect(await store.countEvents()).toBe(3);
    } finally {
      await store.close();
      relay.close();
      for (const s of sockets) s.destroy();
    }
  });

  it("migrate once when several open a fresh database at once, and refuse a database newer than the code", async () => {
    const fresh = await createTestDatabase();
    try {
      const opened = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          openPostgresStore(fresh.url, { encryptionKey: TEST_ENCRYPTION_KEY, owner: `r${i}` }),
        ),
      );
      await opened[0]?.ingest([completionEvent()], () => []);
      expect(await opened[3]?.countEvents()).toBe(1);
      await Promise.all(opened.map((s) => s.close()));

      const admin = new pg.Client({ connectionString: fresh.url });
      await admin.connect();
      try {
        // Each migration applied once: one row per version, whoever applied it.
        const rows = await admin.query<{ version: number }>("SELECT version FROM aigw_schema_version ORDER BY version");
        expect(rows.rows).toEqual(Array.from({ length: PG_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
        await admin.query("UPDATE aigw_schema_version SET version = $1", [PG_SCHEMA_VERSION + 1]);
      } finally {
        await admin.end();
      }
      await expect(openPostgresStore(fresh.url, { encryptionKey: TEST_ENCRYPTION_KEY })).rejects.toThrow(
        new RegExp(`schema version ${PG_SCHEMA_VERSION + 1}, newer than this aigw supports \\(${PG_SCHEMA_VERSION}\\)`),
      );
    } finally {
      await fresh.drop();
    }
  });
});
