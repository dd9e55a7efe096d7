/**
 * Delivery lanes: one per endpoint with pending work, the scheduler's view of which
 * endpoints to claim from and when. A lane is in exactly one place:
 *
 * - `ready`: believed to have deliveries due now; lanes are served round-robin (a lane
 *   served goes to the back of the ring, one left waiting for global capacity keeps its
 *   place), so one endpoint's backlog never starves another's.
 * - `timed`: its next delivery falls due later (a retry, a lease's end, a circuit's
 *   cooldown); a min-heap wakes it then.
 * - `parked`: has due work but no allowance (at its concurrency cap, or its half-open
 *   trial in flight); a finished attempt brings it back. A parked lane is never scanned.
 * - `idle`: nothing pending that the scheduler knows of; forgotten once nothing is in flight.
 *
 * Nothing here touches the store: the scheduler moves lanes as claims return and attempts
 * end, and as ingest, replays and failovers wake endpoints. Costs are per lane moved,
 * never per pending delivery.
 */

export type LanePlace = "idle" | "ready" | "timed" | "parked";

export interface Lane {
  readonly endpoint: string;
  /** Attempts of this endpoint in flight here (requests, and settlements being recorded). */
  inFlight: number;
  /** Earliest time a delivery of this lane may be claimable; undefined when none is known. */
  dueAt: number | undefined;
  place: LanePlace;
  /** Bumped whenever the lane leaves the heap or its time changes: older heap entries are stale. */
  timerVersion: number;
  /**
   * The earliest wake while the lane was ready or parked: a claim in flight may have read
   * the store before that work was written, so claimed() does not trust its own "nothing
   * more is due" over it.
   */
  wokenAt: number | undefined;
}

interface TimerEntry {
  at: number;
  lane: Lane;
  version: number;
}

export interface LaneCounts {
  lanes: number;
  ready: number;
  timed: number;
  parked: number;
}

export class LaneTable {
  private readonly lanes = new Map<string, Lane>();
  /** Ready lanes in round-robin order: a Set keeps insertion order, delete + add moves to the back. */
  private readonly ring = new Set<Lane>();
  private readonly heap: TimerEntry[] = [];
  private parkedCount = 0;
  private timedCount = 0;

  get(endpoint: string): Lane | undefined {
    return this.lanes.get(endpoint);
  }

  counts(): LaneCounts {
    return { lanes: this.lanes.size, ready: this.ring.size, timed: this.timedCount, parked: this.parkedCount };
  }

  /** Work for `endpoint` may be claimable from `at` on (new deliveries, a retry, a failover copy). */
  wake(endpoint: string, at: number, now: number): void {
    const lane = this.lane(endpoint);
    if (lane.place === "ready" || lane.place === "parked") lane.wokenAt = Math.min(lane.wokenAt ?? at, at);
    if (lane.dueAt !== undefined && lane.dueAt <= at && lane.place !== "idle") return;
    lane.dueAt = lane.dueAt === undefined ? at : Math.min(lane.dueAt, at);
    if (lane.place === "parked" || lane.place === "ready") return;
    if (lane.dueAt <= now) this.toReady(lane, false);
    else this.toTimed(lane, lane.dueAt);
  }

  /**
   * Up to `max` lanes due at `now`, in round-robin order, after moving in those whose time
   * has come. They stay in the ring until claimed(), park(), defer() or forget() moves them.
   */
  due(now: number, max: number): Lane[] {
    while (this.heap.length > 0 && (this.heap[0] as TimerEntry).at <= now) {
      const entry = this.pop();
      if (entry.version !== entry.lane.timerVersion || entry.lane.place !== "timed") continue;
      this.toReady(entry.lane, false);
    }
    const out: Lane[] = [];
    for (const lane of this.ring) {
      if (out.length >= max) break;
      out.push(lane);
    }
    return out;
  }

  /**
   * After a claim of `lane` that asked for `limit` and got `got`: a full claim may have
   * left more due, so the lane goes to the back of the ring; a short one knows when the
   * lane is next due (`nextDueAt`), or that nothing is pending.
   */
  claimed(lane: Lane, got: number, limit: number, nextDueAt: number | undefined, now: number): void {
    lane.inFlight += got;
    const woken = lane.wokenAt;
    lane.wokenAt = undefined;
    if (got >= limit) {
      lane.dueAt = now;
      this.toReady(lane, true);
      return;
    }
    if (woken !== undefined) nextDueAt = nextDueAt === undefined ? woken : Math.min(nextDueAt, woken);
    lane.dueAt = nextDueAt;
    if (nextDueAt === undefined) this.toIdle(lane);
    else if (nextDueAt <= now) this.toReady(lane, true);
    else this.toTimed(lane, nextDueAt);
  }

  /** Due work but no allowance now: out of the ring until unpark(). */
  park(lane: Lane): void {
    this.leave(lane);
    lane.place = "parked";
    this.parkedCount++;
  }

  /** A parked lane may claim again (an attempt of it ended): back into the ring. */
  unpark(lane: Lane): boolean {
    if (lane.place !== "parked") return false;
    this.toReady(lane, true);
    return true;
  }

  /** Due work that must wait until `until` (an open circuit's cooldown). */
  defer(lane: Lane, until: number): void {
    this.toTimed(lane, until);
  }

  /** An attempt of the lane ended; an idle lane with nothing in flight is forgotten. */
  finished(lane: Lane): void {
    lane.inFlight = Math.max(0, lane.inFlight - 1);
    if (lane.place === "idle" && lane.inFlight === 0) this.lanes.delete(lane.endpoint);
  }

  /** The earliest time a timed lane falls due (stale entries dropped on the way). */
  nextTimerAt(): number | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0] as TimerEntry;
      if (top.version === top.lane.timerVersion && top.lane.place === "timed") return top.at;
      this.pop();
    }
    return undefined;
  }

  /** The endpoint is gone (deleted): its lane with it, whatever it held. */
  forget(endpoint: string): void {
    const lane = this.lanes.get(endpoint);
    if (!lane) return;
    this.leave(lane);
    lane.place = "idle";
    if (lane.inFlight === 0) this.lanes.delete(endpoint);
  }

  private lane(endpoint: string): Lane {
    let lane = this.lanes.get(endpoint);
    if (!lane) {
      lane = { endpoint, inFlight: 0, dueAt: undefined, place: "idle", timerVersion: 0, wokenAt: undefined };
      this.lanes.set(endpoint, lane);
    }
    return lane;
  }

  private leave(lane: Lane): void {
    if (lane.place === "ready") this.ring.delete(lane);
    else if (lane.place === "parked") this.parkedCount--;
    else if (lane.place === "timed") {
      this.timedCount--;
      lane.timerVersion++;
    }
  }

  private toReady(lane: Lane, toBack: boolean): void {
    if (lane.place === "ready" && !toBack) return;
    this.leave(lane);
    lane.place = "ready";
    this.ring.add(lane);
  }

  private toIdle(lane: Lane): void {
    this.leave(lane);
    lane.place = "idle";
  }

  private toTimed(lane: Lane, at: number): void {
    this.leave(lane);
    lane.place = "timed";
    this.timedCount++;
    lane.timerVersion++;
    this.push({ at, lane, version: lane.timerVersion });
    // Stale entries are dropped lazily; rebuild if they ever dominate the heap.
    if (this.heap.length > 64 && this.heap.length > 4 * this.timedCount) this.compact();
  }

  private compact(): void {
    const live = this.heap.filter((e) => e.version === e.lane.timerVersion && e.lane.place === "timed");
    this.heap.length = 0;
    for (const entry of live) this.push(entry);
  }

  private push(entry: TimerEntry): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as TimerEntry).at <= entry.at) break;
      heap[i] = heap[parent] as TimerEntry;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop(): TimerEntry {
    const heap = this.heap;
    const top = heap[0] as TimerEntry;
    const last = heap.pop() as TimerEntry;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child =
          right < heap.length && (heap[right] as TimerEntry).at < (heap[left] as TimerEntry).at ? right : left;
        if ((heap[child] as TimerEntry).at >= last.at) break;
        heap[i] = heap[child] as TimerEntry;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}
