import { createHash, randomBytes } from "node:crypto";
import type { Logger } from "../../common/logger.js";
import type { TokenKind, TokenRecord, TokenStore } from "../store/tokens.js";
import { OPERATOR, type OrgPrincipal, type Principal } from "./principal.js";

/** Org tokens of the config file: auth.orgs.ORG.admin_tokens / sidecar_tokens. */
export type ConfigOrgTokens = Record<string, { adminTokens: readonly string[]; sidecarTokens: readonly string[] }>;

export interface TokenRegistryOptions {
  /** auth.admin_tokens: the operator's, on the Admin API, the feed and the dashboard. */
  operatorAdminTokens: readonly string[];
  /** auth.sidecar_tokens: the operator's, on ingest (any org). */
  operatorSidecarTokens: readonly string[];
  orgTokens: ConfigOrgTokens;
  /** Tokens made at runtime; absent: config tokens only. */
  store?: Pick<TokenStore, "listTokens">;
  logger?: Logger;
  /** How often the store's tokens are read again (revocations by other replicas); default 500 ms. */
  refreshMs?: number;
}

export type Resolution = { principal: Principal } | { refused: string };

interface KnownToken {
  orgId: string;
  kind: TokenKind;
  id: string;
  name: string;
  revoked: boolean;
}

/** Bearer tokens made by `aigw tokens create`: "aigw_" + 32 random bytes, base64url. */
export function newTokenSecret(): string {
  return `aigw_${randomBytes(32).toString("base64url")}`;
}

export function tokenDigest(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/**
 * Who a bearer token is. Every token is kept as its SHA-256 digest only and looked up by
 * it: a map lookup on a digest tells an attacker nothing about the token's bytes (they
 * choose the token, not its digest). Tokens made at runtime are read from the store at
 * start and every `refreshMs`, and at once after this process creates or revokes one;
 * streams held open by a token (feed watchers, sidecars) are told when it stops being
 * valid, so a revocation reaches them within a second.
 *
 * Without operator tokens of a kind (auth.admin_tokens empty), requests with no token are
 * the operator's, as before orgs existed (loopback only: see refuseOpenListeners); an org
 * token still scopes its bearer, and a revoked one is still refused.
 */
export class TokenRegistry {
  private readonly operator: Record<TokenKind, Set<string>>;
  private readonly configured = new Map<string, KnownToken>();
  private known = new Map<string, KnownToken>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private failedOnce = false;

  constructor(private readonly options: TokenRegistryOptions) {
    this.operator = {
      admin: new Set(options.operatorAdminTokens.map(tokenDigest)),
      sidecar: new Set(options.operatorSidecarTokens.map(tokenDigest)),
    };
    for (const [orgId, tokens] of Object.entries(options.orgTokens)) {
      for (const [kind, list] of [
        ["admin", tokens.adminTokens],
        ["sidecar", tokens.sidecarTokens],
      ] as const) {
        for (const t of list) this.configured.set(tokenDigest(t), { orgId, kind, id: "", name: "", revoked: false });
      }
    }
    this.known = new Map(this.configured);
  }

  /** Reads the store's tokens and keeps reading them every refreshMs. */
  async start(): Promise<void> {
    await this.refresh();
    if (this.options.store === undefined) return;
    this.timer = setInterval(() => {
      this.refresh().catch(() => {});
    }, this.options.refreshMs ?? 500);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reads the store's tokens now (after a create or revoke here), then ends the streams of tokens no longer valid. */
  refresh(): Promise<void> {
    this.refreshing ??= this.load().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async load(): Promise<void> {
    const store = this.options.store;
    if (store === undefined) return;
    let rows: TokenRecord[];
    try {
      rows = await store.listTokens();
      this.failedOnce = false;
    } catch (err) {
      // The last known tokens stay in force; the store being away is logged elsewhere too.
      if (!this.failedOnce) this.options.logger?.warn({ err }, "reading API tokens failed; the last known ones apply");
      this.failedOnce = true;
      return;
    }
    const next = new Map(this.configured);
    for (const r of rows) {
      if (next.has(r.digest)) continue;
      next.set(r.digest, { orgId: r.orgId, kind: r.kind, id: r.id, name: r.name, revoked: r.revokedAt !== null });
    }
    this.known = next;
    for (const [digest, callbacks] of this.watchers) {
      if (this.known.get(digest)?.revoked !== true) continue;
      for (const cb of callbacks) cb();
    }
  }

  /** Whether operator tokens of this kind are configured (auth is required). */
  required(kind: TokenKind): boolean {
    return this.operator[kind].size > 0;
  }

  /** Any org token of this kind, in the file or made at runtime (a revoked one counts). */
  hasOrgTokens(kind: TokenKind): boolean {
    for (const t of this.known.values()) if (t.kind === kind) return true;
    return false;
  }

  resolve(authorization: string | null | undefined, kind: TokenKind): Resolution {
    const open = this.operator[kind].size === 0;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    const token = m?.[1];
    if (!token) {
      if (open) return { principal: OPERATOR };
      return { refused: authorization ? "token not accepted" : "bearer token required" };
    }
    const digest = tokenDigest(token);
    if (this.operator[kind].has(digest)) return { principal: OPERATOR };
    const known = this.known.get(digest);
    if (known !== undefined) {
      if (known.revoked) return { refused: "token revoked" };
      if (known.kind !== kind) {
        return { refused: `token not accepted (an org ${known.kind} token; ${kind} tokens are asked for here)` };
      }
      const principal: OrgPrincipal = {
        scope: "org",
        orgId: known.orgId,
        tokenId: known.id,
        tokenName: known.name,
        digest,
      };
      return { principal };
    }
    // A control plane without operator tokens takes any other token as before orgs existed.
    if (open) return { principal: OPERATOR };
    return { refused: "token not accepted" };
  }

  /** Whether the principal's token is still valid. */
  isValid(principal: Principal): boolean {
    return principal.scope === "operator" || this.known.get(principal.digest)?.revoked === false;
  }

  /**
   * Calls `onRevoked` (possibly more than once) when the principal's token is revoked; the
   * returned function stops that. Nothing to watch for the operator's config tokens.
   */
  watch(principal: Principal, onRevoked: () => void): () => void {
    if (principal.scope === "operator") return () => {};
    let set = this.watchers.get(principal.digest);
    if (set === undefined) {
      set = new Set();
      this.watchers.set(principal.digest, set);
    }
    set.add(onRevoked);
    if (!this.isValid(principal)) queueMicrotask(onRevoked);
    return () => {
      set.delete(onRevoked);
      if (set.size === 0) this.watchers.delete(principal.digest);
    };
  }
}
