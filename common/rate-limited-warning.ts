import type { Logger } from "./logger.js";

/**
 * Logs a repeated warning at most once per interval, with how many times it happened since
 * the last line, so a flood (a full spool under load, a failing disk) cannot flood the log.
 */
export class RateLimitedWarning {
  private suppressed = 0;
  private lastLoggedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
    private readonly intervalMs = 10_000,
  ) {}

  /** Records one occurrence (of `count` items); logs if the interval has passed. */
  hit(fields: Record<string, unknown> = {}, count = 1): void {
    this.suppressed += count;
    // Monotonic: a wall clock set back must not silence the warning for as long.
    const now = performance.now();
    if (now - this.lastLoggedAt < this.intervalMs) return;
    this.lastLoggedAt = now;
    this.logger.warn({ ...fields, occurrences: this.suppressed }, this.message);
    this.suppressed = 0;
  }
}
