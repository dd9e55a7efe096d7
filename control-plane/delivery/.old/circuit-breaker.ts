import { LRUCache } from "lru-cache";

/**
 * Per-endpoint circuit breaker: after `threshold` consecutive failed attempts the circuit
 * opens and the endpoint gets no attempts; after `cooldownMs` it is half-open and one trial
 * attempt goes through; a success closes it, a failure opens it for another cooldown.
 */

export type CircuitState = "closed" | "open" | "half_open";

export interface CircuitSettings {
  threshold: number;
  cooldownMs: number;
}

interface Circuit {
  consecutiveFailures: number;
  openedAt: number;
  open: boolean;
  trialInFlight: boolean;
}

export class CircuitBreaker {
  // Bounded like every in-memory map: an endpoint forgotten here is simply closed.
  private readonly circuits = new LRUCache<string, Circuit>({ max: 10_000 });

  constructor(private settings: CircuitSettings) {}

  updateSettings(settings: CircuitSettings): void {
    this.settings = settings;
  }

  state(endpoint: string, now: number): CircuitState {
    const c = this.circuits.get(endpoint);
    if (!c?.open) return "closed";
    return now - c.openedAt >= this.settings.cooldownMs ? "half_open" : "open";
  }

  /** Whether an attempt may start now; in half-open state only one trial at a time. */
  canAttempt(endpoint: string, now: number): boolean {
    const state = this.state(endpoint, now);
    if (state === "closed") return true;
    if (state === "open") return false;
    return !this.circuits.get(endpoint)?.trialInFlight;
  }

  /** How many attempts may be in flight for the endpoint: 0 while open, 1 while half-open. */
  allowance(endpoint: string, now: number, closedAllowance: number): number {
    const state = this.state(endpoint, now);
    if (state === "closed") return closedAllowance;
    if (state === "open") return 0;
    return 1;
  }

  /** Call when an attempt starts; in half-open state that attempt is the trial. */
  attemptStarted(endpoint: string, now: number): void {
    const c = this.circuits.get(endpoint);
    if (c && this.state(endpoint, now) === "half_open") c.trialInFlight = true;
  }

  recordSuccess(endpoint: string): void {
    this.circuits.delete(endpoint);
  }

  /** Returns true when this failure opened (or re-opened) the circuit. */
  recordFailure(endpoint: string, now: number): boolean {
    let c = this.circuits.get(endpoint);
    if (!c) {
      c = { consecutiveFailures: 0, openedAt: 0, open: false, trialInFlight: false };
      this.circuits.set(endpoint, c);
    }
    c.consecutiveFailures++;
    const wasTrial = c.trialInFlight;
    c.trialInFlight = false;
    if (wasTrial || (!c.open && c.consecutiveFailures >= Math.max(1, this.settings.threshold))) {
      c.open = true;
      c.openedAt = now;
      return true;
    }
    return false;
  }

  /** The earliest time an open circuit turns half-open (undefined when none is open). */
  nextTransitionAt(now: number): number | undefined {
    let earliest: number | undefined;
    for (const [, c] of this.circuits.entries()) {
      if (!c.open) continue;
      const at = c.openedAt + this.settings.cooldownMs;
      if (at > now && (earliest === undefined || at < earliest)) earliest = at;
    }
    return earliest;
  }

  openEndpoints(now: number): string[] {
    const open: string[] = [];
    for (const [name] of this.circuits.entries()) if (this.state(name, now) !== "closed") open.push(name);
    return open;
  }
}
