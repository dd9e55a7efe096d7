import type { Principal } from "../auth/principal.js";
import { type EndpointRecord, type EndpointStore, nameInOrg, qualifiedKey } from "../store/endpoints.js";

/**
 * Endpoint names are per org: two orgs may each have an endpoint called `billing`, and
 * neither can learn that the other has one. The store keys endpoints by one string (every
 * delivery, key, circuit, rollup and metric carries it), so an org's endpoint is stored
 * under its name when that is free and under `ORG/NAME` when another endpoint already holds
 * the name. Names never contain "/" (config/checks.ts ENDPOINT_NAME) nor do org ids, so the
 * two forms never meet.
 *
 * What each caller sees and says:
 * - an org token: its endpoints by their names, always (`billing`, whatever the key);
 * - the operator: the key (`billing`, or `globex/billing` for the second one), and
 *   `ORG/NAME` finds an org's endpoint whatever its key.
 */

/** A stored key as the caller sees it: an org token its own endpoints' names, the operator keys. */
export function shownName(key: string, principal: Principal): string {
  return principal.scope === "operator" ? key : nameInOrg(key, principal.orgId);
}

/** org `orgId`'s endpoint called `name`, whichever way it is stored. */
export async function orgEndpoint(
  store: Pick<EndpointStore, "getEndpoint">,
  orgId: string,
  name: string,
): Promise<EndpointRecord | undefined> {
  const qualified = await store.getEndpoint(qualifiedKey(orgId, name));
  if (qualified !== undefined) return qualified;
  const plain = await store.getEndpoint(name);
  return plain !== undefined && plain.orgId === orgId ? plain : undefined;
}

/**
 * The endpoint a caller means by `name`, or undefined. An org token's own endpoint first,
 * else whatever holds the name (the caller decides what an operator's or another org's is
 * to this token); the operator's by key, or `ORG/NAME` for an org's. An org token naming
 * `ORG/NAME` of its own org means NAME; of another org, nothing.
 */
export async function findEndpoint(
  store: Pick<EndpointStore, "getEndpoint">,
  name: string,
  principal: Principal,
): Promise<EndpointRecord | undefined> {
  const slash = name.lastIndexOf("/");
  if (slash >= 0) {
    const org = name.slice(0, slash);
    if (principal.scope === "org" && org !== principal.orgId) return undefined;
    return orgEndpoint(store, org, name.slice(slash + 1));
  }
  if (principal.scope === "operator") return store.getEndpoint(name);
  return (await orgEndpoint(store, principal.orgId, name)) ?? store.getEndpoint(name);
}

/**
 * The key a new endpoint `name` of org `orgId` ("" for an operator endpoint) is stored
 * under, or undefined when that org (or the operator) already has an endpoint by that name.
 * An operator endpoint needs the plain name free (the operator sees every key, so saying it
 * is taken tells nothing it could not list).
 */
export async function newEndpointKey(
  store: Pick<EndpointStore, "getEndpoint">,
  orgId: string,
  name: string,
): Promise<string | undefined> {
  const plain = await store.getEndpoint(name);
  if (orgId === "") return plain === undefined ? name : undefined;
  if (plain !== undefined && plain.orgId === orgId && !plain.oneOff) return undefined;
  const qualified = qualifiedKey(orgId, name);
  if ((await store.getEndpoint(qualified)) !== undefined) return undefined;
  return plain === undefined ? name : qualified;
}
