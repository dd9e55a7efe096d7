import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { renderMetrics } from "../../control-plane/http/metrics.js";
import { RetentionPurger } from "../../control-plane/retention/retention.js";
import { openSqliteStore, type SqliteStore } from "../../control-plane/store/sqlite/store.js";
import { completion } from "../support/control-plane.js";
import { fillOldEvents } from "../support/old-events.js";
import { claimDue } from "../support/claims.js";
import { CapturedLog } from "../sidecar-uplink/helpers.js";
import { endpoint } from "../store/conformance.js";

const HOUR = 3_600_000;

// delivery.retention_hours on a real SQLite store, the clock moved by the purger's `now`:
// what goes, what is kept and said so, the log lines and metrics, small steps, and a run
// that stops between steps when the control plane does.
describe("RetentionPurger", () => {
  let dir: string;
  let path: string;
  let store: SqliteStore;
  let log: CapturedLog;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "aigw-retention-"));
    path = join(dir, "aigw.db");
    store = await openSqliteStore(path);
    await store.upsertEndpoint(endpoint("live"), "whsec_bGl2ZWxpdmVsaXZlbGl2ZQ==");
    await store.upsertEndpoint(endpoint("off", { enabled: false }), "whsec_b2Zmb2Zmb2Zmb2Zmb2Zm");
    log = new CapturedLog("info");
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const purger = (now: () => number, stepBudgetMs?: number) =>
    new RetentionPurger({
      store,
      retentionHours: 24,
      logger: log.logger,
      now,
      ...(stepBudgetMs === undefined ? {} : { stepBudgetMs }),
    });

  it("purges what is past the window a day on, keeps and reports pending work, and counts it all", async () => {
    const delivered = completion("gpt-4", 10);
    const pendingLive = completion("gpt-4", 10);
    const pendingOff = completion("gpt-4", 10);
    await store.ingest([delivered], () => ["live"]);
    const [d] = await claimDue(store, { now: Date.now(), leaseOwner: "w", leaseMs: 1_000 });
    await store.completeAttempt(
      d!,
      { startedAt: Date.now(), statusCode: 200, latencyMs: 1, error: "", responseBody: "" },
      { status: "delivered" },
    );
    await store.ingest([pendingLive], () => ["live"]);
    await store.ingest([pendingOff], () => ["off"]);

    // Within the window: nothing goes.
    const p = purger(() => Date.now());
    expect(await p.runOnce()).toMatchObject({ events: 0, keptPending: 0 });

    // A day and a minute later.
    const later = purger(() => Date.now() + 24 * HOUR + 60_000);
    const run = await later.runOnce();
    expect(run).toMatchObject({ events: 2, deliveries: 2, attempts: 1, abandoned: 1, keptPending: 1 });
    expect((await store.readFeed(undefined, 10)).map((e) => e.event.id)).toEqual([pendingLive.id]);
    expect(await store.countPending()).toBe(1);

    const purged = log.lines.find((l) => l.msg === "retention: purged events past the window");
    expect(purged).toMatchObject({ level: 30, events: 2, deliveries: 2, attempts: 1, abandoned: 1, keptPending: 1 });
    const kept = log.lines.find((l) => l.code === "AIGW_RETENTION_KEPT_PENDING");
    expect(kept).toMatchObject({ level: 40, events: 1 });
    expect(String(kept?.msg)).toMatch(/still pending/);

    const text = renderMetrics(later.metrics());
    expect(text).toMatch(/^aigw_retention_purged_events_total 2$/m);
    expect(text).toMatch(/^aigw_retention_purged_attempts_total 1$/m);
    expect(text).toMatch(/^aigw_retention_abandoned_deliveries_total 1$/m);
    expect(text).toMatch(/^aigw_retention_kept_events\{reason="pending"\} 1$/m);
    expect(text).toMatch(/^aigw_retention_runs_total 1$/m);
  });

  it("goes through a large history in small steps, each near its time budget", async () => {
    await store.close();
    fillOldEvents(path, { count: 20_000, ingestedAt: Date.now() - 2 * 24 * HOUR, endpoint: "live" });
    store = await openSqliteStore(path);
    const p = purger(() => Date.now(), 2);
    const run = await p.runOnce();
    expect(run).toMatchObject({ events: 20_000, deliveries: 20_000, attempts: 20_000, keptPending: 0 });
    // Many steps, not one transaction; the step size adapts to the budget (timings are the load test's).
    expect(run.steps).toBeGreaterThan(20);
    expect(await store.countEvents()).toBe(0);
  });

  it("stops a run between two steps when the control plane stops, and the next run carries on", async () => {
    await store.close();
    fillOldEvents(path, { count: 5_000, ingestedAt: Date.now() - 2 * 24 * HOUR, endpoint: "live" });
    store = await openSqliteStore(path);
    const p = purger(() => Date.now(), 0.2);
    const running = p.runOnce();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await p.stop();
    const first = await running;
    expect(first.interrupted).toBe(true);
    expect(first.events).toBeLessThan(5_000);
    const second = await purger(() => Date.now()).runOnce();
    expect(first.events + second.events).toBe(5_000);
    expect(await store.countEvents()).toBe(0);
  });
});
