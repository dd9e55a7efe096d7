/**
 * Org-scoped API tokens made at runtime (aigw tokens create): kept only as the SHA-256
 * digest of the token, never the token. Revoked rows stay, so a revoked token is told apart
 * from one never seen (it must never fall back to the open, token-less access of a control
 * plane without operator tokens).
 */
export interface TokenStore {
  /** Stores a new token; throws StoreConflictError when the id or digest exists. */
  createToken(token: NewToken): Promise<TokenRecord>;
  /** Every token, revoked ones too, oldest first. */
  listTokens(): Promise<TokenRecord[]>;
  /** Marks the token revoked at `now` (a revoked one keeps its first revocation time); undefined when absent. */
  revokeToken(id: string, now: number): Promise<TokenRecord | undefined>;
}

export type TokenKind = "admin" | "sidecar";

export interface NewToken {
  id: string;
  /** Hex SHA-256 of the bearer token. */
  digest: string;
  orgId: string;
  kind: TokenKind;
  name: string;
  createdAt: number;
}

export interface TokenRecord extends NewToken {
  revokedAt: number | null;
}

export const TOKEN_KINDS: readonly TokenKind[] = ["admin", "sidecar"];

export function validateNewToken(token: NewToken): void {
  if (!/^[0-9a-f]{64}$/.test(token.digest)) throw new TypeError(`token ${token.id}: digest must be hex SHA-256`);
  if (token.orgId === "") throw new TypeError(`token ${token.id}: org id must not be empty`);
  if (!TOKEN_KINDS.includes(token.kind)) throw new TypeError(`token ${token.id}: unknown kind "${token.kind}"`);
}

/** An api_tokens row as either backend reads it (PostgreSQL's BIGINTs may come as strings). */
export interface TokenRow {
  id: string;
  digest: string;
  org_id: string;
  kind: TokenKind;
  name: string;
  created_at: number | string;
  revoked_at: number | string | null;
}

export function toTokenRecord(row: TokenRow): TokenRecord {
  return {
    id: row.id,
    digest: row.digest,
    orgId: row.org_id,
    kind: row.kind,
    name: row.name,
    createdAt: Number(row.created_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
  };
}
