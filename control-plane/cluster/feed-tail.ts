import type { Logger } from "../../common/logger.js";
import type { EventBus } from "../feed/event-bus.js";
import type { Store } from "../store/store.js";

const PAGE = 500;
/** A backstop for a lost notification: the feed is read this often while anyone watches. */
const POLL_MS = 1_000;

/**
 * The live feed of a store several replicas write to: events are read back from the store
 * in its order (every replica's, this one's too) and published to this replica's watchers,
 * once each, never out of order. It reads only while someone watches, when a replica
 * announces new events, and on a slow timer in case an announcement was lost.
 */
export class FeedTail {
  #after: string | undefined;
  #active = false;
  #reading: Promise<void> | undefined;
  #again = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly bus: EventBus,
    private readonly logger: Logger,
  ) {}

  /** Watchers arrived (true) or all left (false). */
  setActive(active: boolean): void {
    if (active === this.#active) return;
    this.#active = active;
    if (!active) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#after = undefined;
      return;
    }
    this.#timer = setInterval(() => this.poke(), POLL_MS);
    this.#timer.unref();
    this.poke();
  }

  /** New events may be in the store. */
  poke(): void {
    if (!this.#active) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    this.#reading = this.#read()
      .catch((err: unknown) => this.logger.error({ err }, "reading the feed back from the store failed; retrying"))
      .finally(() => {
        this.#reading = undefined;
        if (this.#again) {
          this.#again = false;
          this.poke();
        }
      });
  }

  stop(): void {
    this.setActive(false);
  }

  async #read(): Promise<void> {
    // The first read starts at the live edge: watchers replay what came before themselves.
    this.#after ??= await this.store.feedHead();
    for (;;) {
      const page = await this.store.readFeed(this.#after, PAGE);
      if (!this.#active) return;
      const last = page[page.length - 1];
      if (last === undefined) return;
      this.#after = last.cursor;
      this.bus.publish(page);
      if (page.length < PAGE) return;
    }
  }
}
