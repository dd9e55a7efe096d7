/** An unbounded single-consumer async queue: producers push, one consumer iterates. */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | null = null;
  private done = false;
  private error: unknown = undefined;
  private failed = false;

  push(item: T): void {
    if (this.done) return;
    this.items.push(item);
    this.signal();
  }

  end(): void {
    this.done = true;
    this.signal();
  }

  fail(err: unknown): void {
    this.failed = true;
    this.error = err;
    this.done = true;
    this.signal();
  }

  private signal(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift() as T;
        continue;
      }
      if (this.failed) throw this.error;
      if (this.done) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }
}
