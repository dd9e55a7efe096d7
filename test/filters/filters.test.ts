import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { type TestReceiver, startTestReceiver } from "../support/webhook-receiver.js";
import { TEST_SECRET } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import {
  type ControlPlaneFixture,
  completion,
  deliveryTargets,
  errorEvent,
  openSidecarStream,
  type SidecarStream,
  startControlPlane,
} from "../support/control-plane.js";

const BIG_SECRET = "whsec_YmlnLWVuZHBvaW50LXNlY3JldC1rZXktMzItYnl0ZXM=";

function yaml(primaryUrl: string, bigUrl: string, globalFilters: string): string {
  return `
webhooks:
  primary:
    url: "${primaryUrl}"
    secret: "${TEST_SECRET}"
  big:
    url: "${bigUrl}"
    secret: "${BIG_SECRET}"
    events: ["completion"]
    filters:
      completion:
        min_tokens: 1000
events:
  subscribe: ["completion", "error", "streaming"]
${globalFilters}
retry:
  initial_delay_ms: 50
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
`;
}

const PRODUCT_PAGE_FILTERS = `  filters:
    completion:
      models: ["gpt-4", "gpt-4-turbo"]
      min_tokens: 100
    error:
      severity: ["error", "critical"]`;

const receivedIds = (r: TestReceiver) => r.accepted().map((w) => w.id);

// Filters are evaluated once per event at ingest: an event outside them gets no delivery
// row at all, so "not delivered" is checked in the store right after the ack, and the
// receivers (verifying with standardwebhooks) see exactly the events that pass.
describe("filters and subscriptions", () => {
  let fx: ControlPlaneFixture | undefined;
  let primary: TestReceiver | undefined;
  let big: TestReceiver | undefined;
  const streams: SidecarStream[] = [];

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await fx?.close();
    await primary?.close();
    await big?.close();
    fx = primary = big = undefined;
  });

  async function start(globalFilters: string) {
    primary = await startTestReceiver({ secret: TEST_SECRET });
    big = await startTestReceiver({ secret: BIG_SECRET });
    fx = await startControlPlane(yaml(primary.url, big.url, globalFilters));
    const stream = openSidecarStream(fx.cp, { sidecarId: "sc_f", orgId: "org_t", app: "t" });
    streams.push(stream);
    return { fx, primary, big, stream };
  }

  it("drops events outside the config's global and per-endpoint filters", async () => {
    const { fx, primary, big, stream } = await start(PRODUCT_PAGE_FILTERS);
    const passes = completion("gpt-4", 150);
    const large = completion("gpt-4-turbo", 1500);
    const tooSmall = completion("gpt-4", 99);
    const otherModel = completion("gpt-3.5-turbo", 5000);
    const critical = errorEvent("critical");
    const warning = errorEvent("warning");
    const ack = await stream.sendBatch([passes, large, tooSmall, otherModel, critical, warning]);
    expect(ack.stored).toBe(6);

    expect(await deliveryTargets(fx.cp, passes.id)).toEqual(["primary"]);
    expect(await deliveryTargets(fx.cp, large.id)).toEqual(["big", "primary"]);
    expect(await deliveryTargets(fx.cp, critical.id)).toEqual(["primary"]);
    for (const dropped of [tooSmall, otherModel, warning]) {
      expect(await deliveryTargets(fx.cp, dropped.id)).toEqual([]);
    }
    await waitFor("primary's three webhooks", () => primary.accepted().length >= 3);
    await waitFor("big's webhook", () => big.accepted().length >= 1);
    expect(receivedIds(primary).sort()).toEqual([passes.id, large.id, critical.id].sort());
    expect(receivedIds(big)).toEqual([large.id]);
    expect(primary.rejected).toEqual([]);
  });

  it("applies endpoint filters and the global subscription changed through the Admin API at runtime", async () => {
    const { fx, primary, stream } = await start("");
    // The config file's per-endpoint filters are in the store, and the API shows them.
    const bigEp = await fx.admin.getEndpoint({ name: "big" });
    expect(bigEp.endpoint?.filters).toMatchObject({ completionModels: [], completionMinTokens: 1000 });

    await fx.admin.updateEndpoint({
      endpoint: { name: "primary", filters: { completionModels: ["claude-*"], completionMinTokens: 10 } },
      updateMask: { paths: ["filters"] },
    });
    const claude = completion("claude-3-5-sonnet", 20);
    const gpt = completion("gpt-4", 20);
    const tiny = completion("claude-3-haiku", 5);
    await stream.sendBatch([claude, gpt, tiny]);
    expect(await deliveryTargets(fx.cp, claude.id)).toEqual(["primary"]);
    expect(await deliveryTargets(fx.cp, gpt.id)).toEqual([]);
    expect(await deliveryTargets(fx.cp, tiny.id)).toEqual([]);

    // Global filters on top: errors of severity critical only.
    const updated = await fx.admin.updateSubscription({ filters: { errorSeverities: ["critical"] } });
    expect(updated.filters?.errorSeverities).toEqual(["critical"]);
    expect(updated.subscribe).toEqual([EventType.COMPLETION, EventType.ERROR, EventType.STREAMING]);
    const warning = errorEvent("warning");
    const critical = errorEvent("critical");
    await stream.sendBatch([warning, critical]);
    expect(await deliveryTargets(fx.cp, warning.id)).toEqual([]);
    expect(await deliveryTargets(fx.cp, critical.id)).toEqual(["primary"]);

    // Unsubscribing from completion drops them everywhere, whatever the endpoint filters.
    await fx.admin.updateSubscription({ subscribe: [EventType.ERROR] });
    expect((await fx.admin.getSubscription({})).subscribe).toEqual([EventType.ERROR]);
    const bigCompletion = completion("claude-3-opus", 5000);
    await stream.sendBatch([bigCompletion]);
    expect(await deliveryTargets(fx.cp, bigCompletion.id)).toEqual([]);

    await waitFor("primary's two webhooks", () => primary.accepted().length >= 2);
    expect(receivedIds(primary).sort()).toEqual([claude.id, critical.id].sort());
  });

  it("keeps filters and the subscription set through the Admin API across a restart, until the file's subscription changes", async () => {
    const { fx } = await start("");
    await fx.admin.createEndpoint({
      endpoint: {
        name: "runtime",
        url: "http://127.0.0.1:9/hooks",
        secret: TEST_SECRET,
        enabled: true,
        filters: { completionModels: ["gpt-4o", "gpt-4o"], errorSeverities: ["critical"] },
      },
    });
    await fx.admin.updateSubscription({ subscribe: [EventType.ERROR] });
    await fx.restart();
    const got = await fx.admin.getEndpoint({ name: "runtime" });
    // Repeats are dropped on the way in.
    expect(got.endpoint?.filters).toMatchObject({ completionModels: ["gpt-4o"], errorSeverities: ["critical"] });
    // Kept in the store (every replica routes with it), with the same file.
    expect((await fx.admin.getSubscription({})).subscribe).toEqual([EventType.ERROR]);
    // A file whose subscription changed applies again.
    const file = yaml(primary!.url, big!.url, "").replace(
      'subscribe: ["completion", "error", "streaming"]',
      'subscribe: ["completion", "error", "streaming", "budget"]',
    );
    await fx.restart(file);
    expect((await fx.admin.getSubscription({})).subscribe).toEqual([
      EventType.COMPLETION,
      EventType.ERROR,
      EventType.STREAMING,
      EventType.BUDGET,
    ]);
    const stream = openSidecarStream(fx.cp, { sidecarId: "sc_r", orgId: "org_t", app: "t" });
    streams.push(stream);
    const e4o = completion("gpt-4o", 1);
    const e4 = completion("gpt-4", 1);
    await stream.sendBatch([e4o, e4]);
    expect(await deliveryTargets(fx.cp, e4o.id)).toEqual(["primary", "runtime"]);
    expect(await deliveryTargets(fx.cp, e4.id)).toEqual(["primary"]);
  });

  it("answers INVALID_ARGUMENT naming the filter field", async () => {
    const { fx } = await start("");
    const refused = async (p: Promise<unknown>) => {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
      return (err as ConnectError).rawMessage;
    };
    expect(await refused(fx.admin.updateSubscription({ filters: { errorSeverities: ["error", "fatal"] } }))).toMatch(
      /^filters\.error_severities\[1\]: "fatal" is not a severity/,
    );
    expect(await refused(fx.admin.updateSubscription({ filters: { completionModels: ["gpt*4"] } }))).toMatch(
      /^filters\.completion_models\[0\]: .*trailing "\*"/,
    );
    expect(await refused(fx.admin.updateSubscription({ subscribe: [EventType.ERROR, 42 as EventType] }))).toMatch(
      /^subscribe\[1\]: unknown event type/,
    );
    expect(
      await refused(
        fx.admin.updateEndpoint({
          endpoint: { name: "primary", filters: { completionModels: [""] } },
          updateMask: { paths: ["filters"] },
        }),
      ),
    ).toMatch(/^endpoint\.filters\.completion_models\[0\]: must not be empty/);
    expect(
      await refused(
        fx.admin.createEndpoint({
          endpoint: {
            name: "x",
            url: "http://127.0.0.1:9/h",
            secret: TEST_SECRET,
            filters: { errorSeverities: ["loud"] },
          },
        }),
      ),
    ).toMatch(/^endpoint\.filters\.error_severities\[0\]/);
    // Nothing changed.
    expect((await fx.admin.getSubscription({})).filters?.errorSeverities).toEqual([]);
  });

  it("pushes a new snapshot to a connected sidecar when the subscription changes", async () => {
    const { fx, stream } = await start("");
    const first = await stream.nextConfig();
    expect(first.wantedEventTypes).toEqual([EventType.COMPLETION, EventType.ERROR, EventType.STREAMING]);

    await fx.admin.updateSubscription({ subscribe: [EventType.COMPLETION, EventType.RATE_LIMIT] });
    const second = await stream.nextConfig();
    expect(second.version).toBeGreaterThan(first.version);
    // rate_limit is subscribed, and primary takes every subscribed type.
    expect(second.wantedEventTypes).toEqual([EventType.COMPLETION, EventType.RATE_LIMIT]);

    // Endpoints follow too: with primary disabled only big (completion) is left.
    await fx.admin.updateEndpoint({
      endpoint: { name: "primary", enabled: false },
      updateMask: { paths: ["enabled"] },
    });
    const third = await stream.nextConfig();
    expect(third.version).toBeGreaterThan(second.version);
    expect(third.wantedEventTypes).toEqual([EventType.COMPLETION]);
  });
});
