/**
 * Runs the proxy's bookkeeping (reading response copies, building events, publishing) in
 * batches, after the event loop has handled every socket that was ready, rather than between
 * a response's last write and the next read. Under load a batch grows (every response that
 * ended in one turn of the loop) and its cost per request falls. An immediate, not a timer:
 * a 1 ms timer made and unlinked node's list of 1 ms timers on every batch.
 */
export class ReportQueue {
  private pending: Array<() => void> = [];
  private scheduled: NodeJS.Immediate | undefined;

  constructor(private readonly onError: (err: unknown) => void = () => {}) {}

  add(report: () => void): void {
    this.pending.push(report);
    // Not unref'd: node lets the event loop wait for I/O before running an unref'd immediate
    // (only a ref'd one makes it look for I/O without waiting), so a report added outside
    // the I/O phase (a timeout's, say) would wait for the next packet. A ref'd one keeps an
    // otherwise finished process for one more turn of the loop at most.
    this.scheduled ??= setImmediate(this.flush);
  }

  /** Runs every pending report now (also used on close). */
  readonly flush = (): void => {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled);
    this.scheduled = undefined;
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
