import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Code, type Interceptor } from "@connectrpc/connect";
import { rpcError } from "../../common/rpc-errors.js";
import { PRINCIPAL, type Principal } from "../auth/principal.js";
import type { TokenRegistry } from "../auth/token-registry.js";

/** Bearer tokens kept only as SHA-256 digests, compared in constant time. */
export class TokenSet {
  private readonly digests: Buffer[];

  constructor(tokens: readonly string[]) {
    this.digests = tokens.map(digest);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  accepts(authorization: string | null | undefined): boolean {
    if (!this.enabled) return true;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!m?.[1]) return false;
    const d = digest(m[1]);
    let ok = false;
    for (const known of this.digests) ok = timingSafeEqual(known, d) || ok;
    return ok;
  }
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

/**
 * Requires the right bearer token per service (sidecar tokens on ingest, admin tokens
 * elsewhere) and tells the service who it is (PRINCIPAL: the operator or one org).
 */
export function authInterceptor(tokens: TokenRegistry): Interceptor {
  return (next) => async (req) => {
    const kind = req.service.typeName === "aigw.v1.IngestService" ? "sidecar" : "admin";
    const resolved = tokens.resolve(req.header.get("authorization"), kind);
    if ("refused" in resolved) {
      throw rpcError(Code.Unauthenticated, "AIGW_UNAUTHENTICATED", `authorization: ${resolved.refused}`);
    }
    req.contextValues.set(PRINCIPAL, resolved.principal);
    return next(req);
  };
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The HTTP/1.1 pages beside the Admin API. On a listener beyond loopback (where
 * auth.admin_tokens must be set) they ask for the same tokens as the API: the dashboard
 * page the admin tokens, /metrics (which names endpoints) the admin tokens or
 * auth.metrics_tokens, so a scraper's token cannot change anything. On loopback they stay
 * open, as the local stack and a node-local scraper expect. /healthz and /readyz are always
 * open for orchestrators' probes.
 */
export class HttpPageAuth {
  private readonly metrics: TokenSet;
  private readonly required: boolean;
  private readonly tokens: TokenRegistry;

  constructor(options: {
    adminTokens: readonly string[];
    metricsTokens: readonly string[];
    required: boolean;
    tokens: TokenRegistry;
  }) {
    this.metrics = new TokenSet([...options.adminTokens, ...options.metricsTokens]);
    this.required = options.required;
    this.tokens = options.tokens;
  }

  /** True when the request may read /metrics; otherwise the 401 is already answered. */
  allowMetrics(req: IncomingMessage, res: ServerResponse): boolean {
    if (!this.required || this.metrics.accepts(req.headers.authorization)) return true;
    const what = req.headers.authorization ? "token not accepted" : "bearer token required";
    res
      .writeHead(401, { "content-type": "text/plain; charset=utf-8", "www-authenticate": 'Bearer realm="aigw"' })
      .end(`AIGW_UNAUTHENTICATED: /metrics: ${what} (a token of auth.admin_tokens or auth.metrics_tokens)\n`);
    return false;
  }

  /**
   * Who may have the dashboard page: an operator or org admin token (its data comes from the
   * Admin API, which scopes it). Otherwise a small page with no data answers 401 and asks for
   * the token, then loads the dashboard with it (a browser cannot put a bearer token on a
   * navigation). On loopback without a token, the operator as before.
   */
  dashboardPrincipal(req: IncomingMessage, res: ServerResponse, loginPage: () => string): Principal | undefined {
    const resolved = this.tokens.resolve(req.headers.authorization, "admin");
    if ("principal" in resolved) return resolved.principal;
    if (!this.required) return { scope: "operator" };
    res.writeHead(401, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(loginPage());
    return undefined;
  }
}
