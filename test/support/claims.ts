import type { ClaimedDelivery, Store } from "../../control-plane/store/store.js";

/**
 * Claims what is due at `now` in every lane with pending work (or only in `lanes`), up
 * to `limit` per lane, as the scheduler would without its caps: for tests that act as
 * the delivery worker themselves.
 */
export async function claimDue(
  store: Store,
  options: { now: number; leaseOwner: string; leaseMs: number; limit?: number; lanes?: readonly string[] },
): Promise<ClaimedDelivery[]> {
  const names = options.lanes ?? (await store.pendingLanes("", 1000)).map((l) => l.endpoint);
  const claims = await store.claim({
    now: options.now,
    leaseOwner: options.leaseOwner,
    leaseMs: options.leaseMs,
    lanes: names.map((endpoint) => ({ endpoint, limit: options.limit ?? 1000 })),
  });
  return claims.flatMap((c) => c.deliveries);
}
