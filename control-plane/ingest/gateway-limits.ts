import { create } from "@bufbuild/protobuf";
import { type GatewayLimit, GatewayLimitSchema, type Hello } from "../../gen/aigw/v1/ingest_pb.js";
import type { LimitConfig } from "../config/types.js";

/**
 * Gateway limits (config `limits`) divided among the sidecars that enforce them. A limit
 * of an org is shared by the sidecars connected for that org; a limit naming an app, by
 * those connected for that org and app. Each sidecar gets its share, rounded up so a small
 * limit never becomes 0 (a refusal of everything): the org as a whole may then get up to
 * one request (or token) a minute more per sidecar than the limit, which is the price of
 * enforcing it without a round trip per request.
 *
 * Shares follow the connected sidecars, counted over every replica (cluster/presence.ts
 * gives the list): when the count of an org with limits changes, `onChange` runs and every
 * sidecar of the org gets its new share in a new snapshot.
 */
export class GatewayLimitShares {
  /** Connected sidecars by org and by (org, app). */
  private byOrg = new Map<string, number>();
  private byOrgApp = new Map<string, number>();
  private limits: readonly LimitConfig[];

  constructor(
    limits: readonly LimitConfig[],
    private readonly onChange: () => void,
  ) {
    this.limits = limits;
  }

  /** The sidecars connected now (to any replica). */
  setSidecars(sidecars: readonly Pick<Hello, "orgId" | "app">[]): void {
    const byOrg = new Map<string, number>();
    const byOrgApp = new Map<string, number>();
    for (const s of sidecars) {
      add(byOrg, s.orgId, 1);
      add(byOrgApp, orgApp(s.orgId, s.app), 1);
    }
    const changed = this.limits.some(
      (l) =>
        (byOrg.get(l.orgId) ?? 0) !== (this.byOrg.get(l.orgId) ?? 0) ||
        (l.app !== "" &&
          (byOrgApp.get(orgApp(l.orgId, l.app)) ?? 0) !== (this.byOrgApp.get(orgApp(l.orgId, l.app)) ?? 0)),
    );
    this.byOrg = byOrg;
    this.byOrgApp = byOrgApp;
    if (changed) this.onChange();
  }

  setLimits(limits: readonly LimitConfig[]): void {
    this.limits = limits;
    this.onChange();
  }

  /** Sidecar streams open for the org (and app, when given). */
  connected(orgId: string, app?: string): number {
    return (app === undefined ? this.byOrg.get(orgId) : this.byOrgApp.get(orgApp(orgId, app))) ?? 0;
  }

  /** The limits that apply to this sidecar, as its share. */
  limitsFor(hello: Pick<Hello, "orgId" | "app">): GatewayLimit[] {
    const out: GatewayLimit[] = [];
    for (const limit of this.limits) {
      if (limit.orgId !== hello.orgId || (limit.app !== "" && limit.app !== hello.app)) continue;
      // The asking sidecar counts even before its hello is registered.
      const sharing = Math.max(1, this.connected(limit.orgId, limit.app === "" ? undefined : limit.app));
      out.push(
        create(GatewayLimitSchema, {
          orgId: limit.orgId,
          app: limit.app,
          requestsPerMinute: share(limit.requestsPerMinute, sharing),
          tokensPerMinute: share(limit.tokensPerMinute, sharing),
        }),
      );
    }
    return out;
  }
}

function share(perMinute: number | undefined, sidecars: number): number {
  return perMinute === undefined ? 0 : Math.ceil(perMinute / sidecars);
}

function orgApp(orgId: string, app: string): string {
  return `${orgId}\u0000${app}`;
}

function add(counts: Map<string, number>, key: string, delta: number): void {
  const n = (counts.get(key) ?? 0) + delta;
  if (n > 0) counts.set(key, n);
  else counts.delete(key);
}
