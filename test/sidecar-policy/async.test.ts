import { afterEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { webhookBody } from "../../common/webhook-body.js";
import { AsyncRequests } from "../../sidecar/async/async-requests.js";
import { type Harness, startHarness, waitFor } from "../sidecar/harness.js";
import { CHAT, eventsOf, eventually, postChat, SettingsSource } from "./helpers.js";

const ASYNC = { prefer: "respond-async" };

interface Status {
  request_id: string;
  status: "received" | "processing" | "completed" | "failed";
  status_url: string;
  progress?: { elapsed_ms: number; tokens?: number };
  result?: { status_code: number; usage: unknown; body: unknown };
  error?: { message: string };
}

async function getStatus(h: Harness, url: string): Promise<{ status: number; json: Status }> {
  const res = await fetch(`${h.proxy.url}${url}`);
  return { status: res.status, json: (await res.json()) as Status };
}

function untilDone(h: Harness, url: string): Promise<Status> {
  return eventually(`${url} to finish`, async () => {
    const { json } = await getStatus(h, url);
    return json.status === "completed" || json.status === "failed" ? json : undefined;
  });
}

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("Prefer: respond-async", () => {
  it("answers 202 before the provider does, then reports the result by status URL and completion event", async () => {
    h = await startHarness();
    // The provider answers 4 s after the call: long enough that the 202 (and the status
    // check below) come before it on a busy machine too.
    const accepted = await postChat(h, { ...ASYNC, "x-mock-delay-ms": "4000", "x-mock-prompt-tokens": "30" });
    expect(accepted.status).toBe(202);
    expect(accepted.elapsedMs).toBeLessThan(4_000);
    const body = accepted.json as { request_id: string; status: string; status_url: string };
    expect(body).toEqual({
      request_id: expect.stringMatching(/^req_/),
      status: "received",
      status_url: `/aigw/v1/requests/${body.request_id}`,
    });
    expect(accepted.headers.get("x-aigw-request-id")).toBe(body.request_id);
    expect(accepted.headers.get("preference-applied")).toBe("respond-async");
    expect(accepted.headers.get("location")).toBe(body.status_url);

    // The provider has not answered yet: it waits 4 s after receiving the call.
    const during = await getStatus(h, body.status_url);
    expect(during.status).toBe(200);
    expect(during.json.status).toBe("processing");
    expect(during.json.progress?.elapsed_ms).toBeGreaterThanOrEqual(0);
    expect(during.json.result).toBeUndefined();
    expect(h.sink.events).toHaveLength(0);

    const done = await untilDone(h, body.status_url);
    const direct = await h.direct.chat.completions.create(CHAT as never, { headers: { "x-mock-prompt-tokens": "30" } });
    expect(done).toMatchObject({
      request_id: body.request_id,
      status: "completed",
      result: { status_code: 200, usage: { prompt_tokens: 30, completion_tokens: 5, total_tokens: 35 }, body: direct },
    });
    expect(done.progress).toBeUndefined();

    // The call went upstream as sent, minus the preference the sidecar honoured.
    const upstream = h.mock.requests[0]!;
    expect(upstream.headers.prefer).toBeUndefined();
    expect(upstream.headers.authorization).toBe("Bearer sk-test");
    expect(upstream.json).toEqual(CHAT);

    const [completion] = await waitFor("completion", () => {
      const c = eventsOf(h!.sink.events, "completion");
      return c.length > 0 ? c : undefined;
    });
    expect(completion).toMatchObject({ requestId: body.request_id, async: true, tokensUsed: 35, statusCode: 200 });
    expect(JSON.parse(completion!.responseJson)).toEqual(direct);
    expect(webhookBody(completion!.event).response).toEqual(direct);
  });

  it("shows the tokens streamed so far while a streamed call runs, and the stream's chunks as the result", async () => {
    h = await startHarness();
    const accepted = await postChat(
      h,
      { ...ASYNC, "x-mock-chunks": "12", "x-mock-chunk-delay-ms": "60" },
      {
        ...CHAT,
        stream: true,
      },
    );
    expect(accepted.status).toBe(202);
    const url = (accepted.json as { status_url: string }).status_url;
    const progress = await eventually("tokens in progress", async () => {
      const { json } = await getStatus(h!, url);
      return json.status === "processing" && (json.progress?.tokens ?? 0) > 0 ? json.progress : undefined;
    });
    expect(progress!.tokens).toBeLessThan(12);

    const done = await untilDone(h, url);
    expect(done.status).toBe("completed");
    const chunks = done.result!.body as Array<{ choices: Array<{ delta?: { content?: string } }>; usage?: unknown }>;
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("")).toBe(
      Array.from({ length: 12 }, () => "Hello").join(" "),
    );
    // The usage chunk aigw asked for stays in the async result.
    expect(done.result!.usage).toEqual({ prompt_tokens: 12, completion_tokens: 12, total_tokens: 24 });
    const [completion] = await waitFor("completion", () => {
      const c = eventsOf(h!.sink.events, "completion");
      return c.length > 0 ? c : undefined;
    });
    expect(completion).toMatchObject({ async: true, stream: true, completionTokens: 12 });
    expect(JSON.parse(completion!.responseJson)).toEqual(chunks);
  });

  it("reports a provider error as failed, with the provider's body, and an error event", async () => {
    h = await startHarness();
    const accepted = await postChat(h, { ...ASYNC, "x-mock-status": "500", "x-mock-error-message": "boom" });
    const url = (accepted.json as { status_url: string; request_id: string }).status_url;
    const done = await untilDone(h, url);
    expect(done).toMatchObject({
      status: "failed",
      error: { message: "upstream answered 500: boom" },
      result: { status_code: 500, body: { error: { message: "boom", type: "server_error" } } },
    });
    const [error] = await waitFor("error event", () => {
      const e = eventsOf(h!.sink.events, "error");
      return e.length > 0 ? e : undefined;
    });
    expect(error).toMatchObject({ requestId: done.request_id, errorType: "upstream_error", statusCode: 500 });
  });

  it("reports an unreachable upstream as failed with the gateway's 502", async () => {
    h = await startHarness({ upstreams: () => ({ openai: "http://127.0.0.1:1" }) });
    const accepted = await postChat(h, ASYNC);
    expect(accepted.status).toBe(202);
    const done = await untilDone(h, (accepted.json as { status_url: string }).status_url);
    expect(done.status).toBe("failed");
    expect(done.result?.status_code).toBe(502);
    expect(done.error?.message).toMatch(/^aigw: upstream unreachable/);
    await waitFor("error event", () =>
      eventsOf(h!.sink.events, "error")[0]?.errorType === "network" ? true : undefined,
    );
  });

  it("makes a pass-through call async too", async () => {
    h = await startHarness();
    const res = await fetch(`${h.proxy.url}/v1/models`, { headers: ASYNC });
    expect(res.status).toBe(202);
    const { status_url } = (await res.json()) as { status_url: string };
    const done = await untilDone(h, status_url);
    expect(done).toMatchObject({
      status: "completed",
      result: { status_code: 200, usage: null, body: { object: "list" } },
    });
  });

  it("builds the completion of an async call even when no subscription wants completions", async () => {
    const settings = new SettingsSource({ wantedEventTypes: new Set([EventType.RATE_LIMIT]) });
    h = await startHarness({ settings: settings.get });
    const accepted = await postChat(h, ASYNC);
    await waitFor("completion", () => (eventsOf(h!.sink.events, "completion").length === 1 ? true : undefined));
    expect(eventsOf(h.sink.events, "completion")[0]?.requestId).toBe(
      (accepted.json as { request_id: string }).request_id,
    );
  });

  it("gives up on calls still running when the proxy closes, instead of waiting for them", async () => {
    h = await startHarness();
    expect((await postChat(h, { ...ASYNC, "x-mock-delay-ms": "20000" })).status).toBe(202);
    await waitFor("the call upstream", () => (h!.mock.requests.length === 1 ? true : undefined));
    const t0 = Date.now();
    await h.proxy.close();
    expect(Date.now() - t0).toBeLessThan(5000);
    await h.mock.close();
    h = undefined;
  });

  it("keeps results in a bounded in-memory cache", () => {
    const requests = new AsyncRequests({ maxEntries: 2 });
    for (const id of ["req_a", "req_b", "req_c"]) requests.create(id, "POST", "/v1/chat/completions", undefined);
    expect(requests.get("req_a")).toBeUndefined();
    expect(requests.get("req_c")?.status).toBe("received");
    expect(requests.size).toBe(2);
  });

  it("answers 404 JSON for an unknown request id and 405 for other methods", async () => {
    h = await startHarness();
    const unknown = await getStatus(h, "/aigw/v1/requests/req_01J00000000000000000000000");
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({ error: { code: "not_found", message: expect.stringContaining("req_01J") } });
    const post = await fetch(`${h.proxy.url}/aigw/v1/requests/x`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    await post.arrayBuffer();
    // The sidecar's own paths are never proxied.
    const other = await fetch(`${h.proxy.url}/aigw/v2/anything`);
    expect(other.status).toBe(404);
    await other.arrayBuffer();
    expect(h.mock.requests).toHaveLength(0);
  });
});
