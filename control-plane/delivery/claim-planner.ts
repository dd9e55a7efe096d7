import type { CircuitState } from "./circuit-breaker.js";

/**
 * What one claim round does with each ready lane: a pure function of the lanes' state, so
 * its promises (test/delivery/claim-planner.test.ts, property-based) hold for any mix of
 * circuits, caps, failover chains and missing endpoints:
 *
 * - it decides once per lane (an endpoint listed twice is decided once, then "later");
 * - requests claimed for sending never exceed the global free slots, nor any endpoint's
 *   own allowance (its cap, or one trial while half-open, less what it has in flight);
 * - rows claimed without a request (an endpoint gone or disabled, or failing over while
 *   its circuit is open) are bounded per lane and per round, and need a live failover target;
 * - a lane it cannot serve now says why: at its cap or waiting for its trial (parked until
 *   an attempt ends), circuit open (until the cooldown ends), paused (not a lane at all
 *   until resumed: dropped), or "later" (no global room this round; it keeps its place).
 */

export interface LaneView {
  endpoint: string;
  /** This endpoint's attempts in flight (requests and settlements being recorded). */
  inFlight: number;
  /** False when the endpoint no longer exists. */
  exists: boolean;
  enabled: boolean;
  /** Deliveries held (the endpoint is paused): nothing claimed, nothing failed over. */
  paused: boolean;
  circuit: CircuitState;
  /** Half-open: its one trial attempt is already out. */
  trialInFlight: boolean;
  /** When an open circuit turns half-open. */
  halfOpenAt: number;
  /** Its failover target exists and is enabled (with the circuit open, due rows go there). */
  canFailOver: boolean;
  /** Attempts this endpoint may have in flight while its circuit is closed. */
  cap: number;
}

export interface PlanLimits {
  /** Global free request slots (delivery.concurrent_deliveries less what is in flight). */
  globalFree: number;
  /** Most rows claimed for sending per lane per round (one worker batch). */
  maxBatch: number;
  /** Most rows claimed without a request per lane per round. */
  settleBatch: number;
  /** Most rows claimed per round, all lanes together (bounds one claim transaction). */
  maxRows: number;
}

export type SettleReason = "missing" | "disabled" | "failover";
export type WaitReason = "at_cap" | "trial_in_flight" | "circuit_open" | "paused";

export type LaneDecision =
  | { endpoint: string; action: "send"; limit: number }
  | { endpoint: string; action: "settle"; limit: number; reason: SettleReason }
  | { endpoint: string; action: "wait"; reason: WaitReason; until?: number }
  | { endpoint: string; action: "later" };

/** How many more requests the endpoint may have in flight now (0 while its circuit is open). */
export function laneAllowance(lane: LaneView): number {
  if (lane.circuit === "open") return 0;
  if (lane.circuit === "half_open") return lane.trialInFlight ? 0 : Math.max(0, 1 - lane.inFlight);
  return Math.max(0, lane.cap - lane.inFlight);
}

/** One decision per lane, in the lanes' (round-robin) order. */
export function planClaims(lanes: readonly LaneView[], limits: PlanLimits): LaneDecision[] {
  let free = Math.max(0, Math.floor(limits.globalFree));
  let rows = Math.max(0, Math.floor(limits.maxRows));
  const maxBatch = Math.max(1, Math.floor(limits.maxBatch));
  const settleBatch = Math.max(1, Math.floor(limits.settleBatch));
  const seen = new Set<string>();
  const decisions: LaneDecision[] = [];
  for (const lane of lanes) {
    const { endpoint } = lane;
    if (seen.has(endpoint)) {
      decisions.push({ endpoint, action: "later" });
      continue;
    }
    seen.add(endpoint);
    const settle = settleReason(lane);
    if (settle !== undefined) {
      const limit = Math.min(settleBatch, rows);
      if (limit <= 0) decisions.push({ endpoint, action: "later" });
      else {
        rows -= limit;
        decisions.push({ endpoint, action: "settle", limit, reason: settle });
      }
      continue;
    }
    if (lane.paused) {
      decisions.push({ endpoint, action: "wait", reason: "paused" });
      continue;
    }
    if (lane.circuit === "open") {
      decisions.push({ endpoint, action: "wait", reason: "circuit_open", until: lane.halfOpenAt });
      continue;
    }
    const allowance = laneAllowance(lane);
    if (allowance <= 0) {
      decisions.push({ endpoint, action: "wait", reason: lane.circuit === "half_open" ? "trial_in_flight" : "at_cap" });
      continue;
    }
    const limit = Math.min(allowance, free, maxBatch, rows);
    if (limit <= 0) {
      decisions.push({ endpoint, action: "later" });
      continue;
    }
    free -= limit;
    rows -= limit;
    decisions.push({ endpoint, action: "send", limit });
  }
  return decisions;
}

/** What the scheduler knows of an endpoint when planning (its store record, cached). */
export interface EndpointState {
  enabled: boolean;
  paused?: boolean;
  failoverTo: string;
}

export interface CircuitView {
  state: CircuitState;
  trialInFlight: boolean;
  halfOpenAt: number;
}

/**
 * The planner's view of each ready lane, from the endpoints as the store holds them
 * (absent: deleted) and the circuits: a lane fails over only to a target that exists and
 * is enabled. Failover chains and cycles need no walking here: each claim moves rows one
 * hop, and the store refuses a hop back along a delivery's own chain.
 */
export function laneViews(
  lanes: readonly { endpoint: string; inFlight: number }[],
  endpoints: (name: string) => EndpointState | undefined,
  circuit: (name: string) => CircuitView,
  cap: number,
): LaneView[] {
  return lanes.map((lane) => {
    const record = endpoints(lane.endpoint);
    const target = record?.failoverTo ? endpoints(record.failoverTo) : undefined;
    const c = circuit(lane.endpoint);
    return {
      endpoint: lane.endpoint,
      inFlight: lane.inFlight,
      exists: record !== undefined,
      enabled: record?.enabled ?? false,
      paused: record?.paused === true,
      circuit: c.state,
      trialInFlight: c.trialInFlight,
      halfOpenAt: c.halfOpenAt,
      canFailOver: target?.enabled === true,
      cap: Math.max(1, cap),
    };
  });
}

/** Rows of this lane are recorded without a request, and why; undefined when they are sent. */
function settleReason(lane: LaneView): SettleReason | undefined {
  if (!lane.exists) return "missing";
  if (!lane.enabled) return "disabled";
  if (lane.paused) return undefined;
  if (lane.circuit === "open" && lane.canFailOver) return "failover";
  return undefined;
}
