/**
 * Retention (delivery.retention_hours): the store forgets old events a step at a time; the
 * pacing, metrics and log lines are control-plane/retention's. What a step keeps and what
 * it deletes is decided here, once for every backend (retentionVerdict).
 */
export interface RetentionStore {
  /**
   * One step: looks at the next `limit` events ingested before `beforeMs`, oldest first,
   * after the cursor `after`, and deletes each, with its deliveries and their attempts,
   * unless retentionVerdict keeps it. Pending deliveries to a disabled or deleted endpoint
   * are deleted with their event (`abandoned`). A step reads only the events it decides on,
   * so a run reads each old event once, however many it keeps.
   */
  purgeStep(options: PurgeStepOptions): Promise<PurgeStep>;
}

/** Where a retention run has got to: the last event looked at, in (ingestedAt, seq) order. */
export interface PurgeCursor {
  ingestedAt: number;
  seq: number;
}

export interface PurgeStepOptions {
  beforeMs: number;
  /** Start after this event (PURGE_START for a new run). */
  after: PurgeCursor;
  /** Events to look at, at most. */
  limit: number;
  /** Leases ending after this are attempts in flight. */
  now: number;
}

export const PURGE_START: PurgeCursor = { ingestedAt: Number.MIN_SAFE_INTEGER, seq: 0 };

export interface PurgeStep {
  /** Events looked at; the next step starts after `after`. */
  examined: number;
  after: PurgeCursor;
  /** No more events before `beforeMs` after `after`. */
  done: boolean;
  /** Deleted: events, their deliveries, and those deliveries' attempts. */
  events: number;
  deliveries: number;
  attempts: number;
  /** Pending deliveries to disabled or deleted endpoints, deleted with their events. */
  abandoned: number;
  /** Events kept: a delivery is pending to a live endpoint, or in flight. */
  keptPending: number;
  /** Events kept: a delivery of it ended within the window (a recent retry or replay). */
  keptRecent: number;
  /** ingestedAt of the oldest event kept for a pending delivery, in this step. */
  oldestKeptPendingAt: number | undefined;
}

/** What a step needs to know of each delivery of an old event. */
export interface RetainedDelivery {
  status: string;
  finishedAt: number | null;
  leaseOwner: string;
  leaseUntil: number;
  /** The endpoint exists and is enabled. */
  live: boolean;
}

/**
 * The rule, from an old event's deliveries: `pending` keeps it while a delivery is pending
 * to a live endpoint or in flight (retention never takes work from an endpoint that may
 * still take it); `recent` keeps it while a delivery ended within the window (no attempt
 * younger than the window goes); otherwise it goes, pending deliveries to disabled or
 * deleted endpoints with it.
 */
export function retentionVerdict(
  deliveries: readonly RetainedDelivery[],
  beforeMs: number,
  now: number,
): "purge" | "pending" | "recent" {
  let verdict: "purge" | "recent" = "purge";
  for (const d of deliveries) {
    if (d.status === "pending") {
      if (d.live || (d.leaseOwner !== "" && d.leaseUntil > now)) return "pending";
    } else if ((d.finishedAt ?? 0) >= beforeMs) verdict = "recent";
  }
  return verdict;
}

/** A step's result before any event is looked at. */
export function emptyPurgeStep(options: PurgeStepOptions, examined: number): PurgeStep {
  return {
    examined,
    after: options.after,
    done: examined < options.limit,
    events: 0,
    deliveries: 0,
    attempts: 0,
    abandoned: 0,
    keptPending: 0,
    keptRecent: 0,
    oldestKeptPendingAt: undefined,
  };
}
