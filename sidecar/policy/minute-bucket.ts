const MINUTE_MS = 60_000;

/**
 * A token bucket holding one minute's allowance, refilled continuously: a burst of up to
 * `perMinute` units passes at once, then units come back at perMinute/60 s. O(1), no timers.
 */
export class MinuteBucket {
  private level: number;
  private updatedAt: number;
  /** Set once a refusal has been reported, cleared when the bucket admits again. */
  refusing = false;

  constructor(
    private perMinute: number,
    now: number,
  ) {
    this.level = perMinute;
    this.updatedAt = now;
  }

  get limit(): number {
    return this.perMinute;
  }

  /**
   * A new limit from the control plane keeps what was used in the window: raising the
   * limit frees the difference at once, lowering it may leave the bucket in debt.
   */
  setLimit(perMinute: number, now: number): void {
    if (perMinute === this.perMinute) return;
    this.refill(now);
    this.level = Math.min(perMinute, this.level + perMinute - this.perMinute);
    this.perMinute = perMinute;
  }

  /** Whether `units` are available now (without taking them). */
  has(units: number, now: number): boolean {
    this.refill(now);
    return this.level >= units;
  }

  /** Takes units, possibly into debt (tokens are counted after the call that used them). */
  take(units: number, now: number): void {
    this.refill(now);
    // A single huge call blocks at most one more minute.
    this.level = Math.max(this.level - units, -this.perMinute);
  }

  /** Milliseconds until `units` are available, 0 when they are now. */
  msUntil(units: number, now: number): number {
    this.refill(now);
    const missing = units - this.level;
    return missing <= 0 ? 0 : Math.ceil((missing * MINUTE_MS) / this.perMinute);
  }

  private refill(now: number): void {
    const elapsed = now - this.updatedAt;
    if (elapsed <= 0) return;
    this.updatedAt = now;
    this.level = Math.min(this.perMinute, this.level + (elapsed * this.perMinute) / MINUTE_MS);
  }
}
