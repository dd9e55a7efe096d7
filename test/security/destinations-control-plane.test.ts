import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { DeliveryStatus } from "../../gen/aigw/v1/admin_pb.js";
import { rpcErrorCode } from "../../common/rpc-errors.js";
import { oneOffEndpointName } from "../../control-plane/routing/one-off.js";
import {
  type ControlPlaneFixture,
  completion,
  deliveryTargets,
  openSidecarStream,
  startControlPlane,
} from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

const yaml = (allowedNetworks: string) => `
events:
  subscribe: ["completion", "error"]
retry:
  initial_delay_ms: 50
security:
  require_https: false
  allowed_networks: ${allowedNetworks}
`;

// The IPv6 spellings of 127.0.0.1 that the issue saw dialled: through a real control plane
// (Admin API, store, scheduler, piscina worker) they are refused before any connection.
describe("destinations through a real control plane", () => {
  let fx: ControlPlaneFixture | undefined;
  let receiver: TestReceiver | undefined;
  afterEach(async () => {
    await fx?.close();
    await receiver?.close();
    fx = undefined;
    receiver = undefined;
  });

  it("never connects to [::127.0.0.1] or [64:ff9b::7f00:1] once 127.0.0.0/8 is no longer allowed", async () => {
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    const port = new URL(receiver.url).port;
    const forms = {
      mapped: `http://[::ffff:127.0.0.1]:${port}/hooks`,
      compatible: `http://[::127.0.0.1]:${port}/hooks`,
      nat64: `http://[64:ff9b::7f00:1]:${port}/hooks`,
    };
    // With 127.0.0.0/8 allowed, every form of 127.0.0.1 is accepted, and the mapped one
    // (which a dual-stack socket really routes to 127.0.0.1) is delivered.
    fx = await startControlPlane(yaml('["127.0.0.0/8"]'));
    for (const [name, url] of Object.entries(forms)) {
      await fx.admin.createEndpoint({ endpoint: { name, url, secret: TEST_SECRET, enabled: true } });
    }
    await fx.admin.sendTestEvent({ endpoint: "mapped" });
    await waitFor("the mapped address delivered", () => receiver!.accepted().length === 1);

    // The operator tightens the rule; the stored endpoints are judged at connect time.
    await fx.restart(yaml("[]"));
    for (const name of Object.keys(forms)) {
      const sent = await fx.admin.sendTestEvent({ endpoint: name });
      const id = sent.deliveryIds[0]!;
      const delivery = await waitFor(`the ${name} delivery to end`, async () => {
        const d = (await fx!.admin.getDelivery({ id })).delivery;
        return d && d.status !== DeliveryStatus.PENDING ? d : undefined;
      });
      expect(delivery.status, name).toBe(DeliveryStatus.FAILED);
      // One attempt, refused by the rule rather than failed by the network: nothing was dialled.
      expect(delivery.attemptCount, name).toBe(1);
      expect(delivery.lastError, name).toMatch(
        /^AIGW_DESTINATION_REFUSED: destination \S+ carries 127\.0\.0\.1, a loopback address; allow it with security\.allowed_networks$/,
      );
    }
    expect(receiver.received).toHaveLength(1);

    // New endpoints and per-request URLs in those forms are refused up front.
    for (const [name, url] of Object.entries(forms)) {
      const err = await fx.admin
        .createEndpoint({ endpoint: { name: `${name}-2`, url, secret: TEST_SECRET } })
        .then(() => undefined, ConnectError.from);
      expect(err?.code, name).toBe(Code.InvalidArgument);
      expect(err && rpcErrorCode(err), name).toBe("AIGW_DESTINATION_REFUSED");
    }
    expect((await fx.admin.listEndpoints({})).endpoints.map((e) => e.name).sort()).toEqual([
      "compatible",
      "mapped",
      "nat64",
    ]);
    const stream = openSidecarStream(fx.cp, { sidecarId: "sc_1", orgId: "org_1", app: "a" });
    try {
      const events = Object.values(forms).map((webhookUrl) => completion("gpt-4", 10, { orgId: "org_1", webhookUrl }));
      expect((await stream.sendBatch(events)).stored).toBe(events.length);
      // Routed as usual to the operator's endpoints, but no one-off endpoint was made.
      for (const event of events) {
        expect((await deliveryTargets(fx.cp, event.id)).filter((n) => n.startsWith("oneoff-"))).toEqual([]);
      }
      for (const url of Object.values(forms)) {
        expect(await fx.cp.store.getEndpoint(oneOffEndpointName("org_1", url))).toBeUndefined();
      }
    } finally {
      stream.close();
    }
    expect(receiver.received).toHaveLength(1);
  });
});
