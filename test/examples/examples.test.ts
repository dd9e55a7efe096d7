import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfigFile } from "../../control-plane/config/load.js";
import { REPO_ROOT } from "../support/processes.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";

const run = promisify(execFile);

// The examples stay true: their configs load, the client examples run against a real control plane.
describe("examples", () => {
  it("examples/local.yaml loads", () => {
    const local = loadConfigFile(join(REPO_ROOT, "examples/local.yaml"), {});
    expect(local.webhooks.primary?.url).toBe("http://127.0.0.1:9000/webhooks/ai");
    expect(local.security.requireHttps).toBe(false);
  });

  it("examples/orgs.yaml loads: an operator endpoint, two orgs' endpoints, org tokens", () => {
    const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const orgs = loadConfigFile(join(REPO_ROOT, "examples/orgs.yaml"), {
      AUDIT_WEBHOOK_SECRET: secret,
      ACME_WEBHOOK_SECRET: secret,
      GLOBEX_WEBHOOK_SECRET: secret,
      AIGW_ADMIN_TOKEN: "op-admin",
      AIGW_SIDECAR_TOKEN: "op-sidecar",
      ACME_ADMIN_TOKEN: "acme-admin",
      ACME_SIDECAR_TOKEN: "acme-sidecar",
    });
    expect(Object.entries(orgs.webhooks).map(([name, w]) => [name, w.orgId, w.apps])).toEqual([
      ["audit", "", []],
      ["acme", "acme", []],
      ["globex-chat", "globex", ["chat"]],
    ]);
    expect(orgs.auth.orgs.acme).toEqual({ adminTokens: ["acme-admin"], sidecarTokens: ["acme-sidecar"] });
  });

  describe("client examples against a control plane", () => {
    let receiver: TestReceiver;
    let fixture: ControlPlaneFixture;
    beforeAll(async () => {
      receiver = await startTestReceiver({ secret: TEST_SECRET });
      fixture = await startControlPlane(testConfigYaml({ primaryUrl: receiver.url }));
    });
    afterAll(async () => {
      await fixture?.close();
      await receiver?.close();
    });

    it("admin-connect.ts lists endpoints and sends a test event with the generated stubs", async () => {
      const { stdout } = await run(
        process.execPath,
        ["--import", "tsx", "examples/clients/admin-connect.ts", fixture.cp.httpUrl],
        {
          cwd: REPO_ROOT,
        },
      );
      expect(stdout).toMatch(/^primary\tenabled\thttp:\/\/127\.0\.0\.1:\d+\/hooks$/m);
      const id = /test event (evt_\w+) → 1 deliveries/.exec(stdout)?.[1];
      expect(id).toBeDefined();
      expect(stdout).toMatch(/dlv_\w+\tprimary\t/);
    });
  });
});
