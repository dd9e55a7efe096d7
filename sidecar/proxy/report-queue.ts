/**
 * Runs the proxy's bookkeeping (reading response copies, building events, publishing) in
 * batches, a moment after responses end, rather than between a response's last write and
 * the next read on the event loop. Under load a batch grows and its cost per request falls.
 */
export class ReportQueue {
  private pending: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    /** How long a finished exchange may wait for its report. */
    private readonly delayMs = 1,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  add(report: () => void): void {
    this.pending.push(report);
    if (this.timer === undefined) {
      this.timer = setTimeout(this.flush, this.delayMs);
      // Pending reports never keep a process alive that is otherwise done.
      this.timer.unref();
    }
  }

  /** Runs every pending report now (also used on close). */
  readonly flush = (): void => {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    for (const report of batch) {
      try {
        report();
      } catch (err) {
        this.onError(err);
      }
    }
  };
}
