import { createHash } from "node:crypto";
import pg from "pg";

/**
 * A client that prepares every parameterised statement once per connection (a named
 * statement, named by a digest of its text) instead of having PostgreSQL parse and plan
 * it on every execution. The store's statements are a fixed, small set of texts, so the
 * statements a connection keeps stay few. Statements without parameters (BEGIN, COMMIT,
 * LISTEN) go through the simple protocol as before.
 *
 * A statement prepared before its tables changed shape (a newer replica migrated the
 * schema) fails with "cached plan must not change result type": the connection is then
 * `stale`, and is discarded rather than returned to the pool (the store's transactions
 * retry on a fresh one; the pool discards a connection whose query failed).
 */
export class PreparingClient extends pg.Client {
  stale = false;

  // pg's query() has many overloads; only (text, values[, callback]) is rewritten.
  override query(...args: unknown[]): never {
    const [text, values, callback] = args;
    if (typeof text !== "string" || !Array.isArray(values)) {
      return (super.query as (...a: unknown[]) => never)(...args);
    }
    const config: pg.QueryConfig = { name: statementName(text), text, values };
    if (typeof callback === "function") {
      return (super.query as unknown as (c: pg.QueryConfig, cb: (err: Error | null, res: unknown) => void) => never)(
        config,
        (err, res) => {
          if (isStalePlan(err)) this.stale = true;
          (callback as (err: Error | null, res: unknown) => void)(err, res);
        },
      );
    }
    return (super.query as (c: pg.QueryConfig) => Promise<pg.QueryResult>)(config).catch((err: unknown) => {
      if (isStalePlan(err)) this.stale = true;
      throw err;
    }) as never;
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
