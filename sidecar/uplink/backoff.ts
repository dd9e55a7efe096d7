/**
 * Exponential backoff with jitter between reconnect attempts: each delay is drawn from
 * [d/2, d] where d doubles from `initialMs` up to `maxMs`, so a fleet of sidecars that lost
 * the control plane together does not come back in lockstep.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
