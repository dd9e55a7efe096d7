import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
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
import { EventType } from "../../gen/aigw/v1/events_pb.js";

// Debian's chromium (.ci/run installs it); outside CI a machine without it skips, saying so.
const CHROMIUM = process.env.AIGW_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) throw new Error(`dashboard tests need Chromium at ${CHROMIUM} in CI`);
if (!haveChromium) console.warn(`skipping dashboard tests: no Chromium at ${CHROMIUM} (apt-get install chromium)`);

// Screenshots go to docs/ (referenced from the README) when AIGW_DASHBOARD_SCREENSHOTS=1,
// to a temporary folder otherwise, so a test run does not change the repository.
const SHOTS = process.env.AIGW_DASHBOARD_SCREENSHOTS
  ? fileURLToPath(new URL("../../docs/", import.meta.url))
  : mkdtempSync(join(tmpdir(), "aigw-dashboard-"));

const CHARTS = [
  "#chart-deliveries",
  "#chart-attempt-latency",
  "#chart-event-latency",
  "#chart-events",
  "#chart-tokens-model",
  "#chart-tokens-org",
  "#chart-cost-model",
  "#chart-cost-org",
];

// The dashboard in a real browser: charts from the store's rollups, tables, the live feed
// (Feed.Watch over connect-web) and actions through the Admin API, after real sidecar traffic.
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
    // A flaky model's first attempt fails (503), so failure reasons and retries show.
    receiver = await startTestReceiver({
      secret: TEST_SECRET,
      script: (attempt, body) => (attempt === 1 && body.model === "gpt-flaky" ? 503 : 200),
    });
    stack = await startTestStack(
      testConfigYaml({
        primaryUrl: receiver.url,
        extra: `budgets:
  - { org_id: org_test, limit_type: daily, budget_limit: 5, thresholds: [50, 80, 100] }
pricing:
  gpt-4o-mini:
    input: 150
    output: 600
  gpt-flaky:
    input: 1000
    output: 2000
`,
      }),
    );
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await receiver?.close();
  });

  const call = (model: string) =>
    fetch(`${stack.sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
    }).then((r) => r.text());

  const points = (page: Page, selector: string) =>
    page
      .locator(selector)
      .getAttribute("data-points")
      .then((v) => Number(v ?? 0));

  it("after sidecar traffic, every chart has data points and the tables fill, without a reload", async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    let loads = 0;
    try {
      await page.goto(`${stack.controlPlane.httpUrl}/#15m`);
      await expect.poll(() => page.locator("#live").getAttribute("class"), { timeout: 30_000 }).toContain("on");
      page.on("load", () => loads++);
      for (const model of ["gpt-4o-mini", "gpt-4o-mini", "gpt-flaky", "gpt-4o-mini", "gpt-flaky"]) await call(model);
      // Every completion delivered (the flaky ones on their second attempt).
      await waitFor("5 delivered webhooks", () => receiver.accepted().length >= 5, 60_000);
      for (const chart of CHARTS) {
        await expect.poll(() => points(page, chart), { timeout: 30_000, message: chart }).toBeGreaterThan(0);
      }
      await expect.poll(() => page.locator("#chart-deliveries .u-legend").textContent()).toContain("delivered");
      await expect.poll(() => page.locator("#chart-deliveries .u-legend").textContent()).toContain("retrying");
      await expect.poll(() => page.locator("#chart-tokens-model .u-legend").textContent()).toContain("gpt-flaky");
      await expect.poll(() => page.locator("#stats tbody").textContent(), { timeout: 30_000 }).toContain("primary");
      await expect.poll(() => page.locator("#failures tbody").textContent()).toContain("receiver answered 503");
      await expect.poll(() => page.locator("#queues tbody").textContent()).toContain("primary");
      await expect.poll(() => page.locator("#budgets tbody").textContent()).toContain("org_test");
      await expect.poll(() => page.locator("#budgets .bar").count()).toBeGreaterThan(0);
      await expect.poll(() => page.locator("#sidecars tbody").textContent(), { timeout: 30_000 }).toContain("e2e");
      await expect.poll(() => page.locator("#deliveries tbody").textContent()).toContain("delivered");
      // Another window reads other buckets of the same rollups.
      await page.click('.windows button[data-window="24h"]');
      await expect.poll(() => points(page, "#chart-events"), { timeout: 30_000 }).toBeGreaterThan(0);
      await page.click('.windows button[data-window="15m"]');
      await expect.poll(() => points(page, "#chart-deliveries"), { timeout: 30_000 }).toBeGreaterThan(0);
      expect(await page.locator("#error").textContent()).toBe("");
      await expect.poll(() => page.locator("#feed tbody").textContent()).toContain("gpt-flaky");
      await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });
      expect(errors).toEqual([]);
      expect(loads).toBe(0);
    } finally {
      await page.close();
    }
  });

  it("the live feed shows new events without a reload", async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    try {
      await page.goto(`${stack.controlPlane.httpUrl}/`);
      await expect.poll(() => page.locator("#live").getAttribute("class"), { timeout: 30_000 }).toContain("on");
      let loads = 0;
      page.on("load", () => loads++);
      await waitFor("a live event row", async () => {
        await call("gpt-4-live-feed");
        return (await page.locator("#feed tbody").textContent())?.includes("gpt-4-live-feed") ?? false;
      });
      expect(loads).toBe(0);
    } finally {
      await page.close();
    }
  });

  it("replaying a delivery from the page makes a new attempt; pause, disable (saying how many), replay of the window, test events and key rotation work from it", async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    try {
      await page.goto(`${stack.controlPlane.httpUrl}/`);
      const button = page.locator("#deliveries tbody tr:has(td.status-delivered) button.replay").first();
      await button.waitFor({ timeout: 30_000 });
      const id = (await button.getAttribute("data-id"))!;
      const original = await stack.controlPlane.store.getDelivery(id);
      const before = receiver.received.filter((r) => r.id === original!.delivery.eventId).length;
      await button.click();
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toContain(`replayed ${id} as dlv_`);
      const replayId = /as (dlv_\w+)/.exec((await page.locator("#action-result").textContent())!)![1]!;
      // A new delivery of the same event, attempted: the receiver sees the same webhook-id again.
      await waitFor("the replay's attempt", async () => {
        const replay = await stack.controlPlane.store.getDelivery(replayId);
        return replay?.delivery.status === "delivered" && replay.attempts.length === 1;
      });
      expect(receiver.received.filter((r) => r.id === original!.delivery.eventId).length).toBe(before + 1);
      await expect.poll(() => page.locator("#deliveries tbody").textContent(), { timeout: 30_000 }).toContain(replayId);

      // Pause and resume primary from its row.
      await page.click('#stats button[data-action="pause"][data-endpoint="primary"]');
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toMatch(/^paused primary: \d+ deliveries held$/);
      expect((await stack.controlPlane.store.getEndpoint("primary"))?.paused).toBe(true);
      await page.locator('#stats button[data-action="resume"][data-endpoint="primary"]').click({ timeout: 30_000 });
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toMatch(/^resumed primary: \d+ deliveries released$/);
      expect((await stack.controlPlane.store.getEndpoint("primary"))?.paused).toBe(false);

      // Held while paused, failed by disabling (the page says how many), sent by replaying the window.
      await page.locator('#stats button[data-action="pause"][data-endpoint="primary"]').click({ timeout: 30_000 });
      await expect.poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 }).toMatch(/^paused /);
      await call("gpt-held");
      const held = await waitFor("a held delivery to primary", async () => {
        const { deliveries } = await stack.controlPlane.store.listDeliveries({
          endpoint: "primary",
          status: "pending",
          pageSize: 100,
        });
        return deliveries.find((d) => d.eventType === EventType.COMPLETION);
      });
      await page.locator('#stats button[data-action="disable"][data-endpoint="primary"]').click({ timeout: 30_000 });
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toMatch(/^disabled primary: [1-9]\d* pending deliveries fail without an attempt$/);
      // The scheduler fails them a moment after the disable answers (on PostgreSQL results are
      // written in short batches): wait for it.
      await expect
        .poll(async () => (await stack.controlPlane.store.getDelivery(held.id))?.delivery.status, { timeout: 30_000 })
        .toBe("failed");
      await page.locator('#stats button[data-action="enable"][data-endpoint="primary"]').click({ timeout: 30_000 });
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toBe("enabled primary");
      await page.click("#replay-window-form button");
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toMatch(/^replayed [1-9]\d* failed and dead-lettered deliveries of the last /);
      await waitFor("the held event, replayed", () => receiver.accepted().some((r) => r.id === held.eventId), 60_000);
      // Twice is the same as once: nothing is queued again.
      await page.click("#replay-window-form button");
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toMatch(/^replayed 0 failed and dead-lettered deliveries of the last /);

      // A test event to primary.
      await page.selectOption("#test-endpoint", "primary");
      await page.selectOption("#test-type", "2");
      await page.click("#test-form button");
      await expect
        .poll(() => page.locator("#action-result").textContent(), { timeout: 30_000 })
        .toMatch(/^test event evt_\w+ sent: 1 delivery$/);

      // Key rotation: the new secret is shown once, and the receiver's next webhook verifies with it.
      page.once("dialog", (d) => void d.accept());
      await page.selectOption("#rotate-endpoint", "primary");
      await page.click("#rotate-form button");
      await expect.poll(() => page.locator("#secret").textContent(), { timeout: 30_000 }).toMatch(/^whsec_/);
      await page.screenshot({ path: join(SHOTS, "dashboard-actions.png"), fullPage: false });
      await page.click("#secret-done");
      expect(await page.locator("#secret").textContent()).toBe("");
      expect(await page.locator("#secret-box").isVisible()).toBe(false);
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
        expect(await page.locator("#scope").textContent()).toBe("operator: every org");
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
        await expect.poll(() => page.locator("#scope").textContent(), { timeout: 30_000 }).toBe("scoped to org acme");
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
