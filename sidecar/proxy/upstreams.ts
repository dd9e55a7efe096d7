import { createRequire } from "node:module";
import type { Dispatcher, Pool as UndiciPool } from "undici";
import { type LeanDispatch, type LeanDispatchHandler, LeanPool } from "./lean-upstream.js";

// undici's index also loads fetch, WebSocket, caches and mocks (~9 MB of the sidecar's RSS,
// measured); the proxy needs its Pool only, and only in the node engine: the lean engine
// never loads undici. The type comes from undici's own declarations.
let undiciPool: typeof UndiciPool | undefined;
function loadUndiciPool(): typeof UndiciPool {
  undiciPool ??= createRequire(import.meta.url)("undici/lib/dispatcher/pool.js") as typeof UndiciPool;
  return undiciPool;
}

/** What the proxy uses of a connection pool: undici's Pool, or the lean engine's (lean-upstream.ts). */
export interface UpstreamPool {
  dispatch(request: LeanDispatch, handler: LeanDispatchHandler & Dispatcher.DispatchHandler): boolean;
  close(): Promise<void>;
}

/** A provider origin the sidecar forwards to, with its own keep-alive connection pool. */
export interface Upstream {
  /** "openai", "anthropic" or the configured name; the events' provider. */
  readonly name: string;
  /** scheme://host:port */
  readonly origin: string;
  /** A path the origin itself carries ("http://host/openai-proxy" → "/openai-proxy"), "" when none. */
  readonly pathPrefix: string;
  readonly pool: UpstreamPool;
}

export const DEFAULT_UPSTREAM = "openai";
/** undici's default connect timeout, which the lean client keeps. */
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const ANTHROPIC_UPSTREAM = "anthropic";
const ANTHROPIC_MESSAGES = "/v1/messages";

export interface UpstreamPoolOptions {
  /** Upstream silent this long (no headers, or no body bytes) → the request fails as a timeout. */
  timeoutMs: number;
  /** A connection (TCP, and TLS for https) not up this long fails the request; default 10 s (undici's). */
  connectTimeoutMs?: number | undefined;
  /** "undici" (default) or "lean": raw node:net/tls sockets (the lean engine). */
  client?: "undici" | "lean";
}

/**
 * The routing table: `/v1/messages` (and paths below it) goes to "anthropic" when configured; everything else
 * to "openai", or to the only upstream when there is one (DESIGN.md "CLI").
 */
export class UpstreamTable {
  private readonly byName: ReadonlyMap<string, Upstream>;
  private readonly fallback: Upstream;
  private readonly anthropic: Upstream | undefined;

  constructor(upstreams: Record<string, string>, options: UpstreamPoolOptions) {
    const entries = Object.entries(upstreams);
    if (entries.length === 0)
      throw new Error("upstreams: at least one upstream is required (e.g. openai=https://api.openai.com)");
    const parsed = entries.map(([name, url]) => parseUpstream(name, url));
    const byName = new Map<string, Upstream>();
    for (const { name, origin, pathPrefix } of parsed) {
      byName.set(name, {
        name,
        origin,
        pathPrefix,
        pool: newPool(origin, options),
      });
    }
    const fallback = byName.get(DEFAULT_UPSTREAM) ?? (byName.size === 1 ? [...byName.values()][0] : undefined);
    if (!fallback) {
      for (const u of byName.values()) void u.pool.close();
      throw new Error(
        `upstreams: with several upstreams one must be named "${DEFAULT_UPSTREAM}" (it takes every path but /v1/messages); got ${[...byName.keys()].join(", ")}`,
      );
    }
    this.byName = byName;
    this.fallback = fallback;
    this.anthropic = byName.get(ANTHROPIC_UPSTREAM);
  }

  /** The upstream for a request path (no query string). */
  route(path: string): Upstream {
    // /v1/messages and what lives under it (count_tokens, batches) are Anthropic's.
    if (
      this.anthropic !== undefined &&
      path.startsWith(ANTHROPIC_MESSAGES) &&
      (path.length === ANTHROPIC_MESSAGES.length || path.charCodeAt(ANTHROPIC_MESSAGES.length) === 0x2f) /* "/" */
    ) {
      return this.anthropic;
    }
    return this.fallback;
  }

  get(name: string): Upstream | undefined {
    return this.byName.get(name);
  }

  async close(): Promise<void> {
    await Promise.all([...this.byName.values()].map((u) => u.pool.close()));
  }
}

function newPool(origin: string, options: UpstreamPoolOptions): UpstreamPool {
  const timeouts = {
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    connectTimeout: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
  };
  if (options.client === "lean") return new LeanPool(origin, timeouts);
  const Pool = loadUndiciPool();
  return new Pool(origin, timeouts) as unknown as UpstreamPool;
}

function parseUpstream(name: string, url: string): { name: string; origin: string; pathPrefix: string } {
  if (!/^[a-z0-9][a-z0-9_.-]*$/i.test(name)) {
    throw new Error(`upstreams: name ${JSON.stringify(name)} must be letters, digits, "_", "." or "-"`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`upstreams.${name}: ${JSON.stringify(url)} is not a URL (expected e.g. https://api.openai.com)`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`upstreams.${name}: ${JSON.stringify(url)} must be http:// or https://`);
  }
  if (parsed.search !== "" || parsed.hash !== "" || parsed.username !== "" || parsed.password !== "") {
    throw new Error(
      `upstreams.${name}: ${JSON.stringify(url)} must be an origin with an optional path, no query, fragment or credentials`,
    );
  }
  return { name, origin: parsed.origin, pathPrefix: parsed.pathname.replace(/\/+$/, "") };
}
