import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { CircuitState } from "../../control-plane/delivery/circuit-breaker.js";
import {
  type CircuitView,
  type EndpointState,
  laneAllowance,
  laneViews,
  planClaims,
} from "../../control-plane/delivery/claim-planner.js";
import { LaneTable } from "../../control-plane/delivery/lanes.js";

// Planning once ran in a loop that never ended once two endpoints had circuit state.
// These properties hold for any mix of endpoint states the scheduler can meet.

const NAMES = ["primary", "backup", "a", "b", "c", "d", "gone", "off"] as const;

/** A random world: endpoints (some missing), failover chains (cycles, to missing or disabled ones), circuits, lanes. */
const world = fc.record({
  endpoints: fc.dictionary(
    fc.constantFrom(...NAMES),
    fc.record({
      enabled: fc.boolean(),
      paused: fc.boolean(),
      failoverTo: fc.constantFrom("", ...NAMES, "nowhere"),
    }),
  ),
  circuits: fc.dictionary(
    fc.constantFrom(...NAMES),
    fc.record({
      state: fc.constantFrom<CircuitState>("closed", "open", "half_open"),
      trialInFlight: fc.boolean(),
      halfOpenAt: fc.integer({ min: 0, max: 100_000 }),
    }),
  ),
  // Ready lanes in round-robin order; duplicates model a confused caller.
  lanes: fc.array(fc.record({ endpoint: fc.constantFrom(...NAMES), inFlight: fc.integer({ min: 0, max: 40 }) }), {
    maxLength: 20,
  }),
  cap: fc.integer({ min: 1, max: 64 }),
  globalFree: fc.integer({ min: -5, max: 100 }),
  maxBatch: fc.integer({ min: 1, max: 64 }),
  settleBatch: fc.integer({ min: 1, max: 256 }),
  maxRows: fc.integer({ min: 0, max: 600 }),
});

type World = typeof world extends fc.Arbitrary<infer T> ? T : never;

function plan(w: World) {
  const endpoints = (name: string): EndpointState | undefined => w.endpoints[name];
  const circuit = (name: string): CircuitView =>
    w.circuits[name] ?? { state: "closed", trialInFlight: false, halfOpenAt: 0 };
  const views = laneViews(w.lanes, endpoints, circuit, w.cap);
  return { views, decisions: planClaims(views, w) };
}

describe("claim planning (property-based)", () => {
  it("decides once per lane, never claims beyond free capacity, and never repeats an endpoint", () => {
    fc.assert(
      fc.property(world, (w) => {
        const { views, decisions } = plan(w);
        expect(decisions).toHaveLength(w.lanes.length);
        const claimed = decisions.filter((d) => d.action === "send" || d.action === "settle");
        // No endpoint is claimed twice in one round.
        expect(new Set(claimed.map((d) => d.endpoint)).size).toBe(claimed.length);
        // Requests: within the global free slots, and each within its endpoint's allowance.
        let sent = 0;
        let rows = 0;
        decisions.forEach((d, i) => {
          const view = views[i]!;
          expect(d.endpoint).toBe(view.endpoint);
          // A paused endpoint is not a lane: nothing claimed for it, whatever its circuit.
          if (view.paused && view.exists && view.enabled && d.action !== "later") {
            expect(d).toMatchObject({ action: "wait", reason: "paused" });
          }
          if (d.action === "send") {
            expect(d.limit).toBeGreaterThan(0);
            expect(d.limit).toBeLessThanOrEqual(laneAllowance(view));
            expect(d.limit).toBeLessThanOrEqual(w.maxBatch);
            expect(view.exists && view.enabled && !view.paused && view.circuit !== "open").toBe(true);
            sent += d.limit;
            rows += d.limit;
          } else if (d.action === "settle") {
            expect(d.limit).toBeGreaterThan(0);
            expect(d.limit).toBeLessThanOrEqual(w.settleBatch);
            rows += d.limit;
            // Rows leave without a request only for a gone or disabled endpoint, or to a live failover target.
            if (d.reason === "failover") {
              // A paused endpoint holds its deliveries: none leaves it by failover either.
              expect(view.paused).toBe(false);
              const target = w.endpoints[w.endpoints[view.endpoint]!.failoverTo];
              expect(target?.enabled).toBe(true);
              expect(view.circuit).toBe("open");
            } else expect(d.reason).toBe(view.exists ? "disabled" : "missing");
          } else if (d.action === "wait" && d.reason === "paused") {
            // Paused and otherwise deliverable: held (a disabled or missing one settles as such).
            expect(view.paused && view.exists && view.enabled).toBe(true);
          } else if (d.action === "wait" && d.reason === "circuit_open") {
            expect(view.circuit).toBe("open");
            expect(view.canFailOver).toBe(false);
          }
        });
        expect(sent).toBeLessThanOrEqual(Math.max(0, w.globalFree));
        expect(rows).toBeLessThanOrEqual(w.maxRows);
      }),
      { numRuns: 2_000 },
    );
  });

  it("leaves a lane for later only when the round has no room left for it (or it was listed twice)", () => {
    fc.assert(
      fc.property(world, (w) => {
        const { views, decisions } = plan(w);
        let sent = 0;
        let rows = 0;
        const seen = new Set<string>();
        decisions.forEach((d, i) => {
          const view = views[i]!;
          const duplicate = seen.has(view.endpoint);
          seen.add(view.endpoint);
          if (d.action === "later" && !duplicate) {
            const roomForRows = rows < w.maxRows;
            const roomForRequests = sent < Math.max(0, w.globalFree);
            const settles = !view.exists || !view.enabled || (view.circuit === "open" && view.canFailOver);
            expect(settles ? roomForRows : roomForRequests && roomForRows).toBe(false);
          }
          if (d.action === "wait" && (d.reason === "at_cap" || d.reason === "trial_in_flight")) {
            expect(laneAllowance(view)).toBe(0);
          }
          if (d.action === "send") sent += d.limit;
          if (d.action === "send" || d.action === "settle") rows += d.limit;
        });
      }),
      { numRuns: 2_000 },
    );
  });
});

describe("LaneTable (property-based)", () => {
  type Op =
    | { op: "wake"; endpoint: string; at: number }
    | { op: "claim"; got: number; limit: number; next: number | null }
    | { op: "park" }
    | { op: "finish"; endpoint: string }
    | { op: "tick"; by: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({
      op: fc.constant("wake" as const),
      endpoint: fc.constantFrom(...NAMES),
      at: fc.integer({ min: 0, max: 200 }),
    }),
    fc.record({
      op: fc.constant("claim" as const),
      got: fc.integer({ min: 0, max: 4 }),
      limit: fc.integer({ min: 1, max: 4 }),
      next: fc.option(fc.integer({ min: 0, max: 200 })),
    }),
    fc.record({ op: fc.constant("park" as const) }),
    fc.record({ op: fc.constant("finish" as const), endpoint: fc.constantFrom(...NAMES) }),
    fc.record({ op: fc.constant("tick" as const), by: fc.integer({ min: 0, max: 50 }) }),
  );

  it("keeps every lane in exactly one place, hands out each ready lane once per round, and wakes timed lanes on time", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const table = new LaneTable();
        let now = 0;
        for (const o of ops) {
          if (o.op === "wake") table.wake(o.endpoint, o.at, now);
          else if (o.op === "tick") now += o.by;
          else {
            const [lane] = table.due(now, 1);
            if (o.op === "claim" && lane) {
              const got = Math.min(o.got, o.limit);
              table.claimed(lane, got, o.limit, o.next ?? undefined, now);
            } else if (o.op === "park" && lane) table.park(lane);
            else if (o.op === "finish") {
              const l = table.get(o.endpoint);
              if (l && l.inFlight > 0) {
                table.finished(l);
                if (l.place === "parked") table.unpark(l);
              }
            }
          }
          const due = table.due(now, 100);
          // Each ready lane once, every one of them due.
          expect(new Set(due).size).toBe(due.length);
          for (const lane of due) expect(lane.place).toBe("ready");
          const counts = table.counts();
          expect(counts.ready).toBe(due.length);
          expect(counts.ready + counts.timed + counts.parked).toBeLessThanOrEqual(counts.lanes);
          // No timed lane is overdue: due() moved every one whose time came.
          const next = table.nextTimerAt();
          if (next !== undefined) expect(next).toBeGreaterThan(now);
          for (const name of NAMES) {
            const lane = table.get(name);
            if (lane) expect(lane.inFlight).toBeGreaterThanOrEqual(0);
          }
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it("serves ready lanes round-robin: a lane claimed in full goes behind the others", () => {
    const table = new LaneTable();
    for (const name of ["a", "b", "c"]) table.wake(name, 0, 0);
    const order: string[] = [];
    for (let round = 0; round < 6; round++) {
      const [first] = table.due(0, 1);
      order.push(first!.endpoint);
      table.claimed(first!, 4, 4, undefined, 0);
    }
    expect(order).toEqual(["a", "b", "c", "a", "b", "c"]);
    // A lane whose claim came up short waits for its next due time, then comes back.
    const [a] = table.due(0, 1);
    table.claimed(a!, 1, 4, 50, 0);
    expect(table.due(10, 10).map((l) => l.endpoint)).toEqual(["b", "c"]);
    expect(table.nextTimerAt()).toBe(50);
    expect(table.due(50, 10).map((l) => l.endpoint)).toEqual(["b", "c", "a"]);
  });
});
