import type { StoredEvent } from "../store/store.js";

/**
 * Fans stored events out to live watchers in-process. Publishing never waits for a
 * watcher: each subscription has a bounded queue, and a watcher whose queue overflows
 * is cut off (its `onOverflow` runs once) instead of slowing ingest.
 */
export class EventBus {
  private readonly subscriptions = new Set<Subscription>();

  /** `onActive(true)` when the first watcher arrives, `onActive(false)` when the last leaves. */
  constructor(private readonly onActive?: (active: boolean) => void) {}

  subscribe(options: {
    maxQueued: number;
    onOverflow: () => void;
    accept?: (e: StoredEvent) => boolean;
  }): Subscription {
    const sub = new Subscription(options.maxQueued, options.onOverflow, options.accept, () => {
      if (this.subscriptions.delete(sub) && this.subscriptions.size === 0) this.onActive?.(false);
    });
    this.subscriptions.add(sub);
    if (this.subscriptions.size === 1) this.onActive?.(true);
    return sub;
  }

  publish(events: readonly StoredEvent[]): void {
    if (events.length === 0) return;
    for (const sub of this.subscriptions) sub.push(events);
  }

  get size(): number {
    return this.subscriptions.size;
  }

  /** Ends every subscription (shutdown). */
  closeAll(): void {
    for (const sub of [...this.subscriptions]) sub.close();
  }
}

export class Subscription implements AsyncIterable<StoredEvent> {
  private readonly queue: StoredEvent[] = [];
  private wake: (() => void) | null = null;
  private closed = false;
  overflowed = false;

  constructor(
    private readonly maxQueued: number,
    private readonly onOverflow: () => void,
    private readonly accept: ((e: StoredEvent) => boolean) | undefined,
    private readonly detach: () => void,
  ) {}

  push(events: readonly StoredEvent[]): void {
    if (this.closed) return;
    for (const e of events) {
      if (this.accept && !this.accept(e)) continue;
      if (this.queue.length >= this.maxQueued) {
        this.overflowed = true;
        this.close();
        this.onOverflow();
        return;
      }
      this.queue.push(e);
    }
    this.wakeUp();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.detach();
    this.wakeUp();
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StoredEvent> {
    try {
      for (;;) {
        const next = this.queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (this.closed) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      this.close();
    }
  }
}
