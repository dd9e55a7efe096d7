/**
 * The one rule for failover chains, used by the config loader and by every Admin API
 * change: a chain must end, at an endpoint with no failover, after passing only endpoints
 * that exist. A cycle (a → b → a) would bounce a dead-lettered delivery between endpoints
 * for ever; a chain to a missing endpoint silently drops what should fail over.
 */

/**
 * What is wrong with `name` failing over to `failoverTo`, given where every endpoint
 * (`name` included or not) fails over to ("" for none); undefined when the chain is sound.
 * The message names the whole chain. Runs in at most `failoverOf.size + 2` steps.
 */
export function failoverChainProblem(
  name: string,
  failoverTo: string,
  failoverOf: ReadonlyMap<string, string>,
): string | undefined {
  if (failoverTo === "") return undefined;
  if (failoverTo === name) return "an endpoint cannot fail over to itself";
  const chain = [name, failoverTo];
  const seen = new Set(chain);
  let current = failoverTo;
  for (;;) {
    if (!failoverOf.has(current)) {
      return chain.length === 2
        ? `no endpoint named "${current}"`
        : `failover chain ${chain.join(" → ")} ends at "${current}", which is not an endpoint`;
    }
    const next = failoverOf.get(current) ?? "";
    if (next === "") return undefined;
    chain.push(next);
    if (next === name || seen.has(next)) return `failover chain ${chain.join(" → ")} is a cycle`;
    seen.add(next);
    current = next;
  }
}

/**
 * The org rule of failover: an org's endpoint fails over within its org or to an operator
 * endpoint; an operator endpoint (every org's events) only to another operator endpoint, so
 * a failover never hands one org's events to another org's receiver. `targetOrg` is the
 * target's org ("" for an operator endpoint; undefined when it does not exist).
 */
export function failoverOrgProblem(
  orgId: string,
  failoverTo: string,
  targetOrg: string | undefined,
): string | undefined {
  if (failoverTo === "" || targetOrg === undefined || targetOrg === "" || targetOrg === orgId) return undefined;
  if (orgId === "") {
    return `"${failoverTo}" belongs to org "${targetOrg}"; an operator endpoint (every org's events) fails over only to another operator endpoint`;
  }
  return `"${failoverTo}" belongs to org "${targetOrg}", not "${orgId}"; fail over to an endpoint of the same org or to an operator endpoint`;
}
