import { create, equals, fromBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newEventId, newRequestId } from "../../common/ids.js";
import {
  type ClaimedDelivery,
  type NewAttempt,
  type NewEndpoint,
  type Store,
  StoreConflictError,
  StoreNotFoundError,
} from "../../control-plane/store/store.js";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { PURGE_START } from "../../control-plane/store/retention.js";
import { MAX_EVENT_LATENCY_MS } from "../../control-plane/store/rollups.js";
import { describeBudgetStoreConformance } from "../budgets/store-conformance.js";
import { claimDue } from "../support/claims.js";

/**
 * The behaviour every Store must have, written against the interface only, so the
 * SQLite store and a PostgreSQL store run the same suite (svix's habit).
 */

export interface OpenedStore {
  store: Store;
  cleanup(): Promise<void>;
}

const LEASE_MS = 30_000;

export function completionEvent(fields: { requestId?: string; model?: string; orgId?: string } = {}): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: fields.orgId ?? "org_1",
    app: "chat",
    provider: "openai",
    time: timestampFromMs(Date.now()),
    payload: {
      case: "completion",
      value: {
        requestId: fields.requestId ?? newRequestId(),
        model: fields.model ?? "gpt-4o-mini",
        tokensUsed: 30,
        promptTokens: 10,
        completionTokens: 20,
        costUsd: 0.0001,
        latencyMs: 420,
      },
    },
  });
}

export function errorEvent(): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_1",
    app: "chat",
    provider: "openai",
    payload: {
      case: "error",
      value: { requestId: newRequestId(), errorType: "rate_limit", statusCode: 429, severity: "warning" },
    },
  });
}

export function streamingEvent(requestId: string, tokenIndex: number): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_1",
    app: "chat",
    provider: "openai",
    payload: { case: "streaming", value: { requestId, tokenIndex, content: `t${tokenIndex}`, model: "gpt-4o-mini" } },
  });
}

export function endpoint(name: string, fields: Partial<NewEndpoint> = {}): NewEndpoint {
  return {
    name,
    url: `https://hooks.example.com/${name}`,
    enabled: true,
    eventTypes: [],
    failoverTo: "",
    ...fields,
  };
}

export function attempt(fields: Partial<NewAttempt> = {}): NewAttempt {
  return { startedAt: Date.now(), statusCode: 200, latencyMs: 12, error: "", responseBody: "ok", ...fields };
}

/** Waits (without a fixed sleep) until the clock has moved past `ms`. */
async function clockPast(ms: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (Date.now() <= ms) {
    if (Date.now() > deadline) throw new Error("clock did not advance");
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

export function describeStoreConformance(name: string, open: () => Promise<OpenedStore>): void {
  describe(`Store conformance: ${name}`, () => {
    let opened: OpenedStore;
    let store: Store;

    beforeEach(async () => {
      opened = await open();
      store = opened.store;
    });

    afterEach(async () => {
      await opened.cleanup();
    });

    /** Claims everything due at `now` in every lane (or in `lanes`) for `owner`, lane by lane. */
    const claimAll = (owner = "w1", now = Date.now(), lanes?: string[]): Promise<ClaimedDelivery[]> =>
      claimDue(store, { now, leaseOwner: owner, leaseMs: LEASE_MS, ...(lanes ? { lanes } : {}) });
    const claimLane = (endpoint: string, limit: number, owner = "w1", now = Date.now(), leaseMs = LEASE_MS) =>
      store.claim({ now, leaseOwner: owner, leaseMs, lanes: [{ endpoint, limit }] }).then(([c]) => c!);
    const eventOf = (d: ClaimedDelivery) => fromBinary(EventSchema, d.eventBody);

    const deliver = (d: ClaimedDelivery, owner = "w1") =>
      store.completeAttempt({ ...d, leaseOwner: owner }, attempt(), { status: "delivered" });

    describe("events", () => {
      it("stores new events once by id and gives duplicates no deliveries", async () => {
        const [e1, e2, e3] = [completionEvent(), completionEvent(), completionEvent()];
        const first = await store.ingest([e1!, e2!, e1!], () => ["a"]);
        expect(first.stored.map((s) => s.event.id)).toEqual([e1!.id, e2!.id]);
        expect(first.duplicates).toBe(1);
        expect(first.deliveries).toBe(2);

        const second = await store.ingest([e1!, e3!], () => ["a"]);
        expect(second.stored.map((s) => s.event.id)).toEqual([e3!.id]);
        expect(second.duplicates).toBe(1);
        expect(second.deliveries).toBe(1);

        expect(await store.countEvents()).toBe(3);
        expect(await store.countPending()).toBe(3);
        const forE1 = await store.listDeliveries({ eventId: e1!.id, pageSize: 10 });
        expect(forE1.deliveries).toHaveLength(1);
      });

      it("reads events back in feed order from any cursor, decoded unchanged; the head is the live edge", async () => {
        const empty = await store.feedHead();
        expect(await store.readFeed(empty, 10)).toEqual([]);
        const events = [completionEvent(), errorEvent(), streamingEvent("req_s", 3)];
        const { stored } = await store.ingest(events, () => []);
        const all = await store.readFeed(undefined, 10);
        expect(all.map((s) => s.event.id)).toEqual(events.map((e) => e.id));
        expect(all.map((s) => s.cursor)).toEqual(stored.map((s) => s.cursor));
        all.forEach((s, i) => {
          expect(equals(EventSchema, s.event, events[i]!)).toBe(true);
          expect(s.ingestedAt).toBeGreaterThan(0);
          if (i > 0) expect(store.compareCursors(all[i - 1]!.cursor, s.cursor)).toBeLessThan(0);
        });
        expect((await store.readFeed(empty, 10)).map((s) => s.event.id)).toEqual(events.map((e) => e.id));
        const tail = await store.readFeed(all[0]!.cursor, 1);
        expect(tail.map((s) => s.event.id)).toEqual([events[1]!.id]);
        const head = await store.feedHead();
        expect(store.compareCursors(head, all[2]!.cursor)).toBeGreaterThanOrEqual(0);
        expect(await store.readFeed(head, 10)).toEqual([]);
        const later = completionEvent();
        await store.ingest([later], () => []);
        expect((await store.readFeed(head, 10)).map((s) => s.event.id)).toEqual([later.id]);
        expect(() => store.compareCursors("not a cursor", head)).toThrow(TypeError);
      });

      it("finds where the events stored since a time begin in the feed", async () => {
        expect(await store.feedCursorSince(0)).toBe(await store.feedHead());
        const { stored: before } = await store.ingest([completionEvent()], () => []);
        const cutoff = Date.now();
        await clockPast(cutoff);
        const { stored: after } = await store.ingest([completionEvent(), errorEvent()], () => []);
        const since = await store.feedCursorSince(cutoff + 1);
        expect((await store.readFeed(since, 10)).map((s) => s.event.id)).toEqual(after.map((s) => s.event.id));
        const all = await store.readFeed(await store.feedCursorSince(0), 10);
        expect(all.map((s) => s.event.id)).toEqual([...before, ...after].map((s) => s.event.id));
        // Nothing stored since: the live edge.
        expect(await store.feedCursorSince(Date.now() + 60_000)).toBe(await store.feedHead());
      });

      it("counts events since a time", async () => {
        await store.ingest([completionEvent()], () => []);
        const cutoff = Date.now();
        await clockPast(cutoff);
        await store.ingest([completionEvent(), completionEvent()], () => []);
        expect(await store.countEvents()).toBe(3);
        expect(await store.countEvents(cutoff + 1)).toBe(2);
      });

      it("creates one delivery per endpoint the route names", async () => {
        const completion = completionEvent();
        const error = errorEvent();
        const result = await store.ingest([completion, error], (event) =>
          event.payload.case === "completion" ? ["a", "b", "a"] : [],
        );
        expect(result.deliveries).toBe(2);
        const { deliveries } = await store.listDeliveries({ eventId: completion.id, pageSize: 10 });
        expect(deliveries.map((d) => d.endpoint).sort()).toEqual(["a", "b"]);
        for (const d of deliveries) {
          expect(d).toMatchObject({
            eventId: completion.id,
            eventSeq: result.stored[0]!.seq,
            eventType: EventType.COMPLETION,
            status: "pending",
            attemptCount: 0,
            finishedAt: null,
            lastError: "",
            originDeliveryId: "",
            orderKey: "",
            orderIndex: 0,
          });
          expect(d.id).toMatch(/^dlv_[0-9A-Z]{26}$/);
        }
        expect((await store.listDeliveries({ eventId: error.id, pageSize: 10 })).deliveries).toEqual([]);
      });

      it("says which lanes to wake once the deliveries are committed, before ingest resolves, once", async () => {
        const events = [completionEvent(), completionEvent()];
        const calls: string[][] = [];
        let claimedAtCommit: Promise<ClaimedDelivery[]> | undefined;
        let resolved = false;
        const ingest = store.ingest(
          events,
          (e) => (e.id === events[0]!.id ? ["a"] : ["a", "b"]),
          undefined,
          (endpoints) => {
            calls.push([...endpoints].sort());
            expect(resolved).toBe(false);
            // Committed: another reader can claim them already.
            claimedAtCommit = claimAll("w1");
          },
        );
        void ingest.then(() => {
          resolved = true;
        });
        const result = await ingest;
        expect(calls).toEqual([["a", "b"]]);
        expect((await claimedAtCommit!).map((d) => d.endpoint).sort()).toEqual(["a", "a", "b"]);
        expect(result.endpoints.sort()).toEqual(["a", "b"]);

        // A batch of duplicates only: nothing to wake, said once all the same.
        const again: string[][] = [];
        await store.ingest(
          events,
          () => ["a"],
          undefined,
          (endpoints) => again.push([...endpoints]),
        );
        expect(again).toEqual([[]]);
      });

      it("rolls the whole batch back when routing throws", async () => {
        const event = completionEvent();
        await expect(
          store.ingest([completionEvent(), event], (e) => {
            if (e.id === event.id) throw new Error("route failed");
            return ["a"];
          }),
        ).rejects.toThrow("route failed");
        expect(await store.countEvents()).toBe(0);
        expect(await store.countPending()).toBe(0);
      });
    });

    describe("claims and attempts", () => {
      it("claims due deliveries with a lease and records a successful attempt", async () => {
        const event = completionEvent();
        await store.ingest([event], () => ["a"]);
        const now = Date.now();
        const [claimed, ...rest] = await claimAll("w1", now);
        expect(rest).toEqual([]);
        expect(claimed!.leaseUntil).toBe(now + LEASE_MS);
        expect(equals(EventSchema, eventOf(claimed!), event)).toBe(true);
        expect(await claimAll("w2", now)).toEqual([]);

        const result = await store.completeAttempt(claimed!, attempt({ statusCode: 200, latencyMs: 33 }), {
          status: "delivered",
        });
        expect(result).toMatchObject({ recorded: true });
        expect(result.eventLatencyMs).toBeGreaterThanOrEqual(0);
        const detail = await store.getDelivery(claimed!.id);
        expect(detail!.delivery).toMatchObject({ status: "delivered", attemptCount: 1, lastError: "" });
        expect(detail!.delivery.finishedAt).toBeGreaterThan(0);
        expect(detail!.attempts).toMatchObject([
          { deliveryId: claimed!.id, number: 1, statusCode: 200, latencyMs: 33 },
        ]);
        expect(equals(EventSchema, detail!.event, event)).toBe(true);
        expect(await store.listAttempts(claimed!.id)).toEqual(detail!.attempts);
        expect(await store.countPending()).toBe(0);
        expect(await claimAll("w2", now + 10 * LEASE_MS)).toEqual([]);
      });

      it("records the delivery of an event whose time is long past (an old replay, a sidecar's clock years off)", async () => {
        // Months, and years: both past what a 32-bit latency column holds; each delivery is
        // recorded (never attempted again for a write that cannot succeed), its latency capped.
        const events = [Date.now() - 240 * 86_400_000, Date.UTC(1999, 0, 1)].map((ms) => {
          const e = completionEvent();
          e.time = timestampFromMs(ms);
          return e;
        });
        await store.ingest(events, () => ["a"]);
        const claimed = await claimAll("w1");
        expect(claimed).toHaveLength(2);
        for (const d of claimed) {
          const result = await store.completeAttempt(d, attempt(), { status: "delivered" });
          expect(result).toMatchObject({ recorded: true, eventLatencyMs: MAX_EVENT_LATENCY_MS });
          expect((await store.getDelivery(d.id))!.delivery).toMatchObject({
            status: "delivered",
            eventLatencyMs: MAX_EVENT_LATENCY_MS,
          });
        }
        expect(await store.countPending()).toBe(0);
      });

      it("claims a lane's oldest due first, honours its limit, and says when it is next due", async () => {
        const events = [completionEvent(), completionEvent(), completionEvent()];
        for (const event of events) await store.ingest([event], () => ["a"]);
        const now = Date.now();
        const first = await claimLane("a", 2, "w1", now);
        expect(first.deliveries.map((d) => d.eventId)).toEqual([events[0]!.id, events[1]!.id]);
        // The limit was reached: more may be due.
        expect(first.nextDueAt).toBeUndefined();
        const second = await claimLane("a", 2, "w1", now);
        expect(second.deliveries.map((d) => d.eventId)).toEqual([events[2]!.id]);
        // Everything left is leased: the lane is next claimable when the first lease ends.
        expect(second.nextDueAt).toBe(now + LEASE_MS);
        const third = await claimLane("a", 2, "w1", now);
        expect(third.deliveries).toEqual([]);
        expect(third.nextDueAt).toBe(now + LEASE_MS);
        expect(await claimLane("nobody", 5, "w1", now)).toEqual({
          endpoint: "nobody",
          deliveries: [],
          nextDueAt: undefined,
        });
      });

      it("claims only the lanes it is asked for, each within its own limit", async () => {
        await store.ingest([completionEvent(), completionEvent(), completionEvent()], () => ["a", "b", "c"]);
        const now = Date.now();
        const claims = await store.claim({
          now,
          leaseOwner: "w1",
          leaseMs: LEASE_MS,
          lanes: [
            { endpoint: "b", limit: 2 },
            { endpoint: "c", limit: 5 },
          ],
        });
        expect(claims.map((c) => [c.endpoint, c.deliveries.length])).toEqual([
          ["b", 2],
          ["c", 3],
        ]);
        expect(claims.every((c) => c.deliveries.every((d) => d.endpoint === c.endpoint))).toBe(true);
        expect((await claimLane("a", 10, "w1", now)).deliveries).toHaveLength(3);
        await expect(
          store.claim({ now, leaseOwner: "w1", leaseMs: LEASE_MS, lanes: [{ endpoint: "a", limit: 0 }] }),
        ).rejects.toThrow(/limit/);
      });

      it("lists the lanes with pending work and when each is next due, a page at a time", async () => {
        const names = Array.from({ length: 12 }, (_, i) => `lane-${String(i).padStart(2, "0")}`);
        await store.ingest([completionEvent()], () => names);
        await store.ingest([completionEvent(), completionEvent()], () => ["lane-03"]);
        const now = Date.now();
        const page1 = await store.pendingLanes("", 5);
        expect(page1.map((l) => l.endpoint)).toEqual(names.slice(0, 5));
        const page2 = await store.pendingLanes(page1[4]!.endpoint, 100);
        expect(page2.map((l) => l.endpoint)).toEqual(names.slice(5));
        for (const lane of [...page1, ...page2]) expect(lane.dueAt).toBeLessThanOrEqual(now);
        // A lane whose deliveries all wait for a retry is due at the earliest retry.
        const [only] = await claimAll("w1", now, ["lane-07"]);
        await store.completeAttempt(only!, attempt({ statusCode: 503 }), {
          status: "retry",
          nextAttemptAt: now + 90_000,
        });
        expect((await store.pendingLanes("lane-06", 1))[0]).toEqual({ endpoint: "lane-07", dueAt: now + 90_000 });
      });

      it("gives an expired lease to another owner and refuses the old owner's result", async () => {
        await store.ingest([completionEvent()], () => ["a"]);
        const now = Date.now();
        const [mine] = (await claimLane("a", 1, "w1", now, 1_000)).deliveries;
        expect((await claimLane("a", 1, "w2", now + 999, 1_000)).deliveries).toEqual([]);
        const [theirs] = (await claimLane("a", 1, "w2", now + 1_000, 1_000)).deliveries;
        expect(theirs!.id).toBe(mine!.id);

        expect(await deliver(mine!, "w1")).toEqual({ recorded: false });
        expect(await store.listAttempts(mine!.id)).toEqual([]);
        expect((await store.getDelivery(mine!.id))!.delivery.status).toBe("pending");

        expect(await deliver(theirs!, "w2")).toMatchObject({ recorded: true });
        expect(await deliver(theirs!, "w2")).toEqual({ recorded: false });
        expect(await store.listAttempts(mine!.id)).toHaveLength(1);
      });

      it("records many concurrent completions", async () => {
        await store.ingest(
          Array.from({ length: 50 }, () => completionEvent()),
          () => ["a"],
        );
        const claimed = await claimAll();
        expect(claimed).toHaveLength(50);
        const results = await Promise.all(claimed.map((d) => deliver(d)));
        expect(results.every((r) => r.recorded)).toBe(true);
        expect(await store.countPending()).toBe(0);
        expect((await store.listDeliveries({ status: "delivered", pageSize: 100 })).deliveries).toHaveLength(50);
      });

      it("schedules a retry that is not claimable before its time", async () => {
        await store.ingest([completionEvent()], () => ["a"]);
        const now = Date.now();
        const [claimed] = await claimAll("w1", now);
        const retryAt = now + 60_000;
        const result = await store.completeAttempt(claimed!, attempt({ statusCode: 503, responseBody: "busy" }), {
          status: "retry",
          nextAttemptAt: retryAt,
        });
        expect(result.recorded).toBe(true);
        expect(await store.pendingLanes("", 10)).toEqual([{ endpoint: "a", dueAt: retryAt }]);
        expect(await claimAll("w1", retryAt - 1)).toEqual([]);

        const [again] = await claimAll("w2", retryAt);
        expect(again).toMatchObject({
          id: claimed!.id,
          attemptCount: 1,
          nextAttemptAt: retryAt,
          lastError: "HTTP 503",
        });
        await store.completeAttempt(again!, attempt({ error: "timeout after 30000 ms", statusCode: 0 }), {
          status: "failed",
        });
        const detail = await store.getDelivery(claimed!.id);
        expect(detail!.delivery).toMatchObject({
          status: "failed",
          attemptCount: 2,
          lastError: "timeout after 30000 ms",
        });
        expect(detail!.attempts.map((a) => a.number)).toEqual([1, 2]);
        expect(await store.pendingLanes("", 10)).toEqual([]);
      });

      it("gives leases back on release without counting an attempt", async () => {
        await store.ingest([completionEvent(), completionEvent()], () => ["a"]);
        const now = Date.now();
        expect(await claimAll("w1", now)).toHaveLength(2);
        expect(await store.releaseLeases("other")).toBe(0);
        expect(await store.releaseLeases("w1")).toBe(2);
        const reclaimed = await claimAll("w2", now);
        expect(reclaimed).toHaveLength(2);
        expect(reclaimed.every((d) => d.attemptCount === 0)).toBe(true);
      });

      it("dead-letters and creates the failover delivery to an enabled endpoint", async () => {
        await store.upsertEndpoint(endpoint("primary", { failoverTo: "backup" }), "whsec_cHJpbWFyeQ==");
        await store.upsertEndpoint(endpoint("backup"), "whsec_YmFja3Vw");
        await store.upsertEndpoint(endpoint("off", { enabled: false }), "whsec_b2Zm");
        const event = completionEvent();
        await store.ingest([event], () => ["primary", "primary2", "primary3"]);
        const claimed = await claimAll();
        const byEndpoint = new Map(claimed.map((d) => [d.endpoint, d]));

        const result = await store.completeAttempt(byEndpoint.get("primary")!, attempt({ statusCode: 500 }), {
          status: "dead_lettered",
          failoverTo: "backup",
        });
        expect(result.recorded).toBe(true);
        expect(result.failoverDelivery).toMatchObject({
          endpoint: "backup",
          eventId: event.id,
          status: "pending",
          originDeliveryId: byEndpoint.get("primary")!.id,
        });
        const original = await store.getDelivery(byEndpoint.get("primary")!.id);
        expect(original!.delivery).toMatchObject({ status: "dead_lettered", lastError: "HTTP 500" });

        // A disabled or missing failover target gets nothing.
        const toDisabled = await store.completeAttempt(byEndpoint.get("primary2")!, attempt({ statusCode: 500 }), {
          status: "dead_lettered",
          failoverTo: "off",
        });
        expect(toDisabled).toEqual({ recorded: true });
        const toMissing = await store.completeAttempt(byEndpoint.get("primary3")!, attempt({ statusCode: 500 }), {
          status: "dead_lettered",
          failoverTo: "nowhere",
        });
        expect(toMissing).toEqual({ recorded: true });

        const next = await claimAll("w2");
        expect(next.map((d) => d.id)).toEqual([result.failoverDelivery!.id]);
        expect(equals(EventSchema, eventOf(next[0]!), event)).toBe(true);
      });

      it("fails the delivery and disables the endpoint on endpoint_gone", async () => {
        await store.upsertEndpoint(endpoint("gone"), "whsec_Z29uZQ==");
        await store.ingest([completionEvent()], () => ["gone"]);
        const [claimed] = await claimAll();
        await store.completeAttempt(claimed!, attempt({ statusCode: 410 }), {
          status: "endpoint_gone",
          reason: "receiver answered 410 Gone",
        });
        expect((await store.getDelivery(claimed!.id))!.delivery).toMatchObject({
          status: "failed",
          lastError: "HTTP 410",
        });
        expect(await store.getEndpoint("gone")).toMatchObject({
          enabled: false,
          disabledReason: "receiver answered 410 Gone",
        });
      });

      it("never sends a failover copy back along its own chain", async () => {
        // Validation refuses cycles; this is the store's backstop if one slips in.
        await store.upsertEndpoint(endpoint("x", { failoverTo: "y" }), "whsec_eHh4eHh4eHh4eHh4eHh4eA==");
        await store.upsertEndpoint(endpoint("y", { failoverTo: "x" }), "whsec_eXl5eXl5eXl5eXl5eXl5eQ==");
        await store.ingest([completionEvent()], () => ["x"]);
        const [onX] = await claimAll();
        const toY = await store.completeAttempt(onX!, attempt({ statusCode: 500 }), {
          status: "dead_lettered",
          failoverTo: "y",
        });
        expect(toY.failoverDelivery?.endpoint).toBe("y");
        const [onY] = await claimAll();
        const back = await store.completeAttempt(onY!, attempt({ statusCode: 500 }), {
          status: "dead_lettered",
          failoverTo: "x",
        });
        expect(back).toEqual({ recorded: true });
        expect(await store.countPending()).toBe(0);
      });

      it("keeps its pending count equal to the pending rows through every change", async () => {
        const pendingRows = async () => {
          let count = 0;
          let pageToken = "";
          do {
            const page = await store.listDeliveries({ status: "pending", pageSize: 1000, pageToken });
            count += page.deliveries.length;
            pageToken = page.nextPageToken;
          } while (pageToken !== "");
          return count;
        };
        await store.upsertEndpoint(endpoint("p", { failoverTo: "q" }), "whsec_cHBwcHBwcHBwcHBwcHBwcA==");
        await store.upsertEndpoint(endpoint("q"), "whsec_cXFxcXFxcXFxcXFxcXFxcQ==");
        await store.upsertEndpoint(endpoint("gone-soon"), "whsec_Z2dnZ2dnZ2dnZ2dnZ2dnZw==");
        const dup = completionEvent();
        await store.ingest([dup, completionEvent(), completionEvent()], () => ["p", "gone-soon"]);
        await store.ingest([dup], () => ["p", "gone-soon"]);
        expect(await store.countPending()).toBe(await pendingRows());
        const claimed = await claimAll("w1", Date.now(), ["p"]);
        await store.completeAttempt(claimed[0]!, attempt(), { status: "delivered" });
        await store.completeAttempt(claimed[1]!, attempt({ statusCode: 500 }), {
          status: "dead_lettered",
          failoverTo: "q",
        });
        await store.completeAttempt(claimed[2]!, attempt({ statusCode: 503 }), {
          status: "retry",
          nextAttemptAt: Date.now() + 60_000,
        });
        expect(await store.countPending()).toBe(await pendingRows());
        await store.deleteEndpoint("gone-soon");
        await store.replayDelivery(claimed[0]!.id);
        expect(await store.replayDeadLettered()).toBe(1);
        expect(await store.countPending()).toBe(await pendingRows());
        expect(await store.countPending()).toBe(4);
      });

      it("delivers a request's streaming events to each endpoint in token order", async () => {
        const r1 = "req_stream_one";
        const r2 = "req_stream_two";
        // Ingested out of order, as two sidecar batches may land.
        const r1Tokens = [streamingEvent(r1, 1), streamingEvent(r1, 0), streamingEvent(r1, 2)];
        const r2Tokens = [streamingEvent(r2, 0), streamingEvent(r2, 1)];
        await store.ingest([r1Tokens[0]!, r2Tokens[1]!], () => ["a", "b"]);
        await store.ingest([r1Tokens[1]!, r1Tokens[2]!, r2Tokens[0]!], () => ["a", "b"]);

        const label = (d: ClaimedDelivery) => `${d.endpoint}:${d.orderKey}#${d.orderIndex}`;
        const now = Date.now();
        const first = await claimAll("w1", now);
        expect(first.map(label).sort()).toEqual([`a:${r1}#0`, `a:${r2}#0`, `b:${r1}#0`, `b:${r2}#0`]);
        // Leased but still pending: the next token waits.
        expect(await claimAll("w1", now)).toEqual([]);

        const find = (endpointName: string, requestId: string) =>
          first.find((d) => d.endpoint === endpointName && d.orderKey === requestId)!;
        await deliver(find("a", r1));
        expect((await claimAll("w1", now)).map(label)).toEqual([`a:${r1}#1`]);

        // A retrying earlier token keeps holding the later ones back.
        await store.completeAttempt(find("b", r1), attempt({ statusCode: 503 }), {
          status: "retry",
          nextAttemptAt: now + 60_000,
        });
        expect(await claimAll("w1", now)).toEqual([]);
        // Finishing one request's token frees only that request's next one.
        await deliver(find("a", r2));
        const afterR2 = await claimAll("w1", now);
        expect(afterR2.map(label)).toEqual([`a:${r2}#1`]);
      });

      it("a claim sees the attempt results submitted before it, settled or not (claimsSeeSubmittedResults)", async () => {
        expect(store.claimsSeeSubmittedResults).toBe(true);
        await store.ingest(
          Array.from({ length: 4 }, () => completionEvent()),
          () => ["a"],
        );
        const now = Date.now();
        const [d1, d2] = (await claimLane("a", 2, "w1", now)).deliveries as [ClaimedDelivery, ClaimedDelivery];
        // Two results submitted, not awaited: the claim in the same turn records them first.
        const recorded = [
          store.completeAttempt(d1, attempt(), { status: "delivered" }),
          store.completeAttempt(d2, attempt({ statusCode: 503 }), { status: "retry", nextAttemptAt: now + 60_000 }),
        ];
        const next = await claimLane("a", 10, "w1", now);
        expect(next.deliveries).toHaveLength(2);
        expect((await store.getDelivery(d1.id))?.delivery).toMatchObject({ status: "delivered", attemptCount: 1 });
        expect((await store.getDelivery(d2.id))?.delivery).toMatchObject({ status: "pending", attemptCount: 1 });
        expect((await Promise.all(recorded)).map((r) => r.recorded)).toEqual([true, true]);
        expect(await store.listAttempts(d2.id)).toHaveLength(1);
        expect(await store.countPending()).toBe(3);

        // A result that needs more than its row (a stream's next token) is seen all the same.
        const r = newRequestId();
        await store.ingest([streamingEvent(r, 0), streamingEvent(r, 1)], () => ["b"]);
        const later = Date.now();
        const [t0] = (await claimLane("b", 10, "w1", later)).deliveries as [ClaimedDelivery];
        expect(eventOf(t0).payload.value).toMatchObject({ tokenIndex: 0 });
        const done = store.completeAttempt(t0, attempt(), { status: "delivered" });
        const [t1] = (await claimLane("b", 10, "w1", later)).deliveries;
        expect(t1 && eventOf(t1).payload.value).toMatchObject({ tokenIndex: 1 });
        expect((await done).recorded).toBe(true);
      });

      it("giving leases back records the results submitted before it first", async () => {
        await store.ingest(
          Array.from({ length: 2 }, () => completionEvent()),
          () => ["a"],
        );
        const [done, held] = (await claimLane("a", 2, "w1", Date.now())).deliveries as [
          ClaimedDelivery,
          ClaimedDelivery,
        ];
        const recorded = store.completeAttempt(done, attempt(), { status: "delivered" });
        expect(await store.releaseLeases("w1")).toBe(1);
        expect((await recorded).recorded).toBe(true);
        expect((await store.getDelivery(done.id))?.delivery).toMatchObject({ status: "delivered", attemptCount: 1 });
        expect((await claimLane("a", 10, "w2", Date.now())).deliveries.map((d) => d.id)).toEqual([held.id]);
      });
    });

    describe("replay", () => {
      it("replays one delivery as a new pending delivery of the same event", async () => {
        await store.upsertEndpoint(endpoint("a"), "whsec_YWFhYQ==");
        const event = completionEvent();
        await store.ingest([event], () => ["a"]);
        const [claimed] = await claimAll();
        await deliver(claimed!);
        const replay = await store.replayDelivery(claimed!.id);
        expect(replay).toMatchObject({
          eventId: event.id,
          endpoint: "a",
          status: "pending",
          attemptCount: 0,
          originDeliveryId: claimed!.id,
        });
        expect(replay.id).not.toBe(claimed!.id);
        const [again] = await claimAll();
        expect(again!.id).toBe(replay.id);
        expect(equals(EventSchema, eventOf(again!), event)).toBe(true);
        await expect(store.replayDelivery("dlv_00000000000000000000000000")).rejects.toBeInstanceOf(StoreNotFoundError);
        await store.deleteEndpoint("a");
        await expect(store.replayDelivery(claimed!.id)).rejects.toBeInstanceOf(StoreNotFoundError);
      });

      it("replays dead letters in bulk, per endpoint or all, once each", async () => {
        for (const name of ["a", "b"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}${name}`);
        await store.ingest([completionEvent(), completionEvent()], () => ["a", "b"]);
        const claimed = await claimAll();
        expect(claimed).toHaveLength(4);
        const [delivered, ...deadLettered] = claimed;
        await deliver(delivered!);
        for (const d of deadLettered) {
          await store.completeAttempt(d, attempt({ statusCode: 500 }), { status: "dead_lettered" });
        }
        const deadOnA = deadLettered.filter((d) => d.endpoint === "a").length;

        expect(await store.replayDeadLettered("a")).toBe(deadOnA);
        expect(await store.replayDeadLettered()).toBe(3 - deadOnA);
        expect(await store.replayDeadLettered()).toBe(0);
        const pending = await store.listDeliveries({ status: "pending", pageSize: 10 });
        expect(pending.deliveries.map((d) => d.originDeliveryId).sort()).toEqual(deadLettered.map((d) => d.id).sort());
      });

      it("creates deliveries of a stored event", async () => {
        await store.upsertEndpoint(endpoint("a"), "whsec_YWFhYQ==");
        const { stored } = await store.ingest([completionEvent()], () => []);
        const created = await store.createDeliveries(stored[0]!.seq, ["a"], "dlv_origin");
        expect(created).toMatchObject([{ endpoint: "a", eventSeq: stored[0]!.seq, originDeliveryId: "dlv_origin" }]);
        expect((await claimAll()).map((d) => d.id)).toEqual([created[0]!.id]);
        await expect(store.createDeliveries(stored[0]!.seq + 1000, ["a"])).rejects.toBeInstanceOf(StoreNotFoundError);
        await expect(store.createDeliveries(stored[0]!.seq, ["missing"])).rejects.toBeInstanceOf(StoreNotFoundError);
      });
    });

    describe("replay by window", () => {
      /** `n` deliveries to `name` finished with `status`, in order. */
      const finish = async (name: string, n: number, status: "dead_lettered" | "failed") => {
        await store.ingest(
          Array.from({ length: n }, () => completionEvent()),
          () => [name],
        );
        const claimed = (await claimAll("w1", Date.now(), [name])).slice(0, n);
        for (const d of claimed)
          await store.completeAttempt(d, attempt({ statusCode: 503, error: "HTTP 503" }), { status });
        return claimed;
      };
      const allOf = { since: 0, until: Number.MAX_SAFE_INTEGER } as const;

      it("queues the window's failed and dead-lettered deliveries in bounded steps, once however often it runs", async () => {
        for (const name of ["a", "b"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}${name}`);
        const before = Date.now();
        await clockPast(before);
        const dead = await finish("a", 7, "dead_lettered");
        const failed = await finish("b", 3, "failed");
        const window = { ...allOf, since: before, statuses: ["failed", "dead_lettered"] as const };
        expect(await store.countReplayWindow(window)).toBe(10);
        let replayed = 0;
        let steps = 0;
        const endpoints = new Set<string>();
        for (let after: string | undefined; ; ) {
          const step = await store.replayWindow({ ...window, limit: 4, ...(after ? { after } : {}) });
          steps++;
          replayed += step.replayed;
          for (const e of step.endpoints) endpoints.add(e);
          if (step.next === undefined) break;
          after = step.next;
        }
        expect(replayed).toBe(10);
        expect(steps).toBe(3);
        expect([...endpoints].sort()).toEqual(["a", "b"]);
        const pending = await store.listDeliveries({ status: "pending", pageSize: 100 });
        expect(pending.deliveries.map((d) => d.originDeliveryId).sort()).toEqual(
          [...dead, ...failed].map((d) => d.id).sort(),
        );
        // Again: every one is replayed already (pending again, too): nothing more.
        const again = await store.replayWindow({ ...window, limit: 100 });
        expect(again).toMatchObject({ replayed: 0, skipped: 10, next: undefined });
        // Once the replays are delivered they are still replays: a third run queues nothing either.
        for (const d of await claimAll()) await deliver(d);
        expect((await store.replayWindow({ ...window, limit: 100 })).replayed).toBe(0);
        expect(await store.countPending()).toBe(0);
      });

      it("keeps to the window, the statuses and the endpoint, and skips disabled or deleted endpoints", async () => {
        for (const name of ["a", "b", "c"]) {
          await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}${name}`);
        }
        await finish("a", 2, "dead_lettered");
        await finish("a", 1, "failed");
        await finish("b", 2, "dead_lettered");
        await finish("c", 1, "dead_lettered");
        await store.updateEndpoint("b", { enabled: false });
        await store.deleteEndpoint("c");
        const after = Date.now() + 1;
        expect(
          (await store.replayWindow({ since: after, until: after + 60_000, statuses: ["dead_lettered"], limit: 50 }))
            .replayed,
        ).toBe(0);
        expect(await store.replayWindow({ ...allOf, statuses: ["failed"], endpoint: "a", limit: 50 })).toMatchObject({
          replayed: 1,
          skipped: 0,
        });
        expect(await store.replayWindow({ ...allOf, statuses: ["dead_lettered"], limit: 50 })).toMatchObject({
          replayed: 2,
          skipped: 3,
        });
        // The bulk dead-letter replay is the same steps, whatever the window: nothing left.
        expect(await store.replayDeadLettered()).toBe(0);
        await expect(store.replayWindow({ ...allOf, statuses: [], limit: 5 })).rejects.toThrow(RangeError);
        await expect(store.replayWindow({ ...allOf, statuses: ["failed"], limit: 0 })).rejects.toThrow(RangeError);
        await expect(
          store.replayWindow({ ...allOf, statuses: ["failed"], limit: 5, after: "nonsense" }),
        ).rejects.toThrow(TypeError);
      });

      it("does not queue a delivery whose event is pending again for its endpoint", async () => {
        await store.upsertEndpoint(endpoint("a"), "whsec_YWFhYQ==");
        const [dead] = await finish("a", 1, "dead_lettered");
        // A replay made some other way (one by one) is pending: the window leaves it.
        await store.createDeliveries(dead!.eventSeq, ["a"]);
        expect(await store.replayWindow({ ...allOf, statuses: ["dead_lettered"], limit: 10 })).toMatchObject({
          replayed: 0,
          skipped: 1,
        });
      });
    });

    describe("paused endpoints", () => {
      it("hold their deliveries: not claimed, not a lane, not counted as moving; resumed in due order", async () => {
        for (const name of ["held", "other"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}`);
        const events = Array.from({ length: 5 }, () => completionEvent());
        await store.ingest(events, () => ["held", "other"]);
        const paused = await store.pauseEndpoint("held", true);
        expect(paused.pending).toBe(5);
        expect(paused.endpoint).toMatchObject({ name: "held", paused: true, enabled: true });
        expect(paused.endpoint.pausedAt).toBeGreaterThan(0);
        expect((await store.getEndpoint("held"))?.paused).toBe(true);
        expect((await store.pendingLanes("", 10)).map((l) => l.endpoint)).toEqual(["other"]);
        expect(await claimLane("held", 10)).toMatchObject({ deliveries: [], nextDueAt: undefined });
        expect(await store.countPending()).toBe(10);
        expect(await store.countHeld()).toBe(5);
        expect(await store.countEndpointPending("held")).toBe(5);
        // New events keep queueing for it.
        await store.ingest([completionEvent()], () => ["held"]);
        expect(await store.countHeld()).toBe(6);
        // Disabled endpoints' pending deliveries are held too.
        await store.updateEndpoint("other", { enabled: false });
        expect(await store.countHeld()).toBe(11);
        await store.updateEndpoint("other", { enabled: true });

        const resumed = await store.pauseEndpoint("held", false);
        expect(resumed).toMatchObject({ pending: 6, endpoint: { paused: false, pausedAt: null } });
        expect(await store.countHeld()).toBe(0);
        const claimed = (await claimLane("held", 10)).deliveries;
        expect(claimed.map((d) => d.eventId)).toEqual([...events.map((e) => e.id), claimed[5]!.eventId]);
        await expect(store.pauseEndpoint("missing", true)).rejects.toBeInstanceOf(StoreNotFoundError);
      });

      it("stay paused when the config upserts them again (a restart)", async () => {
        await store.upsertEndpoint(endpoint("held"), "whsec_aGVsZA==");
        await store.pauseEndpoint("held", true);
        await store.upsertEndpoint(endpoint("held", { url: "https://hooks.example.com/moved" }), "whsec_aGVsZA==");
        expect(await store.getEndpoint("held")).toMatchObject({ paused: true, url: "https://hooks.example.com/moved" });
      });
    });

    describe("operator events", () => {
      const typeOf = (e: { event: Event }) => e.event.payload.case;

      it("are made only once the control plane routes them", async () => {
        await store.upsertEndpoint(endpoint("a"), "whsec_YWFhYQ==");
        await store.ingest([completionEvent()], () => ["a"]);
        const [d] = await claimAll();
        const result = await store.completeAttempt(d!, attempt({ statusCode: 503 }), { status: "dead_lettered" });
        expect(result.generated).toBeUndefined();
        expect(await store.countEvents()).toBe(1);
      });

      it("endpoint.disabled once on a 410, with its deliveries to the routed endpoints but never the one it is about", async () => {
        for (const name of ["gone", "ops"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}`);
        store.routeOperatorEvents(() => ["ops", "gone"]);
        await store.ingest([completionEvent(), completionEvent()], () => ["gone"]);
        const [first, second] = await claimAll("w1", Date.now(), ["gone"]);
        const gone = { status: "endpoint_gone", reason: "receiver answered 410 Gone" } as const;
        const r1 = await store.completeAttempt(first!, attempt({ statusCode: 410 }), gone);
        expect(r1.generated?.map(typeOf)).toEqual(["endpointDisabled"]);
        expect(r1.endpoints).toEqual(["ops"]);
        const payload = r1.generated![0]!.event.payload;
        expect(payload.case === "endpointDisabled" && payload.value).toMatchObject({
          endpoint: "gone",
          reason: "gone",
          statusCode: 410,
          pendingDeliveries: 1,
        });
        // Already disabled: the second 410 makes none.
        const r2 = await store.completeAttempt(second!, attempt({ statusCode: 410 }), gone);
        expect(r2.generated).toBeUndefined();
        const feed = await store.readFeed(undefined, 100);
        expect(feed.filter((e) => typeOf(e) === "endpointDisabled")).toHaveLength(1);
        const toOps = await claimAll("w2", Date.now(), ["ops"]);
        expect(toOps.map((d) => d.eventType)).toEqual([EventType.ENDPOINT_DISABLED]);
      });

      it("delivery.exhausted when no failover copy was made, and never about a delivery of an operator event", async () => {
        await store.upsertEndpoint(endpoint("backup"), "whsec_YmFja3Vw");
        await store.upsertEndpoint(endpoint("primary", { failoverTo: "backup" }), "whsec_cHJpbWFyeQ==");
        await store.upsertEndpoint(endpoint("ops"), "whsec_b3Bz");
        store.routeOperatorEvents(() => ["ops"]);
        await store.ingest([completionEvent()], () => ["primary"]);
        const [d] = await claimAll("w1", Date.now(), ["primary"]);
        const failedOver = await store.completeAttempt(d!, attempt({ statusCode: 503, error: "HTTP 503" }), {
          status: "dead_lettered",
          failoverTo: "backup",
        });
        expect(failedOver.failoverDelivery?.endpoint).toBe("backup");
        expect(failedOver.generated).toBeUndefined();
        const [copy] = await claimAll("w1", Date.now(), ["backup"]);
        const exhausted = await store.completeAttempt(copy!, attempt({ statusCode: 503, error: "HTTP 503" }), {
          status: "dead_lettered",
        });
        expect(exhausted.generated?.map(typeOf)).toEqual(["deliveryExhausted"]);
        const p = exhausted.generated![0]!.event.payload;
        expect(p.case === "deliveryExhausted" && p.value).toMatchObject({
          deliveryId: copy!.id,
          endpoint: "backup",
          eventType: "completion",
          attempts: 1,
          lastError: "HTTP 503",
          originDeliveryId: d!.id,
        });
        // The ops endpoint's delivery of it is exhausted too: that makes nothing more.
        const [toOps] = await claimAll("w1", Date.now(), ["ops"]);
        expect(toOps!.eventType).toBe(EventType.DELIVERY_EXHAUSTED);
        const last = await store.completeAttempt(toOps!, attempt({ statusCode: 503 }), { status: "dead_lettered" });
        expect(last.generated).toBeUndefined();
      });

      it("endpoint.recovered once when a circuit recorded open is recorded closed", async () => {
        for (const name of ["flaky", "ops"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}`);
        store.routeOperatorEvents(() => ["ops"]);
        expect((await store.putCircuit({ endpoint: "flaky", open: false, openedAt: 0 })).generated).toEqual([]);
        const openedAt = Date.now() - 5_000;
        expect((await store.putCircuit({ endpoint: "flaky", open: true, openedAt })).generated).toEqual([]);
        const closed = await store.putCircuit({ endpoint: "flaky", open: false, openedAt: 0 });
        expect(closed.generated.map(typeOf)).toEqual(["endpointRecovered"]);
        expect(closed.endpoints).toEqual(["ops"]);
        const p = closed.generated[0]!.event.payload;
        expect(p.case === "endpointRecovered" && Number(p.value.downMs)).toBeGreaterThanOrEqual(5_000);
        expect((await store.putCircuit({ endpoint: "flaky", open: false, openedAt: 0 })).generated).toEqual([]);
      });

      it("keeps an endpoint's run of failed attempts: the earliest start wins, until it ends", async () => {
        const since = Date.now() - 60_000;
        expect(await store.startFailingRun("down", since)).toBe(since);
        // A later start (another replica, a restart) adopts the recorded one.
        expect(await store.startFailingRun("down", since + 30_000)).toBe(since);
        // An earlier one (another replica saw a failure first) replaces it.
        expect(await store.startFailingRun("down", since - 1_000)).toBe(since - 1_000);
        // The circuit's own state is left alone, and the run reads back with it.
        await store.putCircuit({ endpoint: "down", open: true, openedAt: since });
        const read = (await store.listCircuits()).find((c) => c.endpoint === "down");
        expect(read).toMatchObject({ open: true, openedAt: since, failingSince: since - 1_000 });
        await store.endFailingRun("down");
        expect((await store.listCircuits()).find((c) => c.endpoint === "down")).toMatchObject({
          open: true,
          failingSince: 0,
        });
        // A new run starts afresh.
        expect(await store.startFailingRun("down", since + 50_000)).toBe(since + 50_000);
        await store.endFailingRun("never-failed");
        expect((await store.listCircuits()).some((c) => c.endpoint === "never-failed")).toBe(false);
      });

      it("endpoint.disabled once when a run of failures disables an endpoint", async () => {
        for (const name of ["down", "ops"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}`);
        store.routeOperatorEvents(() => ["ops"]);
        const why = {
          detail: "every attempt failed for 1h (12 attempts)",
          statusCode: 503,
          lastError: "HTTP 503",
          failingSince: Date.now() - 3_600_000,
          failedAttempts: 12,
        };
        const first = await store.autoDisableEndpoint("down", why);
        expect(first.generated.map(typeOf)).toEqual(["endpointDisabled"]);
        expect(await store.getEndpoint("down")).toMatchObject({ enabled: false, disabledReason: why.detail });
        const p = first.generated[0]!.event.payload;
        expect(p.case === "endpointDisabled" && p.value).toMatchObject({ reason: "failing", failedAttempts: 12 });
        expect((await store.autoDisableEndpoint("down", why)).generated).toEqual([]);
        expect((await store.autoDisableEndpoint("missing", why)).generated).toEqual([]);
      });

      it("a disable for a run of failures the store no longer holds changes nothing and says which run it holds", async () => {
        for (const name of ["down", "ops"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}`);
        store.routeOperatorEvents(() => ["ops"]);
        const since = Date.now() - 3_600_000;
        const why = (runStartedAt: number) => ({
          detail: "every attempt failed for 1h (12 attempts)",
          statusCode: 503,
          lastError: "HTTP 503",
          failingSince: since,
          failedAttempts: 12,
          runStartedAt,
        });
        // No run recorded at all.
        expect(await store.autoDisableEndpoint("down", why(since))).toEqual({
          generated: [],
          endpoints: [],
          runInStore: 0,
        });
        // A run that another process ended (a success there), then began again later.
        await store.startFailingRun("down", since);
        await store.endFailingRun("down");
        expect((await store.autoDisableEndpoint("down", why(since))).runInStore).toBe(0);
        await store.startFailingRun("down", since + 60_000);
        const refused = await store.autoDisableEndpoint("down", why(since));
        expect(refused).toMatchObject({ generated: [], runInStore: since + 60_000 });
        expect((await store.getEndpoint("down"))?.enabled).toBe(true);
        // The run the store holds (or a newer caller's view of it) disables.
        const done = await store.autoDisableEndpoint("down", why(since + 60_000));
        expect(done.runInStore).toBeUndefined();
        expect(done.generated.map(typeOf)).toEqual(["endpointDisabled"]);
        expect((await store.getEndpoint("down"))?.enabled).toBe(false);
      });
    });

    describe("listing", () => {
      it("pages through deliveries newest first with stable tokens", async () => {
        const ids: string[] = [];
        for (let i = 0; i < 25; i++) {
          const { stored } = await store.ingest([completionEvent()], () => [i % 2 === 0 ? "even" : "odd"]);
          const { deliveries } = await store.listDeliveries({ eventId: stored[0]!.event.id, pageSize: 1 });
          ids.push(deliveries[0]!.id);
        }
        const seen: string[] = [];
        let pageToken = "";
        let pages = 0;
        do {
          const page = await store.listDeliveries({ pageSize: 10, ...(pageToken ? { pageToken } : {}) });
          seen.push(...page.deliveries.map((d) => d.id));
          pageToken = page.nextPageToken;
          pages++;
          // Deliveries created while paging do not shift later pages.
          if (pages === 1) await store.ingest([completionEvent()], () => ["even"]);
        } while (pageToken !== "");
        expect(pages).toBe(3);
        expect(seen).toEqual([...ids].reverse());

        const even = await store.listDeliveries({ endpoint: "even", pageSize: 100 });
        expect(even.deliveries).toHaveLength(14);
        expect(even.nextPageToken).toBe("");
        const pendingOdd = await store.listDeliveries({ endpoint: "odd", status: "pending", pageSize: 5 });
        expect(pendingOdd.deliveries).toHaveLength(5);
        expect(pendingOdd.deliveries.every((d) => d.endpoint === "odd")).toBe(true);
        expect((await store.listDeliveries({ status: "delivered", pageSize: 5 })).deliveries).toEqual([]);

        await expect(store.listDeliveries({ pageSize: 10, pageToken: "garbage" })).rejects.toThrow(/page token/);
        await expect(store.listDeliveries({ pageSize: 0 })).rejects.toThrow(/pageSize/);
      });

      it("returns undefined for an unknown delivery", async () => {
        expect(await store.getDelivery("dlv_00000000000000000000000000")).toBeUndefined();
        expect(await store.listAttempts("dlv_00000000000000000000000000")).toEqual([]);
      });
    });

    describe("endpoints and signing keys", () => {
      it("creates, reads, updates and deletes endpoints", async () => {
        const created = await store.createEndpoint(
          endpoint("orders", { eventTypes: [EventType.COMPLETION, EventType.ERROR], failoverTo: "backup" }),
          "whsec_b3JkZXJz",
        );
        expect(created).toMatchObject({
          name: "orders",
          enabled: true,
          eventTypes: [EventType.COMPLETION, EventType.ERROR],
          failoverTo: "backup",
          disabledReason: "",
          signingKeyCount: 1,
        });
        expect(created.createdAt).toBeGreaterThan(0);
        await expect(store.createEndpoint(endpoint("orders"), "whsec_eA==")).rejects.toBeInstanceOf(StoreConflictError);

        const disabled = await store.updateEndpoint("orders", { enabled: false, disabledReason: "paused by ops" });
        expect(disabled).toMatchObject({ enabled: false, disabledReason: "paused by ops", url: created.url });
        const enabled = await store.updateEndpoint("orders", { enabled: true, url: "https://new.example.com/h" });
        expect(enabled).toMatchObject({ enabled: true, disabledReason: "", url: "https://new.example.com/h" });
        expect(enabled.eventTypes).toEqual([EventType.COMPLETION, EventType.ERROR]);
        await expect(store.updateEndpoint("missing", { enabled: false })).rejects.toBeInstanceOf(StoreNotFoundError);

        await store.createEndpoint(endpoint("audit"), "whsec_YXVkaXQ=");
        expect((await store.listEndpoints()).map((e) => e.name)).toEqual(["audit", "orders"]);
        expect(await store.getEndpoint("nope")).toBeUndefined();
      });

      it("deleting an endpoint fails its pending deliveries and removes its keys", async () => {
        await store.createEndpoint(endpoint("doomed"), "whsec_ZG9vbWVk");
        await store.ingest([completionEvent(), completionEvent()], () => ["doomed", "kept"]);
        expect(await store.deleteEndpoint("doomed")).toBe(true);
        expect(await store.deleteEndpoint("doomed")).toBe(false);
        expect(await store.getEndpoint("doomed")).toBeUndefined();
        expect(await store.activeSigningKeys("doomed", Date.now())).toEqual([]);
        const failed = await store.listDeliveries({ endpoint: "doomed", pageSize: 10 });
        expect(failed.deliveries).toHaveLength(2);
        for (const d of failed.deliveries) expect(d).toMatchObject({ status: "failed", lastError: "endpoint deleted" });
        expect(await store.countPending()).toBe(2);
        await expect(store.addSigningKey("doomed", "whsec_eA==", Date.now())).rejects.toBeInstanceOf(
          StoreNotFoundError,
        );
      });

      it("rotates keys with an overlap window, newest first", async () => {
        await store.createEndpoint(endpoint("rot"), "whsec_b2xk");
        const now = Date.now();
        const [only] = await store.activeSigningKeys("rot", now);
        expect(only).toMatchObject({ secret: "whsec_b2xk", expiresAt: null });

        await store.addSigningKey("rot", "whsec_bmV3", now + 60_000);
        const during = await store.activeSigningKeys("rot", now);
        expect(during.map((k) => k.secret)).toEqual(["whsec_bmV3", "whsec_b2xk"]);
        expect(during.map((k) => k.expiresAt)).toEqual([null, now + 60_000]);
        expect((await store.getEndpoint("rot"))!.signingKeyCount).toBe(2);
        const after = await store.activeSigningKeys("rot", now + 60_000);
        expect(after.map((k) => k.secret)).toEqual(["whsec_bmV3"]);

        await store.updateEndpoint("rot", { secret: "whsec_cmVwbGFjZWQ=" });
        expect((await store.activeSigningKeys("rot", now)).map((k) => k.secret)).toEqual(["whsec_cmVwbGFjZWQ="]);
      });

      it("upsert keeps keys for an unchanged secret and replaces them for a changed one", async () => {
        const first = await store.upsertEndpoint(endpoint("cfg"), "whsec_Y29uZmln");
        expect(first.signingKeyCount).toBe(1);
        const now = Date.now();
        await store.addSigningKey("cfg", "whsec_cm90YXRlZA==", now + 60_000);

        // Same file secret at the next startup: the runtime rotation survives.
        const same = await store.upsertEndpoint(
          endpoint("cfg", { url: "https://moved.example.com/" }),
          "whsec_Y29uZmln",
        );
        expect(same.url).toBe("https://moved.example.com/");
        expect(same.createdAt).toBe(first.createdAt);
        expect((await store.activeSigningKeys("cfg", now)).map((k) => k.secret)).toEqual([
          "whsec_cm90YXRlZA==",
          "whsec_Y29uZmln",
        ]);

        await store.upsertEndpoint(endpoint("cfg"), "whsec_Y2hhbmdlZA==");
        const keys = await store.activeSigningKeys("cfg", now);
        expect(keys.map((k) => k.secret)).toEqual(["whsec_Y2hhbmdlZA=="]);
        expect(keys[0]!.expiresAt).toBeNull();
      });
    });

    describe("stats and retention", () => {
      it("reports per-endpoint counts, latency percentiles and failure reasons", async () => {
        await store.upsertEndpoint(endpoint("a"), "whsec_YWFhYQ==");
        await store.upsertEndpoint(endpoint("idle"), "whsec_aWRsZQ==");
        const since = Date.now();
        await store.ingest(
          Array.from({ length: 4 }, () => completionEvent()),
          () => ["a"],
        );
        const claimed = await claimAll();
        const latencies = [10, 20, 30, 400];
        // Delivered, delivered, dead-lettered after two 503s... and one left pending.
        await store.completeAttempt(claimed[0]!, attempt({ latencyMs: latencies[0]! }), {
          status: "delivered",
        });
        await store.completeAttempt(claimed[1]!, attempt({ latencyMs: latencies[1]! }), {
          status: "delivered",
        });
        await store.completeAttempt(claimed[2]!, attempt({ latencyMs: latencies[2]!, statusCode: 503 }), {
          status: "dead_lettered",
        });
        await store.completeAttempt(
          claimed[3]!,
          attempt({ latencyMs: latencies[3]!, statusCode: 0, error: "connect ECONNREFUSED" }),
          { status: "retry", nextAttemptAt: Date.now() + 60_000 },
        );

        const stats = await store.stats(since);
        const a = stats.find((s) => s.endpoint === "a");
        expect(a).toEqual({
          endpoint: "a",
          delivered: 2,
          failed: 0,
          deadLettered: 1,
          pending: 1,
          latencyP50Ms: 20,
          latencyP99Ms: 400,
          failureReasons: [
            { reason: "HTTP 503", count: 1 },
            { reason: "connect ECONNREFUSED", count: 1 },
          ],
        });
        expect(stats.find((s) => s.endpoint === "idle")).toMatchObject({
          delivered: 0,
          pending: 0,
          latencyP50Ms: 0,
          failureReasons: [],
        });
        const later = await store.stats(Date.now() + 60_000);
        expect(later.find((s) => s.endpoint === "a")).toMatchObject({ delivered: 0, pending: 0, latencyP99Ms: 0 });
      });
    });

    describe("retention", () => {
      /** A whole run, one small step at a time: each step reads only what it decides on. */
      const purgeAll = async (beforeMs: number, limit = 2, now = Date.now()) => {
        const total = { events: 0, deliveries: 0, attempts: 0, abandoned: 0, keptPending: 0, keptRecent: 0, steps: 0 };
        let after = PURGE_START;
        for (;;) {
          const step = await store.purgeStep({ beforeMs, after, limit, now });
          expect(step.examined).toBeLessThanOrEqual(limit);
          total.steps++;
          for (const k of ["events", "deliveries", "attempts", "abandoned", "keptPending", "keptRecent"] as const)
            total[k] += step[k];
          after = step.after;
          if (step.done) return total;
        }
      };
      // Counted, not read from the feed: PostgreSQL's feed holds back events while any other
      // transaction on the server is older (its ordering rule), and a test server is shared.
      const deliveriesOf = async (eventId: string) =>
        (await store.listDeliveries({ eventId, pageSize: 10 })).deliveries.length;

      beforeEach(async () => {
        for (const name of ["a", "b"]) await store.upsertEndpoint(endpoint(name), `whsec_${name}${name}${name}${name}`);
        await store.upsertEndpoint(endpoint("off", { enabled: false }), "whsec_b2Zmb2Zm");
      });

      it("purges old events whose deliveries all ended, with their deliveries and attempts", async () => {
        const done = completionEvent();
        const unrouted = errorEvent();
        await store.ingest([done, unrouted], (e) => (e.id === unrouted.id ? [] : ["a", "b"]));
        const claimed = await claimAll();
        await deliver(claimed[0]!);
        await store.completeAttempt(claimed[1]!, attempt({ statusCode: 500 }), { status: "dead_lettered" });
        const cutoff = Date.now();
        await clockPast(cutoff);
        const fresh = completionEvent();
        await store.ingest([fresh], () => []);

        expect(await purgeAll(cutoff + 1)).toMatchObject({ events: 2, deliveries: 2, attempts: 2, keptPending: 0 });
        for (const d of claimed) {
          expect(await store.getDelivery(d.id)).toBeUndefined();
          expect(await store.listAttempts(d.id)).toEqual([]);
        }
        expect(await store.countEvents()).toBe(1); // fresh
        expect(await purgeAll(cutoff + 1)).toMatchObject({ events: 0, deliveries: 0 });
        // The feed's live edge stays where it was: nothing old comes back.
        expect(await store.readFeed(await store.feedHead(), 10)).toEqual([]);
      });

      it("keeps an event whose delivery is pending to a live endpoint, and purges the events after it", async () => {
        const waiting = completionEvent();
        const [before, after] = [completionEvent(), completionEvent()];
        await store.ingest([before], () => []);
        await store.ingest([waiting], () => ["a", "b"]);
        await store.ingest([after], () => []);
        const claimed = await claimAll();
        await deliver(claimed.find((d) => d.endpoint === "a")!); // b stays pending (a retry, say)
        const b = claimed.find((d) => d.endpoint === "b")!;
        await store.completeAttempt(b, attempt({ statusCode: 503 }), {
          status: "retry",
          nextAttemptAt: Date.now() + 60_000,
        });
        const cutoff = Date.now();
        await clockPast(cutoff);

        // The clock moved a week on: still kept, and said so; one step at a time, nothing is read twice.
        const week = cutoff + 7 * 24 * 3_600_000;
        expect(await purgeAll(week, 1, week)).toMatchObject({ events: 2, keptPending: 1, abandoned: 0, steps: 4 });
        expect(await store.countEvents()).toBe(1);
        expect(await deliveriesOf(waiting.id)).toBe(2);
        expect(await store.countPending()).toBe(1);

        // Once its last delivery ends, it goes at the next run.
        const [again] = await claimAll("w1", Date.now() + 120_000);
        await deliver(again!);
        expect(await purgeAll(week, 1, week)).toMatchObject({ events: 1, deliveries: 2, attempts: 3, keptPending: 0 });
        expect(await store.countEvents()).toBe(0);
      });

      it("gives up pending deliveries to a disabled or deleted endpoint with their event, and counts them", async () => {
        const toOff = completionEvent();
        const toGone = completionEvent();
        await store.upsertEndpoint(endpoint("gone"), "whsec_Z29uZWdvbmU=");
        await store.ingest([toOff], () => ["off"]);
        await store.ingest([toGone], () => ["gone"]);
        const cutoff = Date.now();
        await clockPast(cutoff);
        // Deleting an endpoint fails its pending deliveries now: they ended within the window.
        await store.deleteEndpoint("gone");
        expect(await store.countPending()).toBe(1);

        expect(await purgeAll(cutoff + 1)).toMatchObject({ events: 1, abandoned: 1, keptRecent: 1, keptPending: 0 });
        expect(await store.countPending()).toBe(0);
        expect(await store.pendingLanes("", 10)).toEqual([]);
        expect(await store.countEvents()).toBe(1);
        expect(await deliveriesOf(toGone.id)).toBe(1);
        expect(await deliveriesOf(toOff.id)).toBe(0);
        // A window later (the clock moved), the deleted endpoint's delivery is purged too.
        const later = Date.now() + 3_600_000;
        expect(await purgeAll(later)).toMatchObject({ events: 1, keptRecent: 0 });
        expect(await store.countEvents()).toBe(0);
      });

      it("keeps a delivery in flight, even to a disabled endpoint, until its lease ends", async () => {
        const event = completionEvent();
        await store.ingest([event], () => ["a"]);
        await claimAll("w1");
        await store.updateEndpoint("a", { enabled: false });
        const cutoff = Date.now();
        await clockPast(cutoff);
        expect(await purgeAll(cutoff + 1)).toMatchObject({ events: 0, keptPending: 1 });
        // After the lease has run out, nobody holds it: the disabled endpoint's delivery goes.
        expect(await purgeAll(cutoff + 1, 2, Date.now() + LEASE_MS + 1)).toMatchObject({ events: 1, abandoned: 1 });
        expect(await store.countPending()).toBe(0);
      });

      it("keeps an event whose delivery ended within the window (a recent replay), so no young attempt goes", async () => {
        const event = completionEvent();
        await store.ingest([event], () => ["a"]);
        const [first] = await claimAll();
        await store.completeAttempt(first!, attempt({ statusCode: 500 }), { status: "dead_lettered" });
        const cutoff = Date.now();
        await clockPast(cutoff);
        await store.replayDelivery(first!.id);
        const [replayed] = await claimAll();
        await deliver(replayed!);
        expect(await purgeAll(cutoff)).toMatchObject({ events: 0, keptRecent: 1 });
        expect(await purgeAll(Date.now() + 1)).toMatchObject({ events: 1, deliveries: 2, attempts: 2 });
      });

      it("lets a stream's next token go when a pending one is purged with its event", async () => {
        await store.upsertEndpoint(endpoint("s"), "whsec_c3Nzc3Nzc3M=");
        const t0 = streamingEvent("req_purge", 0);
        await store.ingest([t0], () => ["s"]);
        await store.updateEndpoint("s", { enabled: false });
        const cutoff = Date.now();
        await clockPast(cutoff);
        const t1 = streamingEvent("req_purge", 1);
        await store.ingest([t1], () => ["s"]);
        expect(await purgeAll(cutoff + 1)).toMatchObject({ events: 1, abandoned: 1 });
        await store.updateEndpoint("s", { enabled: true });
        const claimed = await claimAll("w1", Date.now(), ["s"]);
        expect(claimed.map((d) => d.eventId)).toEqual([t1.id]);
      });
    });

    describe("orgs and tokens", () => {
      it("keeps an endpoint's org and apps; its org never changes, its apps do; one-off endpoints stay apart", async () => {
        const created = await store.createEndpoint(endpoint("acme-hook", { orgId: "acme", apps: ["chat"] }), "s1");
        expect(created).toMatchObject({ orgId: "acme", apps: ["chat"], oneOff: false });
        const updated = await store.updateEndpoint("acme-hook", { apps: ["chat", "batch"] });
        expect(updated).toMatchObject({ orgId: "acme", apps: ["chat", "batch"] });
        await store.upsertEndpoint(endpoint("ops"), "s2");
        const oneOff = await store.ensureOneOffEndpoint(
          "oneoff-0123456789abcdef",
          "acme",
          "https://x.test/cb",
          () => "s3",
        );
        expect(oneOff.endpoint).toMatchObject({ orgId: "acme", oneOff: true });
        expect((await store.listEndpoints()).map((e) => [e.name, e.orgId, e.oneOff])).toEqual([
          ["acme-hook", "acme", false],
          ["ops", "", false],
        ]);
        // An org endpoint is signed with its own keys, not its org's.
        expect((await store.activeSigningKeys("acme-hook", Date.now())).map((k) => k.secret)).toEqual(["s1"]);
        expect((await store.activeSigningKeys("oneoff-0123456789abcdef", Date.now())).map((k) => k.secret)).toEqual([
          "s3",
        ]);
        // An org endpoint's name cannot be taken as a one-off endpoint.
        await expect(store.ensureOneOffEndpoint("acme-hook", "acme", created.url, () => "s4")).rejects.toThrow(
          StoreConflictError,
        );
      });

      it("lists and replays deliveries and counts events of one org", async () => {
        await store.createEndpoint(endpoint("a", { orgId: "acme" }), "s");
        await store.createEndpoint(endpoint("b", { orgId: "globex" }), "s");
        await store.createEndpoint(endpoint("ops"), "s");
        const acme = completionEvent({ orgId: "acme" });
        const globex = completionEvent({ orgId: "globex" });
        await store.ingest([acme, globex], (e) => (e.orgId === "acme" ? ["a", "ops"] : ["b", "ops"]));
        const since = Date.now() - 60_000;
        expect(await store.countEvents(since, "acme")).toBe(1);
        expect(await store.countEvents(since)).toBe(2);
        const listed = await store.listDeliveries({ orgId: "acme", pageSize: 10 });
        expect(listed.deliveries.map((d) => d.endpoint)).toEqual(["a"]);
        expect((await store.listDeliveries({ orgId: "acme", endpoint: "b", pageSize: 10 })).deliveries).toEqual([]);
        for (const d of await claimAll()) {
          await store.completeAttempt({ ...d, leaseOwner: "w1" }, attempt({ statusCode: 500 }), {
            status: "dead_lettered",
          });
        }
        expect(await store.replayDeadLettered(undefined, "acme")).toBe(1);
        const pendingA = await store.listDeliveries({ endpoint: "a", status: "pending", pageSize: 10 });
        const pendingB = await store.listDeliveries({ endpoint: "b", status: "pending", pageSize: 10 });
        expect([pendingA.deliveries.length, pendingB.deliveries.length]).toEqual([1, 0]);
      });

      it("keeps tokens as digests, lists them, and revokes once", async () => {
        const digest = "a".repeat(64);
        const created = await store.createToken({
          id: "tok_1",
          digest,
          orgId: "acme",
          kind: "sidecar",
          name: "acme sidecars",
          createdAt: 1000,
        });
        expect(created.revokedAt).toBeNull();
        await expect(
          store.createToken({ id: "tok_2", digest, orgId: "globex", kind: "admin", name: "", createdAt: 1001 }),
        ).rejects.toThrow(StoreConflictError);
        await store.createToken({
          id: "tok_3",
          digest: "b".repeat(64),
          orgId: "globex",
          kind: "admin",
          name: "",
          createdAt: 1002,
        });
        expect((await store.listTokens()).map((t) => [t.id, t.orgId, t.kind, t.revokedAt])).toEqual([
          ["tok_1", "acme", "sidecar", null],
          ["tok_3", "globex", "admin", null],
        ]);
        expect((await store.revokeToken("tok_1", 5000))?.revokedAt).toBe(5000);
        expect((await store.revokeToken("tok_1", 6000))?.revokedAt).toBe(5000);
        expect(await store.revokeToken("tok_missing", 6000)).toBeUndefined();
        expect((await store.listTokens())[0]).toMatchObject({ id: "tok_1", digest, revokedAt: 5000 });
      });
    });

    describeBudgetStoreConformance(() => store);
  });
}
