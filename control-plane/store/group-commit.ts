import { isStoreUnavailable } from "./unavailable.js";

/**
 * Group commit, written once for every store backend: items submitted in the same
 * event-loop turn (several sidecars' batches, a pool of workers finishing together) share
 * one transaction, and each submitter's promise settles after that commit. A commit is most
 * of the cost of a small write (an fsync for ingest), so this is what lets many small
 * batches and a short sidecar linger keep up. If a group's commit fails, each of its items
 * is committed again on its own, so one bad item fails alone and the others still land;
 * unless the store itself is unavailable (locked, disk full: unavailable.ts), which every
 * item would only meet again: then the whole group fails at once.
 *
 * `commit` gets the items in submission order and returns one result per item; it may be
 * synchronous (SQLite: then `flushSync` lets a reader see everything submitted so far) or
 * return a promise (PostgreSQL: groups then form while the previous commit is in flight).
 * A group holds at most `maxItems`, so one transaction never grows without bound.
 */
export class GroupCommit<I, R> {
  private queue: Pending<I, R>[] = [];
  private scheduled = false;
  private running = false;
  /** The group being committed by `drain` (an asynchronous commit), settled or not. */
  private inFlight: Promise<unknown> | undefined;
  /** Groups taken by commitWithAsync and not yet settled. */
  private joint = 0;
  private idleWaiters: (() => void)[] = [];

  /** The linger's timer, while one runs. */
  private lingering: NodeJS.Timeout | undefined;

  /**
   * `lingerMs`: how long a group waits for a `commitWithAsync` to take it before it commits
   * on its own (0: it commits in the next turn of the event loop). A full group does not wait.
   */
  constructor(
    private readonly commit: (items: readonly I[]) => R[] | Promise<R[]>,
    private readonly maxItems = 512,
    private readonly lingerMs = 0,
  ) {}

  submit(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Items waiting for their commit. */
  get size(): number {
    return this.queue.length;
  }

  /** Resolves once everything submitted so far has been committed (or failed). */
  settled(): Promise<void> {
    if (this.queue.length === 0 && !this.running && !this.scheduled && this.joint === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Commits everything queued before returning. Only for a synchronous `commit`: a reader
   * of a synchronous store calls this first, so it sees every write already submitted.
   */
  flushSync(): void {
    while (this.queue.length > 0) {
      const group = this.queue.splice(0, this.maxItems);
      const results = this.tryCommit(group);
      if (results instanceof Promise) throw new TypeError("GroupCommit.flushSync: commit returned a promise");
      this.settle(group, results);
    }
  }

  /**
   * Only for a synchronous `commit`: runs `write` in the same transaction as everything
   * queued, instead of one transaction for each. `together(items, write)` makes that
   * transaction: it commits the items as `commit` would, then runs `write`, and returns
   * both results. If it fails, the items are committed as usual (`flushSync`, one failing
   * item failing alone) and `write` runs after them on its own. A reader-writer of a
   * synchronous store calls this where it would call `flushSync` and then write: a claim
   * right after attempt results then costs one transaction, not two.
   */
  commitWith<T>(write: () => T, together: (items: readonly I[], write: () => T) => { results: R[]; value: T }): T {
    if (this.queue.length === 0 || this.queue.length > this.maxItems) {
      this.flushSync();
      return write();
    }
    const group = this.queue.splice(0);
    let out: { results: R[]; value: T };
    try {
      out = together(
        group.map((p) => p.item),
        write,
      );
    } catch {
      this.queue.unshift(...group);
      this.flushSync();
      return write();
    }
    this.settle(
      group,
      out.results.map((value) => ({ ok: true, value })),
    );
    return out.value;
  }

  /**
   * For an asynchronous `commit`: what `commitWith` is for a synchronous one. Once the group
   * in flight (if any) has committed, `together(items)` commits the items queued when this
   * was called in one transaction with a write of its own, and returns both results; so a
   * write (a claim) sees every item submitted before it, and a claim right after results
   * costs one round trip, not two. `together` returns undefined when it cannot take these
   * items (or there are none); if it fails, the items are committed as usual (one failing
   * item failing alone). Either way the items are committed first, then `alone()` runs.
   */
  async commitWithAsync<T>(
    alone: () => Promise<T>,
    together: (items: readonly I[]) => Promise<{ results: R[]; value: T }> | undefined,
  ): Promise<T> {
    if (this.queue.length > this.maxItems) {
      // More than one group waiting: they go as usual, this write after them.
      await this.settled();
      return alone();
    }
    const group = this.queue.splice(0);
    if (this.inFlight) await this.inFlight.catch(() => {});
    if (group.length === 0) return alone();
    this.joint++;
    try {
      const joint = together(group.map((p) => p.item));
      if (joint !== undefined) {
        let out: { results: R[]; value: T } | undefined;
        try {
          out = await joint;
        } catch (err) {
          if (isStoreUnavailable(err)) {
            this.settle(
              group,
              group.map(() => ({ ok: false, error: err })),
            );
            throw err;
          }
        }
        if (out !== undefined) {
          this.settle(
            group,
            out.results.map((value) => ({ ok: true, value })),
          );
          return out.value;
        }
      }
      const results = this.tryCommit(group);
      this.settle(group, results instanceof Promise ? await results : results);
    } finally {
      this.joint--;
      if (this.joint === 0 && this.queue.length === 0 && !this.running && !this.scheduled) {
        for (const resolve of this.idleWaiters.splice(0)) resolve();
      }
    }
    return alone();
  }

  private schedule(): void {
    if (this.running) return;
    if (this.lingering !== undefined && this.queue.length >= this.maxItems) {
      clearTimeout(this.lingering);
      this.lingering = undefined;
      this.scheduled = false;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      this.lingering = undefined;
      this.scheduled = false;
      void this.drain();
    };
    if (this.lingerMs > 0 && this.queue.length < this.maxItems) this.lingering = setTimeout(run, this.lingerMs);
    else setImmediate(run);
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxItems);
        const results = this.tryCommit(group);
        if (results instanceof Promise) {
          this.inFlight = results;
          try {
            this.settle(group, await results);
          } finally {
            this.inFlight = undefined;
          }
        } else this.settle(group, results);
        // Synchronous commits yield between groups so I/O (acks, health checks) goes on.
        if (this.queue.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.running = false;
      if (this.queue.length > 0) this.schedule();
      else if (this.joint === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  /** The group's results, or (when the group's commit failed) each item's committed alone. */
  private tryCommit(group: Pending<I, R>[]): Outcome<R>[] | Promise<Outcome<R>[]> {
    const all = (values: R[]): Outcome<R>[] => values.map((value) => ({ ok: true, value }));
    let results: R[] | Promise<R[]>;
    const failAll = (error: unknown): Outcome<R>[] => group.map(() => ({ ok: false, error }));
    try {
      results = this.commit(group.map((p) => p.item));
    } catch (error) {
      return isStoreUnavailable(error) ? failAll(error) : this.commitAlone(group);
    }
    if (results instanceof Promise) {
      return results.then(all, (error: unknown) =>
        isStoreUnavailable(error) ? failAll(error) : this.commitAlone(group),
      );
    }
    return all(results);
  }

  private commitAlone(group: Pending<I, R>[]): Outcome<R>[] | Promise<Outcome<R>[]> {
    const outcomes: Outcome<R>[] = [];
    const from = (start: number): Outcome<R>[] | Promise<Outcome<R>[]> => {
      for (let i = start; i < group.length; i++) {
        let result: R[] | Promise<R[]>;
        try {
          result = this.commit([(group[i] as Pending<I, R>).item]);
        } catch (error) {
          outcomes.push({ ok: false, error });
          continue;
        }
        if (result instanceof Promise) {
          return result
            .then(
              ([value]) => void outcomes.push({ ok: true, value: value as R }),
              (error: unknown) => void outcomes.push({ ok: false, error }),
            )
            .then(() => from(i + 1));
        }
        outcomes.push({ ok: true, value: result[0] as R });
      }
      return outcomes;
    };
    return from(0);
  }

  private settle(group: Pending<I, R>[], outcomes: Outcome<R>[]): void {
    group.forEach((pending, i) => {
      const outcome = outcomes[i];
      if (outcome === undefined) pending.reject(new Error("group commit: no result for this item"));
      else if (outcome.ok) pending.resolve(outcome.value);
      else pending.reject(outcome.error);
    });
  }
}

interface Pending<I, R> {
  item: I;
  resolve: (value: R) => void;
  reject: (error: unknown) => void;
}

type Outcome<R> = { ok: true; value: R } | { ok: false; error: unknown };
