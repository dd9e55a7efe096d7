import Anthropic from "@anthropic-ai/sdk";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET } from "../support/stack.js";
import { type ReceivedWebhook, startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

// The event catalogue end to end through real processes: `aigw control-plane` and `aigw sidecar`
// children, the mock provider, the real openai and @anthropic-ai/sdk clients, and a
// receiver verifying every webhook with standardwebhooks.
describe("the whole event catalogue through real processes", () => {
  let dir: string;
  let location: TestStoreLocation;
  let receiver: TestReceiver;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  const children: AigwProcess[] = [];
  let httpUrl: string;
  const sidecars: Record<string, string> = {};

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-catalogue-"));
    location = await testStoreLocation();
    // The first attempt of every streaming event with token_index 2 fails: order must hold anyway.
    receiver = await startTestReceiver({
      secret: TEST_SECRET,
      script: (attempt, body) => (body.event === "streaming" && body.token_index === 2 && attempt === 1 ? 503 : 200),
    });
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
    const config = join(dir, "config.yaml");
    writeFileSync(
      config,
      withStorageKey(
        `
webhooks:
  primary:
    url: "${receiver.url}"
    secret: "${TEST_SECRET}"
events:
  subscribe: ["completion", "error", "streaming", "budget", "rate_limit"]
  rate_limit:
    warning_share: 0.2
retry:
  initial_delay_ms: 20
  max_delay_ms: 200
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
budgets:
  - org_id: "org_budget"
    limit_type: "monthly"
    budget_limit: 0.01
    enforce: true
limits:
  - org_id: "org_limited"
    requests_per_minute: 2
`,
        location,
      ),
    );
    const cp = runAigw([
      "control-plane",
      "--config",
      config,
      "--store",
      location.url,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    children.push(cp);
    const ready = await cp.waitForLog("control plane ready");
    httpUrl = String(ready.http);
    for (const org of ["org_main", "org_budget", "org_limited"]) {
      const sc = runAigw([
        "sidecar",
        "--control-plane",
        String(ready.grpc),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        `openai=${provider.url}`,
        "--upstream",
        `anthropic=${provider.url}`,
        "--org",
        org,
        "--app",
        "catalogue",
        "--spool",
        join(dir, `spool-${org}`),
      ]);
      children.push(sc);
      sidecars[org] = String((await sc.waitForLog("sidecar ready")).url);
      // The sidecar has its first config snapshot (streaming wanted, budgets, limits).
      await sc.waitForLog("config snapshot applied");
    }
  });

  afterAll(async () => {
    for (const c of children.reverse()) {
      c.child.kill("SIGTERM");
      await c.exited;
    }
    await provider?.close();
    await receiver?.close();
    await location?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const hooks = (pred: (w: ReceivedWebhook) => boolean) => receiver.accepted().filter(pred);
  const openai = (org: string) => new OpenAI({ baseURL: `${sidecars[org]}/v1`, apiKey: "sk-test", maxRetries: 0 });
  const anthropic = () => new Anthropic({ baseURL: sidecars.org_main, apiKey: "sk-ant-test", maxRetries: 0 });

  it("streaming: one event per chunk, delivered in token_index order despite a failed attempt", async () => {
    const { data, response } = await openai("org_main")
      .chat.completions.create(
        { model: "gpt-4", messages: [{ role: "user", content: "count" }], stream: true },
        { headers: { "x-mock-chunks": "6", "x-mock-prompt-tokens": "9", "x-mock-completion-tokens": "6" } },
      )
      .withResponse();
    let text = "";
    for await (const chunk of data) text += chunk.choices[0]?.delta?.content ?? "";
    const requestId = response.headers.get("x-aigw-request-id");
    // Six content chunks, then the final chunk that carries finish_reason.
    await waitFor("the final streaming webhook and the completion", () => {
      const mine = hooks((w) => w.body.request_id === requestId);
      return (
        mine.some((w) => w.body.event === "streaming" && w.body.finish_reason !== null) &&
        mine.some((w) => w.body.event === "completion")
      );
    });
    const streamed = hooks((w) => w.body.request_id === requestId && w.body.event === "streaming");
    // In arrival order: every token_index once, ascending.
    expect(streamed.map((w) => w.body.token_index)).toEqual(streamed.map((_, i) => i));
    expect(streamed.filter((w) => w.body.content !== "")).toHaveLength(6);
    expect(streamed.map((w) => w.body.content).join("")).toBe(text);
    expect(streamed.at(-1)?.body.finish_reason).toBe("stop");
    expect(streamed.slice(0, -1).every((w) => w.body.finish_reason === null)).toBe(true);
    // token 2 really was retried: its failed attempt came before its success.
    expect(receiver.received.filter((w) => w.body.request_id === requestId && w.body.token_index === 2)).toHaveLength(
      2,
    );
    const completion = hooks((w) => w.body.request_id === requestId && w.body.event === "completion")[0];
    expect(completion?.body).toMatchObject({ prompt_tokens: 9, completion_tokens: 6, stream: true });
    // gpt-4 at $30/$60 per million tokens.
    expect(completion?.body.cost_usd).toBeCloseTo((9 * 30 + 6 * 60) / 1e6, 10);
  });

  it("anthropic: the real SDK, streamed usage merged, and 529 overloaded", async () => {
    const stream = anthropic().messages.stream(
      { model: "claude-3-5-haiku-latest", max_tokens: 100, messages: [{ role: "user", content: "hi" }] },
      { headers: { "x-mock-prompt-tokens": "25", "x-mock-completion-tokens": "40" } },
    );
    const final = await stream.finalMessage();
    expect(final.usage.output_tokens).toBe(40);
    const completion = await waitFor(
      "the anthropic completion",
      () => hooks((w) => w.body.event === "completion" && w.body.provider === "anthropic")[0],
    );
    expect(completion.body).toMatchObject({ prompt_tokens: 25, completion_tokens: 40, tokens_used: 65, stream: true });
    expect(completion.body.pricing_unknown).toBeUndefined();

    const err = await anthropic()
      .messages.create(
        { model: "claude-3-5-haiku-latest", max_tokens: 10, messages: [{ role: "user", content: "hi" }] },
        { headers: { "x-mock-status": "529" } },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).status).toBe(529);
    const errorHook = await waitFor(
      "the 529 error webhook",
      () => hooks((w) => w.body.event === "error" && w.body.status_code === 529)[0],
    );
    expect(errorHook.body).toMatchObject({ error_type: "rate_limit", provider: "anthropic" });
  });

  it("rate limits from the provider: 429 with headers, and one warning while remaining stays low", async () => {
    const err = await openai("org_main")
      .chat.completions.create(
        { model: "gpt-4", messages: [{ role: "user", content: "x" }] },
        {
          headers: {
            "x-mock-status": "429",
            "x-mock-retry-after": "7",
            "x-mock-ratelimit-limit-requests": "100",
            "x-mock-ratelimit-remaining-requests": "0",
            "x-mock-ratelimit-reset-requests": "7s",
          },
        },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const hit = await waitFor(
      "the rate_limit webhook for the 429",
      () => hooks((w) => w.body.event === "rate_limit" && w.body.status_code === 429)[0],
    );
    expect(hit.body).toMatchObject({ source: "upstream", limit_type: "requests", remaining: 0, retry_after: 7 });

    const low = { "x-mock-ratelimit-limit-tokens": "10000", "x-mock-ratelimit-remaining-tokens": "500" };
    for (let i = 0; i < 3; i++) {
      await openai("org_main").chat.completions.create(
        { model: "gpt-4", messages: [{ role: "user", content: "x" }] },
        { headers: low },
      );
    }
    const warnings = await waitFor("the low-remaining warning", () => {
      const w = hooks(
        (x) => x.body.event === "rate_limit" && x.body.warning === true && x.body.limit_type === "tokens",
      );
      return w.length > 0 ? w : undefined;
    });
    // Three requests while low, one warning; give stragglers a moment to prove it stays one.
    await new Promise((r) => setTimeout(r, 300));
    expect(
      hooks((x) => x.body.event === "rate_limit" && x.body.warning === true && x.body.limit_type === "tokens"),
    ).toHaveLength(warnings.length);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.body).toMatchObject({ remaining: 500, limit: 10000, source: "upstream" });
  });

  it("a stream cut midway still reports its partial usage", async () => {
    const { data, response } = await openai("org_main")
      .chat.completions.create(
        { model: "gpt-4", messages: [{ role: "user", content: "x" }], stream: true },
        { headers: { "x-mock-chunks": "10", "x-mock-cut-after": "3" } },
      )
      .withResponse();
    await (async () => {
      for await (const _ of data) {
        // read until the cut
      }
    })().catch(() => {});
    const requestId = response.headers.get("x-aigw-request-id");
    const completion = await waitFor(
      "the cut stream's completion",
      () => hooks((w) => w.body.request_id === requestId && w.body.event === "completion")[0],
    );
    expect(completion.body.finish_reason).toBe("upstream_disconnected");
    expect(Number(completion.body.completion_tokens)).toBeGreaterThan(0);
  });

  it("budgets: thresholds fire once each, then enforcement refuses the org's calls", async () => {
    const call = () =>
      openai("org_budget").chat.completions.create(
        { model: "gpt-4", messages: [{ role: "user", content: "x" }] },
        { headers: { "x-mock-prompt-tokens": "100", "x-mock-completion-tokens": "100" } },
      );
    await call(); // $0.009 of $0.01: 50, 80 and 90 fire
    await waitFor("three budget webhooks", () => hooks((w) => w.body.event === "budget").length === 3);
    await call(); // $0.018: 100 fires
    await waitFor("the 100% budget webhook", () => hooks((w) => w.body.event === "budget").length === 4);
    const budgets = hooks((w) => w.body.event === "budget");
    expect(budgets.map((w) => w.body.threshold).sort((a, b) => Number(a) - Number(b))).toEqual([50, 80, 90, 100]);
    expect(budgets[0]?.body).toMatchObject({ org_id: "org_budget", limit_type: "monthly", budget_limit: 0.01 });

    // Enforced: once the sidecar has the new snapshot, calls are refused without reaching the provider.
    const before = provider.requests.length;
    const refused = await waitFor("the sidecar to refuse", async () => {
      const e = await call().then(
        () => undefined,
        (x: unknown) => x,
      );
      return e instanceof OpenAI.RateLimitError ? e : undefined;
    });
    expect(refused.message).toMatch(/budget exceeded/);
    const errorHook = await waitFor(
      "the budget_exceeded error webhook",
      () => hooks((w) => w.body.event === "error" && w.body.error_type === "budget_exceeded")[0],
    );
    expect(errorHook.body.org_id).toBe("org_budget");
    expect(provider.requests.length - before).toBeLessThanOrEqual(2);

    const admin = createClient(AdminService, createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" }));
    const { budgets: listed } = await admin.listBudgets({});
    const b = listed.find((x) => x.orgId === "org_budget");
    expect(b?.firedThresholds).toEqual([50, 80, 90, 100]);
    expect(b?.currentSpend).toBeGreaterThanOrEqual(0.018 - 1e-9);
  });

  it("gateway limits: the third request in a minute is refused with a rate_limit webhook", async () => {
    const client = openai("org_limited");
    const ask = () => client.chat.completions.create({ model: "gpt-4", messages: [{ role: "user", content: "x" }] });
    await ask();
    await ask();
    const err = await ask().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const hook = await waitFor(
      "the gateway rate_limit webhook",
      () => hooks((w) => w.body.event === "rate_limit" && w.body.source === "gateway")[0],
    );
    expect(hook.body).toMatchObject({ org_id: "org_limited", limit_type: "requests", limit: 2, remaining: 0 });
  });

  it("async: 202 at once, then the result by webhook and by status URL", async () => {
    const started = Date.now();
    const res = await fetch(`${sidecars.org_main}/v1/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: "Bearer sk-test",
        prefer: "respond-async",
        "x-mock-delay-ms": "800",
      },
      body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "later" }] }),
    });
    expect(res.status).toBe(202);
    expect(Date.now() - started).toBeLessThan(800);
    const accepted = (await res.json()) as { request_id: string; status_url: string };
    const first = (await fetch(`${sidecars.org_main}${accepted.status_url}`).then((r) => r.json())) as {
      status: string;
    };
    expect(["received", "processing"]).toContain(first.status);

    const hook = await waitFor(
      "the async completion webhook",
      () => hooks((w) => w.body.request_id === accepted.request_id && w.body.event === "completion")[0],
    );
    expect((hook.body.response as { object?: string }).object).toBe("chat.completion");
    const done = (await fetch(`${sidecars.org_main}${accepted.status_url}`).then((r) => r.json())) as {
      status: string;
      result: { status_code: number; body: { choices: unknown[] } };
    };
    expect(done.status).toBe("completed");
    expect(done.result.status_code).toBe(200);
    expect(done.result.body.choices).toHaveLength(1);
  });

  it("x-aigw-webhook-url: a one-off endpoint gets the request's events, signed with the org key", async () => {
    const admin = createClient(AdminService, createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" }));
    const { secret } = await admin.rotateSigningKey({ orgId: "org_main" });
    const oneOff = await startTestReceiver({ secret });
    try {
      const { response } = await openai("org_main")
        .chat.completions.create(
          { model: "gpt-4", messages: [{ role: "user", content: "x" }] },
          { headers: { "x-aigw-webhook-url": `${oneOff.url}/just-this-one` } },
        )
        .withResponse();
      const requestId = response.headers.get("x-aigw-request-id");
      const hook = await waitFor("the one-off webhook", () =>
        oneOff.accepted().find((w) => w.body.request_id === requestId && w.body.event === "completion"),
      );
      expect(hook.body.org_id).toBe("org_main");
      expect(oneOff.rejected).toEqual([]);
    } finally {
      await oneOff.close();
    }
  });
});
