import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

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

/** Requires the right bearer token per service: sidecar tokens on ingest, admin tokens elsewhere. */
export function authInterceptor(sidecarTokens: TokenSet, adminTokens: TokenSet): Interceptor {
  return (next) => async (req) => {
    const tokens = req.service.typeName === "aigw.v1.IngestService" ? sidecarTokens : adminTokens;
    if (!tokens.accepts(req.header.get("authorization"))) {
      throw new ConnectError(
        req.header.get("authorization") ? "authorization: token not accepted" : "authorization: bearer token required",
        Code.Unauthenticated,
      );
    }
    return next(req);
  };
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
