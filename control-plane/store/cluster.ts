import type { OperatorEffects } from "./operator-events.js";

/**
 * What the processes sharing one store share beyond events and deliveries: the config
 * version sidecars see, circuit states, which sidecars are connected (for limit shares),
 * and settings changed at runtime. With SQLite one process owns all of it; with PostgreSQL
 * every replica reads and writes the same rows, and hears of changes through Store.watch.
 */
export interface ClusterStore {
  /**
   * A config snapshot version above every one handed out before by any process on this
   * store, and not below the clock in ms (so versions keep rising across restarts, and
   * past those of the clock-based versions of earlier releases).
   */
  nextConfigVersion(now: number): Promise<bigint>;
  /**
   * An endpoint's circuit as the process that opened or closed it recorded it. Closing a
   * circuit recorded open stores an endpoint.recovered operator event in the same
   * transaction (once, whichever replica closes it).
   */
  putCircuit(circuit: CircuitRecord): Promise<OperatorEffects>;
  listCircuits(): Promise<CircuitRecord[]>;
  /**
   * An endpoint's run of failed attempts (delivery.auto_disable_after_ms) started at `since`,
   * unless a run is recorded already (by any process, before a restart too): records and
   * returns the earlier of the two, so the run survives restarts and spans replicas.
   */
  startFailingRun(endpoint: string, since: number): Promise<number>;
  /** The endpoint's run of failures is over (a success, or it was disabled): for every process. */
  endFailingRun(endpoint: string): Promise<void>;
  /** Marks these sidecars as connected to `owner` at `now` (a heartbeat; new ones are added). */
  putSidecars(owner: string, sidecars: readonly SidecarRecord[], now: number): Promise<void>;
  removeSidecar(id: string): Promise<void>;
  /** Sidecars any process saw since `since`. */
  listSidecars(since: number): Promise<SidecarRecord[]>;
  getSetting(name: string): Promise<string | undefined>;
  putSetting(name: string, value: string): Promise<void>;
}

export interface CircuitRecord {
  endpoint: string;
  open: boolean;
  /** When it opened (its cooldown runs from here); 0 when closed. */
  openedAt: number;
  /** Read back only: when its current run of failed attempts started (startFailingRun); 0: none. */
  failingSince?: number;
}

export interface SidecarRecord {
  id: string;
  orgId: string;
  app: string;
  /** What the sidecar said of itself (hello, batches); absent: unknown. */
  version?: string;
  spoolBatches?: number;
  spoolBytes?: number;
  /** When its process last said it was connected (read back only). */
  seenAt?: number;
}

/** A sidecars row as both backends read it. */
export interface SidecarRow {
  id: string;
  org_id: string;
  app: string;
  version: string;
  spool_batches: number | string;
  spool_bytes: number | string;
  seen_at: number | string;
}

export function sidecarRecord(r: SidecarRow): SidecarRecord {
  return {
    id: r.id,
    orgId: r.org_id,
    app: r.app,
    version: r.version,
    spoolBatches: Number(r.spool_batches),
    spoolBytes: Number(r.spool_bytes),
    seenAt: Number(r.seen_at),
  };
}

/** What other processes on the same store did (PostgreSQL replicas); see Store.watch. */
export interface StoreWatcher {
  /** Deliveries became due for these endpoints ("all": rescan every lane). */
  lanes?(endpoints: readonly string[] | "all"): void;
  /**
   * Shared config changed: "endpoints", "keys", "budgets", "prices", "circuits", "presence",
   * "settings" (and whatever later concerns add); "all" after notifications were lost.
   */
  changed?(kinds: readonly string[] | "all"): void;
  /** New events are in the feed. */
  events?(): void;
}
