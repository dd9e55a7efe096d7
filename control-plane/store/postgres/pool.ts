import { createHash } from "node:crypto";
import pg from "pg";
import { StoreUnavailableError } from "../unavailable.js";

/**
 * A client that prepares every parameterised statement once per connection (a named
 * statement, named by a digest of its text) instead of having PostgreSQL parse and plan
 * it on every execution. The store's statements are a fixed, small set of texts, so the
 * statements a connection keeps stay few. Statements without parameters (BEGIN, COMMIT,
 * LISTEN) go through the simple protocol as before.
 *
 * A statement prepared before its tables changed shape (a newer replica migrated the
 * schema) fails with "cached plan must not change result type": the connection is then
 * `stale` inside a transaction, and is discarded rather than returned to the pool (the
 * store's transactions retry on a fresh one); outside one the statement is prepared again
 * and run once more, so single-statement reads never see the error.
 */
export class PreparingClient extends pg.Client {
  stale = false;

  constructor(config?: string | pg.ClientConfig) {
    super(config);
    // A connection cut while the client is checked out and between queries (the server
    // restarted, pg_terminate_backend) is an 'error' event with nobody listening, which
    // would crash the process; its next query fails instead, and the store handles that.
    this.on("error", () => {});
  }

  // pg's query() has many overloads; only (text, values[, callback]) is rewritten.
  override query(...args: unknown[]): never {
    const [text, values, callback] = args;
    if (typeof text !== "string" || !Array.isArray(values)) {
      return (super.query as (...a: unknown[]) => never)(...args);
    }
    const result = this.#prepared(text, values);
    if (typeof callback === "function") {
      const cb = callback as (err: Error | null, res?: unknown) => void;
      result.then(
        (res) => cb(null, res),
        (err: Error) => cb(err),
      );
      return undefined as never;
    }
    return result as never;
  }

  async #prepared(text: string, values: unknown[]): Promise<pg.QueryResult> {
    const config: pg.QueryConfig = { name: statementName(text), text, values };
    const run = () => (super.query as (c: pg.QueryConfig) => Promise<pg.QueryResult>)(config);
    // Outside a transaction a statement that failed for a stale plan changed nothing: drop
    // that one statement and run it again, prepared afresh. Inside one, the transaction is
    // aborted: the connection is marked and its transaction retried on another.
    const outsideTx = (this as unknown as { _txStatus: string | null })._txStatus === "I";
    try {
      return await run();
    } catch (err) {
      if (!isStalePlan(err)) throw err;
      if (!outsideTx) {
        this.stale = true;
        throw err;
      }
      await (super.query as (t: string) => Promise<unknown>)(`DEALLOCATE ${config.name}`);
      const statements = (this as unknown as { connection: { parsedStatements: Record<string, string> } }).connection
        .parsedStatements;
      delete statements[config.name as string];
      return await run();
    }
  }
}

/** Whether a client must not be reused: its prepared statements no longer fit the schema. */
export function isStaleClient(client: unknown): boolean {
  return client instanceof PreparingClient && client.stale;
}

function isStalePlan(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  return e?.code === "0A000" && typeof e.message === "string" && e.message.includes("cached plan must not change");
}

const names = new Map<string, string>();

function statementName(text: string): string {
  let name = names.get(text);
  if (name === undefined) {
    name = `aigw_${createHash("sha1").update(text).digest("hex").slice(0, 20)}`;
    names.set(text, name);
  }
  return name;
}

/** SQLSTATE classes and codes that mean "the server is not there for now", not "the query is wrong". */
const UNREACHABLE_SQLSTATES = new Set([
  "57P01",
  "57P02",
  "57P03",
  "53300",
  "08000",
  "08001",
  "08003",
  "08004",
  "08006",
]);
const UNREACHABLE_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** PostgreSQL's "not now" errors as StoreUnavailableError with its catalogue code; anything else as it is. */
export function unavailableOr(err: unknown, where: string): unknown {
  if (err instanceof StoreUnavailableError) return err;
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  const message = typeof e?.message === "string" ? e.message : String(err);
  if (code === "53100") {
    return new StoreUnavailableError(
      "AIGW_STORE_DISK_FULL",
      `PostgreSQL store ${where}: the server's disk is full; nothing was written, and the write is tried again once there is space`,
      { cause: err },
    );
  }
  if (
    UNREACHABLE_SQLSTATES.has(code) ||
    UNREACHABLE_ERRNOS.has(code) ||
    /Connection terminated|connection timeout|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(
      message,
    )
  ) {
    return new StoreUnavailableError(
      "AIGW_STORE_UNREACHABLE",
      `PostgreSQL store ${where}: the server cannot be reached (${message}); nothing was written, and the work is tried again`,
      { cause: err },
    );
  }
  return err;
}

/**
 * The store's pool: errors of queries and connects that mean the server is away come back
 * as StoreUnavailableError (AIGW_STORE_UNREACHABLE), which every caller treats as "not
 * now, nothing written": sidecars keep their batches, deliveries their leases.
 */
export class StorePool extends pg.Pool {
  constructor(
    config: pg.PoolConfig,
    private readonly where: string,
  ) {
    super(config);
  }

  override query(...args: unknown[]): never {
    const last = args[args.length - 1];
    if (typeof last === "function") {
      args[args.length - 1] = (err: Error | null, res: unknown) =>
        (last as (err: unknown, res: unknown) => void)(err ? unavailableOr(err, this.where) : err, res);
      return (super.query as (...a: unknown[]) => never)(...args);
    }
    return ((super.query as (...a: unknown[]) => Promise<unknown>)(...args) as Promise<unknown>).catch(
      (err: unknown) => {
        throw unavailableOr(err, this.where);
      },
    ) as never;
  }

  override connect(...args: unknown[]): never {
    if (typeof args[0] === "function") return (super.connect as (...a: unknown[]) => never)(...args);
    return ((super.connect as () => Promise<pg.PoolClient>)() as Promise<pg.PoolClient>).catch((err: unknown) => {
      throw unavailableOr(err, this.where);
    }) as never;
  }
}
