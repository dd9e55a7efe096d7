import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { eventColumns } from "./events.js";

/**
 * Analytics rollups: what the series of the Admin API (GetSeries) and the dashboard's charts
 * read, kept in one table beside the events, written in the transactions that store events
 * and record attempts, so they survive restarts and agree across replicas. A row counts
 * what happened in one bucket of one resolution for one combination of dimensions; latency
 * rows keep a histogram (one row per latency bin), from which percentiles are read.
 *
 * A transaction collects its changes in a RollupBatch and writes each distinct row once at
 * its end (one upsert per key: a group of a hundred attempts to one endpoint is a handful
 * of rows), so the delivery path pays for rollups per group, not per attempt.
 */

/** Bucket sizes kept (ms): 10 s rows answer 15 min and 1 h windows, 5 min rows 24 h, 1 h rows 7 d. */
export const ROLLUP_RESOLUTIONS = [10_000, 300_000, 3_600_000] as const;
/** How long rows of each resolution are kept at most (retention may cut the last one shorter). */
export const ROLLUP_KEEP_MS: Record<number, number> = {
  10000: 2 * 3_600_000,
  300000: 26 * 3_600_000,
  3600000: 8 * 24 * 3_600_000,
};

/** Upper bounds (ms) of the latency bins; a value above the last falls in the bin after it. */
export const LATENCY_BINS: readonly number[] = [
  1,
  2,
  5,
  10,
  20,
  50,
  100,
  200,
  300,
  500,
  750,
  1000,
  1500,
  2000,
  3000,
  5000,
  7500,
  10_000,
  15_000,
  20_000,
  30_000,
  60_000,
  120_000,
  300_000,
  600_000,
  1_800_000,
  3_600_000,
  4 * 3_600_000,
  24 * 3_600_000,
];

/** The row kinds: events stored, attempts (with their latency bin), event→delivered latency. */
export type RollupKind = "event" | "attempt" | "delivered";

/** What an attempt ended in, as series name it. */
export type AttemptOutcomeName = "delivered" | "retrying" | "failed" | "dead_lettered";

export interface RollupRow {
  kind: RollupKind;
  res: number;
  bucket: number;
  endpoint: string;
  eventType: number;
  orgId: string;
  model: string;
  outcome: string;
  bin: number;
  n: number;
  /** Tokens (events) or the latency sum in ms (attempts, delivered). */
  v1: number;
  /** Cost in USD (events). */
  v2: number;
}

export function latencyBin(ms: number): number {
  const v = Math.max(0, ms);
  let lo = 0;
  let hi = LATENCY_BINS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (v <= LATENCY_BINS[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The value a bin stands for in percentiles: its upper bound (the last, open bin: twice the last bound). */
export function binValue(bin: number): number {
  return LATENCY_BINS[bin] ?? LATENCY_BINS[LATENCY_BINS.length - 1]! * 2;
}

/** Changes to the rollups made by one transaction, merged by key. */
export class RollupBatch {
  readonly #rows = new Map<string, RollupRow>();

  get size(): number {
    return this.#rows.size;
  }

  rows(): RollupRow[] {
    return [...this.#rows.values()];
  }

  /** A new event stored at `now`, with the cost it was priced at. */
  event(event: Event, now: number): void {
    const columns = eventColumns(event);
    const completion = event.payload.case === "completion" ? event.payload.value : undefined;
    this.#add(
      "event",
      now,
      {
        endpoint: "",
        eventType: columns.type,
        orgId: event.orgId,
        model: completion?.model ?? "",
        outcome: "",
        bin: 0,
      },
      completion?.tokensUsed ?? 0,
      completion && Number.isFinite(completion.costUsd) ? completion.costUsd : 0,
    );
  }

  /** An attempt recorded at `now`; with a delivery that succeeded, its event→delivered latency too. */
  attempt(a: {
    now: number;
    endpoint: string;
    eventType: number;
    orgId: string;
    outcome: AttemptOutcomeName;
    latencyMs: number;
    /** Event time (ms) of a delivered delivery's event; undefined otherwise. */
    eventTimeMs?: number | undefined;
  }): void {
    this.#add(
      "attempt",
      a.now,
      {
        endpoint: a.endpoint,
        eventType: a.eventType,
        orgId: a.orgId,
        model: "",
        outcome: a.outcome,
        bin: latencyBin(a.latencyMs),
      },
      Math.max(0, a.latencyMs),
      0,
    );
    if (a.outcome === "delivered" && a.eventTimeMs !== undefined) {
      const e2e = eventLatencyMs(a.eventTimeMs, a.now);
      this.#add(
        "delivered",
        a.now,
        { endpoint: a.endpoint, eventType: a.eventType, orgId: a.orgId, model: "", outcome: "", bin: latencyBin(e2e) },
        e2e,
        0,
      );
    }
  }

  #add(
    kind: RollupKind,
    now: number,
    dims: Pick<RollupRow, "endpoint" | "eventType" | "orgId" | "model" | "outcome" | "bin">,
    v1: number,
    v2: number,
  ): void {
    for (const res of ROLLUP_RESOLUTIONS) {
      const bucket = now - (now % res);
      const key = `${kind}\u0000${res}\u0000${bucket}\u0000${dims.endpoint}\u0000${dims.eventType}\u0000${dims.orgId}\u0000${dims.model}\u0000${dims.outcome}\u0000${dims.bin}`;
      const row = this.#rows.get(key);
      if (row) {
        row.n++;
        row.v1 += v1;
        row.v2 += v2;
      } else {
        this.#rows.set(key, { kind, res, bucket, ...dims, n: 1, v1, v2 });
      }
    }
  }
}

/** From the event's time at the sidecar to now; never negative (clocks differ). */
export function eventLatencyMs(eventTimeMs: number, now: number): number {
  return Math.max(0, Math.round(now - eventTimeMs));
}

export function outcomeName(status: string): AttemptOutcomeName {
  return status === "pending" ? "retrying" : (status as AttemptOutcomeName);
}

/** The rows older than what each resolution keeps (and than retention) go. */
export function rollupCutoffs(now: number, retentionMs: number): { res: number; before: number }[] {
  return ROLLUP_RESOLUTIONS.map((res) => ({ res, before: now - Math.min(ROLLUP_KEEP_MS[res]!, retentionMs) - res }));
}
