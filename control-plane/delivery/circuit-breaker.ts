/**
 * Per-endpoint circuit breaker: after `threshold` consecutive failed attempts the circuit
 * opens and the endpoint gets no attempts; after `cooldownMs` it is half-open and one trial
 * attempt goes through; a success closes it, a failure opens it for another cooldown.
 *
 * State lives in a plain Map, not a cache: an evicted open circuit would silently close,
 * and a cache whose reads reorder entries cannot be iterated while being read (that loop
 * froze the control plane). Entries exist only while an endpoint has failures a
 * success has not cleared, so the map is bounded by the endpoints that are failing; `forget`
 * drops a deleted endpoint and `prune` drops closed entries whose failures are old.
 */

export type CircuitState = "closed" | "open" | "half_open";

export interface CircuitSettings {
  threshold: number;
  cooldownMs: number;
}

interface Circuit {
  consecutiveFailures: number;
  lastFailureAt: number;
  openedAt: number;
  open: boolean;
  trialInFlight: boolean;
}

export interface CircuitSnapshot {
  endpoint: string;
  state: CircuitState;
  consecutiveFailures: number;
  /** When an open circuit turns half-open. */
  halfOpenAt: number;
}

export class CircuitBreaker {
  private readonly circuits = new Map<string, Circuit>();

  constructor(private settings: CircuitSettings) {}

  updateSettings(settings: CircuitSettings): void {
    this.settings = settings;
  }

  state(endpoint: string, now: number): CircuitState {
    return this.stateOf(this.circuits.get(endpoint), now);
  }

  /** How many attempts may be in flight for the endpoint: 0 while open, 1 while half-open (trial not started). */
  allowance(endpoint: string, now: number, closedAllowance: number): number {
    const c = this.circuits.get(endpoint);
    const state = this.stateOf(c, now);
    if (state === "closed") return closedAllowance;
    if (state === "open") return 0;
    return c?.trialInFlight ? 0 : 1;
  }

  /** Call when an attempt starts; in half-open state that attempt is the trial. */
  attemptStarted(endpoint: string, now: number): void {
    const c = this.circuits.get(endpoint);
    if (c && this.stateOf(c, now) === "half_open") c.trialInFlight = true;
  }

  /** Returns true when this success closed an open (or half-open) circuit. */
  recordSuccess(endpoint: string): boolean {
    const c = this.circuits.get(endpoint);
    this.circuits.delete(endpoint);
    return c?.open === true;
  }

  /** Returns true when this failure opened the circuit (a failed trial re-opens it: true too). */
  recordFailure(endpoint: string, now: number): boolean {
    let c = this.circuits.get(endpoint);
    if (!c) {
      c = { consecutiveFailures: 0, lastFailureAt: now, openedAt: 0, open: false, trialInFlight: false };
      this.circuits.set(endpoint, c);
    }
    c.consecutiveFailures++;
    c.lastFailureAt = now;
    const wasTrial = c.trialInFlight;
    c.trialInFlight = false;
    if (wasTrial || (!c.open && c.consecutiveFailures >= Math.max(1, this.settings.threshold))) {
      c.open = true;
      c.openedAt = now;
      return true;
    }
    return false;
  }

  /**
   * Another process on the store opened or closed this circuit (shared state, see
   * store/cluster.ts): an open circuit here opens with the same cooldown; a closed one
   * closes. A later local event wins over an older shared one.
   */
  applyShared(endpoint: string, open: boolean, openedAt: number): void {
    const c = this.circuits.get(endpoint);
    if (open) {
      if (c?.open && c.openedAt >= openedAt) return;
      const next = c ?? { consecutiveFailures: 0, lastFailureAt: openedAt, openedAt, open: true, trialInFlight: false };
      next.open = true;
      next.openedAt = openedAt;
      next.consecutiveFailures = Math.max(next.consecutiveFailures, this.settings.threshold);
      next.lastFailureAt = Math.max(next.lastFailureAt, openedAt);
      this.circuits.set(endpoint, next);
    } else if (c?.open && c.openedAt <= openedAt) {
      this.circuits.delete(endpoint);
    } else if (c && !c.open) {
      this.circuits.delete(endpoint);
    }
  }

  /** When the endpoint's circuit opened (0 when closed). */
  openedAt(endpoint: string): number {
    const c = this.circuits.get(endpoint);
    return c?.open ? c.openedAt : 0;
  }

  /** An attempt that was started as the trial ended without a verdict (not recorded): allow another trial. */
  trialAbandoned(endpoint: string): void {
    const c = this.circuits.get(endpoint);
    if (c) c.trialInFlight = false;
  }

  /** The endpoint is gone: its circuit with it. */
  forget(endpoint: string): void {
    this.circuits.delete(endpoint);
  }

  /** Drops closed circuits whose last failure is older than `idleMs`: a count that old says nothing. */
  prune(now: number, idleMs: number): void {
    for (const [name, c] of this.circuits) if (!c.open && now - c.lastFailureAt > idleMs) this.circuits.delete(name);
  }

  /** The earliest time an open circuit turns half-open (undefined when none is open). */
  nextTransitionAt(now: number): number | undefined {
    let earliest: number | undefined;
    for (const c of this.circuits.values()) {
      if (!c.open) continue;
      const at = c.openedAt + this.settings.cooldownMs;
      if (at > now && (earliest === undefined || at < earliest)) earliest = at;
    }
    return earliest;
  }

  /** Endpoints whose circuit is open or half-open. One pass; reads never reorder the map. */
  openEndpoints(now: number): string[] {
    const open: string[] = [];
    for (const [name, c] of this.circuits) if (this.stateOf(c, now) !== "closed") open.push(name);
    return open;
  }

  /** The endpoint's trial and cooldown, for planning claims. */
  describe(endpoint: string, now: number): { state: CircuitState; trialInFlight: boolean; halfOpenAt: number } {
    const c = this.circuits.get(endpoint);
    return {
      state: this.stateOf(c, now),
      trialInFlight: c?.trialInFlight ?? false,
      halfOpenAt: c?.open ? c.openedAt + this.settings.cooldownMs : now,
    };
  }

  snapshot(now: number): CircuitSnapshot[] {
    const out: CircuitSnapshot[] = [];
    for (const [endpoint, c] of this.circuits) {
      out.push({
        endpoint,
        state: this.stateOf(c, now),
        consecutiveFailures: c.consecutiveFailures,
        halfOpenAt: c.open ? c.openedAt + this.settings.cooldownMs : 0,
      });
    }
    return out;
  }

  get size(): number {
    return this.circuits.size;
  }

  private stateOf(c: Circuit | undefined, now: number): CircuitState {
    if (!c?.open) return "closed";
    return now - c.openedAt >= this.settings.cooldownMs ? "half_open" : "open";
  }
}
