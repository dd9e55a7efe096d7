import { afterEach, describe, expect, it } from "vitest";
import type { ConfigSnapshot } from "../../gen/aigw/v1/ingest_pb.js";
import { GatewayLimitShares } from "../../control-plane/ingest/gateway-limits.js";
import {
  type ControlPlaneFixture,
  openSidecarStream,
  type SidecarStream,
  startControlPlane,
} from "../support/control-plane.js";

const YAML = `
webhooks:
  primary:
    url: "https://hooks.example.com/primary"
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events:
  streaming:
    coalesce_ms: 40
  rate_limit:
    warning_share: 0.25
limits:
  - org_id: "org_l"
    requests_per_minute: 5
    tokens_per_minute: 1001
  - org_id: "org_l"
    app: "checkout"
    requests_per_minute: 3
  - org_id: "org_other"
    requests_per_minute: 100
`;

const limitsOf = (s: ConfigSnapshot) =>
  s.limits.map((l) => ({ app: l.app, rpm: l.requestsPerMinute, tpm: l.tokensPerMinute }));

// Gateway limits reach each sidecar as its share: the control plane divides a limit among
// the sidecars connected for that org (and app), rounding up, and pushes new shares as
// sidecars come and go.
describe("gateway limit shares in per-sidecar snapshots", () => {
  let fx: ControlPlaneFixture | undefined;
  const streams: SidecarStream[] = [];

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await fx?.close();
    fx = undefined;
  });

  const open = (sidecarId: string, orgId: string, app: string) => {
    if (!fx) throw new Error("no control plane");
    const s = openSidecarStream(fx.cp, { sidecarId, orgId, app });
    streams.push(s);
    return s;
  };

  it("gives one sidecar all of its org's limits, two sidecars half each (ceil), and all again when one leaves", async () => {
    fx = await startControlPlane(YAML);
    const checkout = open("sc_1", "org_l", "checkout");
    const alone = await checkout.nextConfig();
    expect(alone.streamingCoalesceMs).toBe(40);
    expect(alone.rateLimitWarningShare).toBe(0.25);
    // Only its own org's limits; the app limit because it is that app.
    expect(limitsOf(alone)).toEqual([
      { app: "", rpm: 5, tpm: 1001 },
      { app: "checkout", rpm: 3, tpm: 0 },
    ]);

    const search = open("sc_2", "org_l", "search");
    const second = await search.nextConfig();
    // The org limit is shared by both; the checkout limit is not this sidecar's.
    expect(limitsOf(second)).toEqual([{ app: "", rpm: 3, tpm: 501 }]);
    const halved = await checkout.nextConfig();
    expect(halved.version).toBeGreaterThan(alone.version);
    expect(limitsOf(halved)).toEqual([
      { app: "", rpm: 3, tpm: 501 },
      { app: "checkout", rpm: 3, tpm: 0 },
    ]);

    // Another org's sidecar changes nothing for org_l: no snapshot for it. The next one
    // checkout gets is the one from search leaving.
    const other = open("sc_3", "org_other", "x");
    expect(limitsOf(await other.nextConfig())).toEqual([{ app: "", rpm: 100, tpm: 0 }]);
    search.close();
    const whole = await checkout.nextConfig();
    expect(whole.version).toBeGreaterThan(halved.version);
    expect(limitsOf(whole)).toEqual([
      { app: "", rpm: 5, tpm: 1001 },
      { app: "checkout", rpm: 3, tpm: 0 },
    ]);
    expect(await fetch(`${fx.cp.httpUrl}/metrics`).then((r) => r.text())).toMatch(/aigw_sidecars_connected 2/);
  });
});

describe("GatewayLimitShares", () => {
  it("divides per (org, app) for app limits and rounds small limits up, never to 0", () => {
    let changes = 0;
    const shares = new GatewayLimitShares(
      [
        { orgId: "o", app: "", requestsPerMinute: 1 },
        { orgId: "o", app: "a", tokensPerMinute: 10 },
      ],
      () => changes++,
    );
    const a = { orgId: "o", app: "a" };
    shares.setSidecars([a, a, a, { orgId: "o", app: "b" }, { orgId: "elsewhere", app: "a" }]);
    expect(changes).toBe(1);
    // The same counts again: nothing to tell the sidecars.
    shares.setSidecars([a, { orgId: "elsewhere", app: "a" }, a, { orgId: "o", app: "b" }, a]);
    expect(changes).toBe(1);
    expect(shares.limitsFor({ orgId: "o", app: "a" }).map((l) => [l.requestsPerMinute, l.tokensPerMinute])).toEqual([
      [1, 0],
      [0, 4],
    ]);
    expect(shares.limitsFor({ orgId: "o", app: "b" })).toHaveLength(1);
    shares.setSidecars([a, { orgId: "o", app: "b" }]);
    expect(changes).toBe(2);
    expect(shares.limitsFor({ orgId: "o", app: "a" })[1]?.tokensPerMinute).toBe(10);
    expect(shares.connected("o")).toBe(2);
    expect(shares.connected("o", "a")).toBe(1);
  });
});
