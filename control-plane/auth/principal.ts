import { Code, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { rpcError } from "../../common/rpc-errors.js";

/**
 * Who is calling, as the bearer token says (control-plane/auth/token-registry.ts): the
 * operator (auth.admin_tokens / auth.sidecar_tokens, or no token on a control plane that has
 * none), or one org (auth.orgs.ORG.*, or a token made with `aigw tokens create`).
 */
export type Principal = OperatorPrincipal | OrgPrincipal;

export interface OperatorPrincipal {
  scope: "operator";
}

export interface OrgPrincipal {
  scope: "org";
  orgId: string;
  /** "tok_…" for a token made at runtime; "" for one from the config file. */
  tokenId: string;
  tokenName: string;
  /** Hex SHA-256 of the token: what revocation is checked by. */
  digest: string;
}

export const OPERATOR: OperatorPrincipal = { scope: "operator" };

/**
 * Set by the auth interceptor on every request. The default (operator) is what a service
 * mounted without the interceptor sees: in-process routers in tests and tools.
 */
export const PRINCIPAL = createContextKey<Principal>(OPERATOR, { description: "aigw principal" });

export function principalOf(ctx: HandlerContext | undefined): Principal {
  return ctx?.values.get(PRINCIPAL) ?? OPERATOR;
}

/** The org a principal is limited to; undefined for the operator. */
export function orgScope(principal: Principal): string | undefined {
  return principal.scope === "org" ? principal.orgId : undefined;
}

/** PERMISSION_DENIED for what only the operator may do. */
export function operatorOnly(principal: Principal, what: string): void {
  if (principal.scope === "operator") return;
  throw rpcError(
    Code.PermissionDenied,
    "AIGW_PERMISSION_DENIED",
    `${what} is for operator tokens (auth.admin_tokens); this token is scoped to org "${principal.orgId}"`,
  );
}

/**
 * The org a request acts on: an operator's as asked (field "" for every org or none), an
 * org token's always its own. Naming another org is PERMISSION_DENIED, the same answer
 * whatever that org has, so nothing about it shows.
 */
export function requestOrg(principal: Principal, asked: string, field: string): string {
  if (principal.scope === "operator") return asked;
  if (asked !== "" && asked !== principal.orgId) {
    throw rpcError(
      Code.PermissionDenied,
      "AIGW_PERMISSION_DENIED",
      `${field}: this token is scoped to org "${principal.orgId}"`,
      { field },
    );
  }
  return principal.orgId;
}
