import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { startTestStack, TEST_SECRET, type TestStack } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// A request's own webhook URL gets its completion even when no configured endpoint wants
// completions (so the sidecars' config says not to produce them for anyone else).
describe("x-aigw-webhook-url through a sidecar whose snapshot wants only errors", () => {
  let errors: TestReceiver;
  let stack: TestStack;

  beforeAll(async () => {
    errors = await startTestReceiver({ secret: TEST_SECRET });
    stack = await startTestStack(`
webhooks:
  errors:
    url: "${errors.url}"
    secret: "${TEST_SECRET}"
    events: ["error"]
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
`);
  });
  afterAll(async () => {
    await stack?.close();
    await errors?.close();
  });

  it("delivers the completion to the one-off endpoint and nothing to the error endpoint", async () => {
    const admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: stack.controlPlane.httpUrl, httpVersion: "1.1" }),
    );
    const { secret } = await admin.rotateSigningKey({ orgId: "org_test" });
    const oneOff = await startTestReceiver({ secret });
    try {
      // The sidecar has the control plane's snapshot (completions wanted by no endpoint).
      await waitFor("the sidecar's first snapshot", () => stack.sidecar.uplink.currentConfig() !== undefined);
      const res = await fetch(`${stack.sidecar.url}/v1/chat/completions`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: "Bearer sk-test",
          "x-aigw-webhook-url": `${oneOff.url}/mine`,
        },
        body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status).toBe(200);
      const requestId = res.headers.get("x-aigw-request-id");
      const hook = await waitFor("the one-off completion", () =>
        oneOff.accepted().find((w) => w.body.event === "completion" && w.body.request_id === requestId),
      );
      expect(hook.body.org_id).toBe("org_test");
      expect(errors.received).toEqual([]);
    } finally {
      await oneOff.close();
    }
  });
});
