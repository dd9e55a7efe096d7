import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../control-plane/config/types.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";

// The config file's names meet the names orgs gave their endpoints with the Admin API: a
// file entry never takes over another org's endpoint. An org's entry gets its own endpoint
// (ORG/NAME to the operator); an operator entry (every org's events) is refused with what
// to do, since it would send every org's events to that org's receiver.

const base = `
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
webhooks:
  ops:
    url: "http://127.0.0.1:9/ops"
    secret: "${TEST_SECRET}"
`;

const entry = (org?: string) => `
  slack:
    url: "http://127.0.0.1:9/from-the-file"
    secret: "${TEST_SECRET}"
${org ? `    org_id: ${org}\n` : ""}`;

describe("the config file's names and the orgs' own", () => {
  let fx: ControlPlaneFixture;

  beforeAll(async () => {
    fx = await startControlPlane(base);
    await fx.admin.createEndpoint({
      endpoint: { name: "slack", url: "http://127.0.0.1:9/acme", secret: TEST_SECRET, enabled: true, orgId: "acme" },
    });
  });
  afterAll(async () => {
    await fx?.close();
  });

  const listed = async () => (await fx.admin.listEndpoints({})).endpoints.map((e) => [e.name, e.orgId, e.url]);

  it("refuses an operator entry named like another org's endpoint, saying what to do", async () => {
    const refused = await fx.restart(base + entry()).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as ConfigError).problems).toEqual([
      expect.objectContaining({
        path: "webhooks.slack",
        message: expect.stringContaining('org "acme" made an endpoint named "slack" with the Admin API'),
      }),
    ]);
    await fx.restart(base);
    expect(await listed()).toContainEqual(["slack", "acme", "http://127.0.0.1:9/acme"]);
  });

  it("gives another org's entry of that name its own endpoint, the same one on every start", async () => {
    for (let start = 0; start < 2; start++) {
      await fx.restart(base + entry("globex"));
      const all = await listed();
      expect(all.filter(([name]) => String(name).endsWith("slack"))).toEqual([
        ["globex/slack", "globex", "http://127.0.0.1:9/from-the-file"],
        ["slack", "acme", "http://127.0.0.1:9/acme"],
      ]);
    }
  });

  it("lets the org's own entry take its endpoint over, as the file always did", async () => {
    await fx.restart(base + entry("acme"));
    expect(await listed()).toContainEqual(["slack", "acme", "http://127.0.0.1:9/from-the-file"]);
  });
});
