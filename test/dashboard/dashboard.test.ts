import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { runControlPlane } from "../../control-plane/run.js";
import { startTestStack, type TestStack, TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";

// Debian's chromium (.ci/run installs it); outside CI a machine without it skips, saying so.
const CHROMIUM = process.env.AIGW_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) throw new Error(`dashboard tests need Chromium at ${CHROMIUM} in CI`);
if (!haveChromium) console.warn(`skipping dashboard tests: no Chromium at ${CHROMIUM} (apt-get install chromium)`);

// The dashboard in a real browser: delivery analytics and the live feed from the Admin API.
describe.skipIf(!haveChromium)("dashboard", () => {
  let browser: Browser;
  let receiver: TestReceiver;
  let stack: TestStack;

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    stack = await startTestStack(testConfigYaml({ primaryUrl: receiver.url }));
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await receiver?.close();
  });

  it("shows endpoint analytics, recent deliveries and live events", async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${stack.controlPlane.httpUrl}/`);
      const call = () =>
        fetch(`${stack.sidecar.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
          body: JSON.stringify({ model: "gpt-4-dashboard", messages: [{ role: "user", content: "hi" }] }),
        }).then((r) => r.text());
      // Live events appear as they are stored (the feed starts at the live edge).
      await waitFor("a live event row", async () => {
        await call();
        return (await page.locator("#feed tbody tr").count()) > 0;
      });
      await expect
        .poll(() => page.locator("#feed tbody").textContent(), { timeout: 30_000 })
        .toContain("gpt-4-dashboard");
      await waitFor("a delivered webhook", () => receiver.accepted().length > 0);
      await expect
        .poll(() => page.locator("#stats tbody tr").first().textContent(), { timeout: 30_000 })
        .toMatch(/^primary[1-9]/);
      await expect
        .poll(() => page.locator("#deliveries tbody").textContent(), { timeout: 30_000 })
        .toContain("delivered");
      expect(await page.locator("#error").textContent()).toBe("");
    } finally {
      await page.close();
    }
  });

  describe("with admin tokens", () => {
    let fixture: ControlPlaneFixture;
    let open: Awaited<ReturnType<typeof runControlPlane>> | undefined;
    let location: TestStoreLocation | undefined;
    beforeAll(async () => {
      fixture = await startControlPlane(
        testConfigYaml({
          primaryUrl: receiver.url,
          extra: 'auth:\n  admin_tokens: ["dash-token"]\n  orgs:\n    acme:\n      admin_tokens: ["acme-dash"]\n',
        }),
      );
      location = await testStoreLocation();
      open = await runControlPlane({
        config: parseConfig(
          withStorageKey(
            testConfigYaml({
              primaryUrl: receiver.url,
              extra: 'auth:\n  admin_tokens: ["dash-token"]\n  sidecar_tokens: ["dash-sidecar"]\n',
            }),
            location,
          ),
          { file: "t.yaml", env: {} },
        ),
        store: location.url,
        grpc: "127.0.0.1:0",
        http: "0.0.0.0:0",
        logger: createLogger({ level: "silent" }),
      });
    });
    afterAll(async () => {
      await fixture?.close();
      await open?.close();
      await location?.cleanup();
    });

    it("on loopback: the page asks for the token for its data, then shows it", async () => {
      const page = await browser.newPage();
      try {
        await page.goto(`${fixture.cp.httpUrl}/`);
        await page.locator("#auth").waitFor({ state: "visible", timeout: 30_000 });
        await page.fill("#token", "dash-token");
        await page.click("#auth button");
        await expect.poll(() => page.locator("#stats tbody").textContent(), { timeout: 30_000 }).toContain("primary");
      } finally {
        await page.close();
      }
    });

    it("with an org's token: says which org, and shows that org's endpoints only", async () => {
      const operator = createClient(
        AdminService,
        createConnectTransport({
          baseUrl: fixture.cp.httpUrl,
          httpVersion: "1.1",
          interceptors: [
            (next) => (req) => {
              req.header.set("authorization", "Bearer dash-token");
              return next(req);
            },
          ],
        }),
      );
      await operator.createEndpoint({
        endpoint: { name: "acme-dash-hook", url: receiver.url, secret: TEST_SECRET, enabled: true, orgId: "acme" },
      });
      const page = await browser.newPage();
      try {
        await page.goto(`${fixture.cp.httpUrl}/`);
        await page.locator("#auth").waitFor({ state: "visible", timeout: 30_000 });
        await page.fill("#token", "acme-dash");
        await page.click("#auth button");
        await expect.poll(() => page.locator("#scope").textContent(), { timeout: 30_000 }).toContain("org acme");
        await expect
          .poll(() => page.locator("#stats tbody").textContent(), { timeout: 30_000 })
          .toContain("acme-dash-hook");
        expect(await page.locator("#stats tbody").textContent()).not.toContain("primary");
      } finally {
        await page.close();
      }
    });

    it("beyond loopback: the page itself needs the token, then shows the data", async () => {
      const page = await browser.newPage();
      try {
        const first = await page.goto(`${open!.httpUrl.replace("0.0.0.0", "127.0.0.1")}/`);
        // Without it, a form and nothing of the dashboard.
        expect(first?.status()).toBe(401);
        expect(await page.locator("#stats").count()).toBe(0);
        await page.locator("#auth").waitFor({ state: "visible", timeout: 30_000 });
        await page.fill("#token", "not-the-token");
        await page.click("#auth button");
        await expect.poll(() => page.locator("#error").textContent(), { timeout: 30_000 }).toBe("token not accepted");
        await page.fill("#token", "dash-token");
        await page.click("#auth button");
        await expect.poll(() => page.locator("#stats tbody").textContent(), { timeout: 30_000 }).toContain("primary");
        // The tab keeps the token: a reload goes straight back to the data.
        await page.reload();
        await expect.poll(() => page.locator("#stats tbody").textContent(), { timeout: 30_000 }).toContain("primary");
      } finally {
        await page.close();
      }
    });
  });
});
