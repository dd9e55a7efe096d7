import OpenAI from "openai";
import { Webhook as Svix } from "svix";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { BACKUP_SECRET, startTestStack, TEST_SECRET, type TestStack, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";

// The first complete path: the real openai client calls the sidecar, the mock provider
// answers, the control plane stores the event and a receiver verifying with
// standardwebhooks gets the signed webhook.
describe("from an app's OpenAI call to a signed webhook", () => {
  let receiver: TestReceiver;
  let stack: TestStack;
  let client: OpenAI;

  beforeAll(async () => {
    receiver = await startTestReceiver({ secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" });
    stack = await startTestStack(testConfigYaml({ primaryUrl: receiver.url }));
    client = new OpenAI({ baseURL: `${stack.sidecar.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
  });

  afterAll(async () => {
    await stack?.close();
    await receiver?.close();
  });

  const webhookFor = (requestId: string, event = "completion") =>
    waitFor(`a ${event} webhook for ${requestId}`, () =>
      receiver.accepted().find((w) => w.body.request_id === requestId && w.body.event === event),
    );

  it("delivers a completion webhook with the provider's exact token counts", async () => {
    const { data, response } = await client.chat.completions
      .create(
        { model: "gpt-4", messages: [{ role: "user", content: "Hello" }] },
        { headers: { "x-mock-prompt-tokens": "321", "x-mock-completion-tokens": "1029" } },
      )
      .withResponse();
    expect(data.usage?.prompt_tokens).toBe(321);
    const requestId = response.headers.get("x-aigw-request-id");
    expect(requestId).toMatch(/^req_/);

    const hook = await webhookFor(requestId as string);
    expect(hook.body).toMatchObject({
      event: "completion",
      request_id: requestId,
      model: data.model,
      tokens_used: 1350,
      prompt_tokens: 321,
      completion_tokens: 1029,
      org_id: "org_test",
      app: "e2e",
      provider: "openai",
    });
    expect(hook.body.latency_ms).toBeTypeOf("number");
    expect(Date.parse(String(hook.body.timestamp))).not.toBeNaN();
    // Standard Webhooks headers, plus the configured signature header with the same value.
    expect(hook.headers["webhook-id"]).toBe(hook.body.id);
    expect(hook.headers["x-webhook-signature"]).toBe(hook.headers["webhook-signature"]);
    expect(hook.headers["content-type"]).toMatch(/^application\/json/);
    expect(hook.headers["user-agent"]).toMatch(/^aigw\//);
    expect(Math.abs(hook.timestamp - Date.now() / 1000)).toBeLessThan(120);
    expect(receiver.rejected).toEqual([]);

    // DESIGN.md: receivers verify with standardwebhooks (the receiver above), svix, or
    // openai's webhooks.unwrap, unchanged.
    const headers = {
      "webhook-id": String(hook.headers["webhook-id"]),
      "webhook-timestamp": String(hook.headers["webhook-timestamp"]),
      "webhook-signature": String(hook.headers["webhook-signature"]),
    };
    expect(new Svix(TEST_SECRET).verify(hook.raw, headers)).toMatchObject({ request_id: requestId });
    await expect(client.webhooks.verifySignature(hook.raw, headers, TEST_SECRET)).resolves.toBeUndefined();
    await expect(client.webhooks.verifySignature(hook.raw, headers, BACKUP_SECRET)).rejects.toThrow();
  });

  it("streams unchanged to the app and reports the stream's usage", async () => {
    const { data: stream, response } = await client.chat.completions
      .create(
        { model: "gpt-4", messages: [{ role: "user", content: "Hi" }], stream: true },
        { headers: { "x-mock-chunks": "7", "x-mock-prompt-tokens": "40", "x-mock-completion-tokens": "77" } },
      )
      .withResponse();
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    // The client did not ask for usage: the sidecar asked upstream and took the extra chunk out again.
    expect(chunks.some((c) => c.usage)).toBe(false);
    expect(chunks.filter((c) => c.choices[0]?.delta?.content).length).toBe(7);

    const requestId = response.headers.get("x-aigw-request-id") as string;
    const hook = await webhookFor(requestId);
    expect(hook.body).toMatchObject({ prompt_tokens: 40, completion_tokens: 77, tokens_used: 117, stream: true });
    expect(hook.body.ttft_ms).toBeTypeOf("number");
  });

  it("turns a provider's 429 into an error webhook", async () => {
    const err = await client.chat.completions
      .create(
        { model: "gpt-4", messages: [{ role: "user", content: "Hi" }] },
        { headers: { "x-mock-status": "429", "x-mock-retry-after": "60" } },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const requestId = (err as InstanceType<typeof OpenAI.RateLimitError>).headers?.get("x-aigw-request-id") as string;
    const hook = await webhookFor(requestId, "error");
    expect(hook.body).toMatchObject({
      error_type: "rate_limit",
      status_code: 429,
      retry_after: 60,
      severity: "warning",
    });
    expect(String(hook.body.error_message)).not.toBe("");
  });
});
