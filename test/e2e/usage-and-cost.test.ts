import Anthropic from "@anthropic-ai/sdk";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { startTestStack, TEST_SECRET, type TestStack, testConfigYaml } from "../support/stack.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// Cache and reasoning tokens from an app's call to the webhook and the budget: the real
// openai and @anthropic-ai/sdk clients call the sidecar, the mock answers with provider-
// shaped usage, the control plane prices it with the built-in list prices, and a receiver
// verifying with standardwebhooks gets the signed bodies.
describe("cache and reasoning tokens: webhooks, cost_usd and budgets", () => {
  let receiver: TestReceiver;
  let stack: TestStack;
  let openai: OpenAI;
  let anthropic: Anthropic;

  beforeAll(async () => {
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    const budgets = `budgets:\n  - { org_id: org_test, limit_type: daily, budget_limit: 0.4, thresholds: [50] }\n`;
    stack = await startTestStack(testConfigYaml({ primaryUrl: receiver.url, extra: budgets }), { anthropic: true });
    openai = new OpenAI({ baseURL: `${stack.sidecar.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
    anthropic = new Anthropic({ baseURL: stack.sidecar.url, apiKey: "sk-ant-test", maxRetries: 0 });
  });

  afterAll(async () => {
    await stack?.close();
    await receiver?.close();
  });

  const completionFor = (requestId: string | null) =>
    waitFor(`a completion webhook for ${requestId}`, () =>
      receiver.accepted().find((w) => w.body.event === "completion" && w.body.request_id === requestId),
    ).then((w) => w.body);
  const admin = () =>
    createClient(AdminService, createConnectTransport({ baseUrl: stack.controlPlane.httpUrl, httpVersion: "1.1" }));
  const costs: number[] = [];

  it("a cached-prompt chat completion: cache_read_tokens, and cached input at its own price", async () => {
    const { data, response } = await openai.chat.completions
      .create(
        { model: "gpt-4.1", messages: [{ role: "user", content: "Summarise the attached manual" }] },
        {
          headers: {
            "x-mock-prompt-tokens": "100000",
            "x-mock-cached-tokens": "80000",
            "x-mock-completion-tokens": "2000",
          },
        },
      )
      .withResponse();
    expect(data.usage?.prompt_tokens_details?.cached_tokens).toBe(80_000);
    const body = await completionFor(response.headers.get("x-aigw-request-id"));
    expect(body).toMatchObject({
      provider: "openai",
      model: "gpt-4.1",
      tokens_used: 102_000,
      prompt_tokens: 100_000,
      completion_tokens: 2000,
      cache_read_tokens: 80_000,
      reasoning_tokens: 0,
      // gpt-4.1: 20k uncached × $2 + 80k cached × $0.50 + 2k output × $8, per million.
      cost_usd: 0.096,
    });
    expect(body).not.toHaveProperty("usage_known");
    expect(body).not.toHaveProperty("cache_write_tokens");
    costs.push(body.cost_usd as number);
  });

  it("a streamed reasoning call on the Responses API: reasoning_tokens, billed as output", async () => {
    const { data: stream, response } = await openai.responses
      .create(
        { model: "o4-mini", input: "Prove there are infinitely many primes", stream: true },
        {
          headers: {
            "x-mock-prompt-tokens": "1000",
            "x-mock-completion-tokens": "5000",
            "x-mock-reasoning-tokens": "4000",
          },
        },
      )
      .withResponse();
    let usage: OpenAI.Responses.ResponseUsage | undefined;
    for await (const event of stream) if (event.type === "response.completed") usage = event.response.usage;
    expect(usage?.output_tokens_details.reasoning_tokens).toBe(4000);
    const body = await completionFor(response.headers.get("x-aigw-request-id"));
    expect(body).toMatchObject({
      model: "o4-mini",
      stream: true,
      prompt_tokens: 1000,
      completion_tokens: 5000,
      reasoning_tokens: 4000,
      cache_read_tokens: 0,
      tokens_used: 6000,
      // o4-mini: 1k input × $1.10 + 5k output (4k of it reasoning) × $4.40, per million.
      cost_usd: 0.0231,
    });
    costs.push(body.cost_usd as number);
  });

  it("a streamed Anthropic call writing and reading the prompt cache: each priced at its rate", async () => {
    const stream = anthropic.messages.stream(
      {
        model: "claude-sonnet-4-5",
        max_tokens: 1024,
        messages: [{ role: "user", content: "Again, about the manual" }],
      },
      {
        headers: {
          "x-mock-prompt-tokens": "50",
          "x-mock-cache-read-tokens": "10000",
          "x-mock-cache-creation-tokens": "20000",
          "x-mock-cache-write-1h-tokens": "5000",
          "x-mock-completion-tokens": "1000",
        },
      },
    );
    const final = await stream.finalMessage();
    expect(final.usage).toMatchObject({ input_tokens: 50, cache_read_input_tokens: 10_000 });
    const { response } = await stream.withResponse();
    const body = await completionFor(response.headers.get("x-aigw-request-id"));
    expect(body).toMatchObject({
      provider: "anthropic",
      model: "claude-sonnet-4-5",
      // Every input token, as for OpenAI: Anthropic's input_tokens + cache writes + reads.
      prompt_tokens: 30_050,
      cache_read_tokens: 10_000,
      cache_write_tokens: 20_000,
      cache_write_1h_tokens: 5000,
      completion_tokens: 1000,
      tokens_used: 31_050,
      // claude-sonnet-4-5 per million: 50 × $3 + 10k reads × $0.30 + 15k five-minute writes
      // × $3.75 + 5k one-hour writes × $6 + 1k output × $15.
      cost_usd: 0.1044,
    });
    costs.push(body.cost_usd as number);
  });

  it("a stream cut before its usage: usage_known false, the estimate priced, and counted in /metrics", async () => {
    const { data: stream, response } = await openai.chat.completions
      .create(
        { model: "gpt-4.1", messages: [{ role: "user", content: "Hi" }], stream: true },
        { headers: { "x-mock-chunks": "10", "x-mock-cut-after": "3" } },
      )
      .withResponse();
    await expect(
      (async () => {
        for await (const _ of stream) {
          // read until the cut
        }
      })(),
    ).rejects.toThrow();
    const body = await completionFor(response.headers.get("x-aigw-request-id"));
    expect(body).toMatchObject({
      finish_reason: "upstream_disconnected",
      usage_known: false,
      prompt_tokens: 0,
      completion_tokens: 3,
      tokens_used: 3,
      cost_usd: 0.000024,
    });
    expect(body).not.toHaveProperty("cache_read_tokens");
    costs.push(body.cost_usd as number);
    const metrics = await (await fetch(`${stack.controlPlane.httpUrl}/metrics`)).text();
    expect(metrics).toContain('aigw_usage_unknown_total{provider="openai",model="gpt-4.1"} 1');
  });

  it("the budget counts what the webhooks said each call cost, and fires its threshold", async () => {
    expect(costs).toHaveLength(4);
    const spent = costs.reduce((a, b) => a + b, 0);
    const [budget] = (await admin().listBudgets({})).budgets;
    expect(budget?.currentSpend).toBeCloseTo(spent, 9);
    // $0.223524 of $0.40: past 50 %.
    const hook = await waitFor("the budget webhook", () => receiver.accepted().find((w) => w.body.event === "budget"));
    expect(hook.body).toMatchObject({ org_id: "org_test", threshold: 50, limit_type: "daily", budget_limit: 0.4 });
    expect(hook.body.current_spend as number).toBeGreaterThanOrEqual(0.2);
    expect(receiver.rejected).toEqual([]);
  });
});
