import pg from "pg";
import type { Logger } from "../../../common/logger.js";
import type { StoreWatcher } from "../cluster.js";

/** NOTIFY channels PostgresStore writes to inside its transactions (payloads are JSON). */
export const CHANNEL_LANES = "aigw_lanes";
export const CHANNEL_EVENTS = "aigw_events";
export const CHANNEL_CHANGES = "aigw_changes";

const CHANNELS = [CHANNEL_LANES, CHANNEL_CHANGES, CHANNEL_EVENTS] as const;
const BACKOFF_INITIAL_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/**
 * Other replicas' writes, as PostgreSQL announces them (NOTIFY, see PostgresStore): one
 * connection that LISTENs, reconnecting with backoff when the server restarts or the
 * connection is killed, and saying so in the log. After a reconnect every watcher hears
 * "all": what was announced meanwhile is lost, so lanes are rescanned, config reloaded and
 * the feed read again.
 */
export class PgListener {
  readonly #url: string;
  readonly #owner: string;
  readonly #logger: Logger | undefined;
  readonly #watchers = new Set<StoreWatcher>();
  #client: pg.Client | undefined;
  #closed = false;
  #lost = false;
  #backoff = BACKOFF_INITIAL_MS;
  #timer: NodeJS.Timeout | undefined;

  constructor(url: string, owner: string, logger?: Logger) {
    this.#url = url;
    this.#owner = owner;
    this.#logger = logger;
  }

  watch(watcher: StoreWatcher): () => void {
    this.#watchers.add(watcher);
    if (this.#client === undefined && this.#timer === undefined && !this.#closed) void this.#connect();
    return () => this.#watchers.delete(watcher);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({ connectionString: this.#url, application_name: "aigw-listen" });
    client.on("error", (err) => this.#drop(client, err));
    client.on("end", () => this.#drop(client, new Error("connection ended")));
    client.on("notification", (msg) => this.#deliver(msg.channel, msg.payload ?? ""));
    try {
      await client.connect();
      for (const channel of CHANNELS) await client.query(`LISTEN ${channel}`);
    } catch (err) {
      await client.end().catch(() => {});
      this.#retry(err);
      return;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#backoff = BACKOFF_INITIAL_MS;
    if (this.#lost) {
      this.#lost = false;
      this.#logger?.info("PostgreSQL notifications back; reloading what may have changed meanwhile");
      for (const w of this.#watchers) {
        w.lanes?.("all");
        w.changed?.("all");
        w.events?.();
      }
    }
  }

  #drop(client: pg.Client, err: unknown): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    void client.end().catch(() => {});
    this.#retry(err);
  }

  #retry(err: unknown): void {
    if (this.#closed) return;
    if (!this.#lost) {
      this.#lost = true;
      this.#logger?.warn({ err }, "PostgreSQL notifications lost; reconnecting");
    }
    const delay = this.#backoff;
    this.#backoff = Math.min(BACKOFF_MAX_MS, this.#backoff * 2);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#connect();
    }, delay);
    this.#timer.unref();
  }

  #deliver(channel: string, payload: string): void {
    let message: { from?: string; endpoints?: string[]; changes?: string[]; all?: boolean };
    try {
      message = JSON.parse(payload) as typeof message;
    } catch {
      return;
    }
    // Our own writes are handled where they are made; the feed is read back whoever wrote.
    const own = message.from === this.#owner;
    for (const w of this.#watchers) {
      if (channel === CHANNEL_EVENTS) w.events?.();
      else if (own) continue;
      else if (channel === CHANNEL_LANES) w.lanes?.(message.all ? "all" : (message.endpoints ?? []));
      else if (channel === CHANNEL_CHANGES) w.changed?.(message.all ? "all" : (message.changes ?? []));
    }
  }
}
