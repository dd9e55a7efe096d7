import type { Hello, SidecarStatus } from "../../gen/aigw/v1/ingest_pb.js";
import type { Logger } from "../../common/logger.js";
import type { SidecarPresence } from "../ingest/ingest-service.js";
import type { SidecarRecord, Store } from "../store/store.js";

/** How often this process says its sidecars are still connected. */
const HEARTBEAT_MS = 10_000;
/** A sidecar not seen for this long (its replica died) no longer counts. */
const STALE_MS = 3 * HEARTBEAT_MS;

/**
 * Which sidecars are connected, over every process on the store: each process records its
 * own sidecars (at connect, and with a heartbeat), removes them when their stream ends, and
 * reads everyone's after each change it makes or hears of. A replica that dies stops its
 * heartbeat, and its sidecars stop counting. The list goes to `onSidecars` (gateway limit
 * shares follow it).
 */
export class SidecarPresenceTracker implements SidecarPresence {
  readonly #mine = new Map<string, SidecarRecord>();
  /** Every process's sidecars as last read from the store. */
  #all: SidecarRecord[] = [];
  #timer: NodeJS.Timeout | undefined;
  #refreshing: Promise<void> | undefined;
  #again = false;

  constructor(
    private readonly store: Store,
    private readonly owner: string,
    private readonly onSidecars: (sidecars: SidecarRecord[]) => void,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    this.#timer = setInterval(() => {
      void this.#write(() => this.store.putSidecars(this.owner, [...this.#mine.values()], this.now()));
    }, HEARTBEAT_MS);
    this.#timer.unref();
    this.refresh();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * A sidecar said hello here: it counts at once (its first snapshot already has its
   * share), and in the store for the other processes.
   */
  connect(hello: Hello): void {
    const record: SidecarRecord = {
      id: hello.sidecarId,
      orgId: hello.orgId,
      app: hello.app,
      version: hello.version,
      spoolBatches: Number(hello.spoolBatches),
      spoolBytes: Number(hello.spoolBytes),
    };
    this.#mine.set(record.id, record);
    this.#emit();
    void this.#write(() => this.store.putSidecars(this.owner, [record], this.now()));
  }

  /**
   * Its spool depth (the dashboard lists it), written at once: sidecars report it only when
   * it changes, every few seconds at most.
   */
  status(hello: Hello, status: SidecarStatus): void {
    const record = this.#mine.get(hello.sidecarId);
    if (record === undefined) return;
    record.spoolBatches = Number(status.spoolBatches);
    record.spoolBytes = Number(status.spoolBytes);
    void this.#write(() => this.store.putSidecars(this.owner, [record], this.now()));
  }

  disconnect(hello: Hello): void {
    if (!this.#mine.delete(hello.sidecarId)) return;
    this.#all = this.#all.filter((s) => s.id !== hello.sidecarId);
    this.#emit();
    void this.#write(() => this.store.removeSidecar(hello.sidecarId));
  }

  /** Reads every process's sidecars (after a change here or elsewhere). */
  refresh(): void {
    if (this.#refreshing) {
      this.#again = true;
      return;
    }
    this.#refreshing = this.store
      .listSidecars(this.now() - STALE_MS)
      .then((all) => {
        this.#all = all;
        this.#emit();
      })
      .catch((err: unknown) => this.logger.error({ err }, "reading connected sidecars failed"))
      .finally(() => {
        this.#refreshing = undefined;
        if (this.#again) {
          this.#again = false;
          this.refresh();
        }
      });
  }

  /** The store's list and this process's own sidecars (which may not be written yet). */
  #emit(): void {
    const byId = new Map(this.#all.map((s) => [s.id, s]));
    for (const s of this.#mine.values()) byId.set(s.id, s);
    this.onSidecars([...byId.values()]);
  }

  async #write(write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (err) {
      this.logger.error({ err }, "recording connected sidecars failed");
    }
    this.refresh();
  }
}
