import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it } from "vitest";
import { createDeliveryPool, type DeliveryPool } from "../../control-plane/delivery/pool.js";
import { newEventId } from "../../common/ids.js";
import { USER_AGENT } from "../../common/version.js";
import { EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { startTestServer, type TestServer } from "./helpers.js";

const SECRET = "whsec_" + Buffer.from("pool-test-secret-0123456789abcdef").toString("base64");

/** A stored event as the store hands it to the pool; `marker` is its request id (visible in the body). */
function eventBytes(marker: string): Uint8Array {
  return toBinary(
    EventSchema,
    create(EventSchema, {
      id: newEventId(),
      orgId: "org_pool",
      app: "pool",
      provider: "openai",
      time: timestampNow(),
      payload: { case: "completion", value: { requestId: marker, model: "gpt-4", tokensUsed: 1 } },
    }),
  );
}
let pool: DeliveryPool | undefined;
let server: TestServer | undefined;
let tempDir: string | undefined;

afterEach(async () => {
  await pool?.close();
  await server?.close();
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  pool = server = tempDir = undefined;
});

describe("delivery pool", () => {
  it("runs signed deliveries in worker threads (the .ts worker under vitest)", async () => {
    server = await startTestServer((_req, res) => res.writeHead(200).end("ok"));
    pool = createDeliveryPool({ maxThreads: 2, concurrentTasksPerWorker: 8 });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        pool!.run({
          deliveryId: `dlv_${i}`,
          url: server!.url,
          body: JSON.stringify({ event: "completion", id: `evt_${i}` }),
          webhookId: `evt_${i}`,
          secrets: [SECRET],
          signatureHeader: "X-Webhook-Signature",
          timeoutMs: 10_000,
          requireHttps: false,
          allowedNetworks: ["127.0.0.0/8"],
          userAgent: USER_AGENT,
        }),
      ),
    );
    expect(results.map((r) => r.statusCode)).toEqual(new Array(20).fill(200));
    expect(server.requests).toHaveLength(20);
    for (const req of server.requests) {
      expect(new Webhook(SECRET).verify(req.body, req.headers as Record<string, string>)).toMatchObject({
        event: "completion",
      });
    }
    expect(pool.threads).toBeGreaterThanOrEqual(1);
  });

  it("reports each attempt of a batch as it ends, not when the whole batch does", async () => {
    let answerSlow: (() => void) | undefined;
    server = await startTestServer((req, res) => {
      if (req.body.includes("slow")) answerSlow = () => res.writeHead(200).end();
      else res.writeHead(202).end();
    });
    pool = createDeliveryPool({ maxThreads: 1, concurrentTasksPerWorker: 4 });
    const reported: { index: number; status: number; at: number }[] = [];
    const batch = pool.runBatch(
      {
        destinations: [{ url: server.url, secrets: [SECRET] }],
        items: ["slow", "fast-1", "fast-2"].map((id) => ({
          destination: 0,
          event: eventBytes(id),
        })),
        signatureHeader: "X-Webhook-Signature",
        timeoutMs: 10_000,
        requireHttps: false,
        allowedNetworks: ["127.0.0.0/8"],
        userAgent: USER_AGENT,
      },
      (index, result) => reported.push({ index, status: result.statusCode, at: Date.now() }),
    );
    const deadline = Date.now() + 10_000;
    while (reported.length < 2 || !answerSlow) {
      if (Date.now() > deadline) throw new Error("fast results were not reported while the slow one waited");
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(reported.map((r) => r.index).sort()).toEqual([1, 2]);
    expect(reported.every((r) => r.status === 202)).toBe(true);
    answerSlow();
    await expect(batch).resolves.toBeUndefined();
    expect(reported.map((r) => [r.index, r.status])).toContainEqual([0, 200]);
    expect(reported).toHaveLength(3);
    for (const req of server.requests) {
      expect(new Webhook(SECRET).verify(req.body, req.headers as Record<string, string>)).toHaveProperty("id");
    }
  });

  it("times out only the attempts of a batch still waiting, and records bodies, empty or not", async () => {
    server = await startTestServer((req, res) => {
      if (req.body.includes("hang")) return; // never answers
      if (req.body.includes("empty")) res.writeHead(200, { "content-length": "0" }).end();
      else res.writeHead(200).end("x".repeat(3000));
    });
    pool = createDeliveryPool({ maxThreads: 1, concurrentTasksPerWorker: 4 });
    const results = new Map<number, { statusCode: number; timedOut: boolean; responseBody: string }>();
    const failure = await pool.runBatch(
      {
        destinations: [{ url: server.url, secrets: [SECRET] }],
        items: ["hang", "empty", "long"].map((id) => ({ destination: 0, event: eventBytes(id) })),
        signatureHeader: "X-Webhook-Signature",
        timeoutMs: 500,
        requireHttps: false,
        allowedNetworks: ["127.0.0.0/8"],
        userAgent: USER_AGENT,
      },
      (index, result) => results.set(index, result),
    );
    expect(failure).toBeUndefined();
    expect(results.get(0)).toMatchObject({ statusCode: 0, timedOut: true, responseBody: "" });
    expect(results.get(1)).toMatchObject({ statusCode: 200, timedOut: false, responseBody: "" });
    expect(results.get(2)).toMatchObject({ statusCode: 200, timedOut: false, responseBody: "x".repeat(1024) });
  });

  it("sends a batch of one as a plain task: signed, its result reported once", async () => {
    server = await startTestServer((_req, res) => res.writeHead(201).end("created"));
    pool = createDeliveryPool({ maxThreads: 1, concurrentTasksPerWorker: 4 });
    const results: [number, { statusCode: number; responseBody: string }][] = [];
    const failure = await pool.runBatch(
      {
        destinations: [{ url: server.url, secrets: [SECRET] }],
        items: [{ destination: 0, event: eventBytes("req_one") }],
        signatureHeader: "X-Webhook-Signature",
        timeoutMs: 10_000,
        requireHttps: false,
        allowedNetworks: ["127.0.0.0/8"],
        userAgent: USER_AGENT,
      },
      (index, result) => results.push([index, result]),
    );
    expect(failure).toBeUndefined();
    expect(results).toMatchObject([[0, { statusCode: 201, responseBody: "created" }]]);
    expect(server.requests).toHaveLength(1);
    const req = server.requests[0]!;
    expect(new Webhook(SECRET).verify(req.body, req.headers as Record<string, string>)).toMatchObject({
      request_id: "req_one",
    });
  });

  it.each([1, 2])("gives every attempt of a batch of %i a retryable result when its worker fails", async (size) => {
    tempDir = mkdtempSync(join(tmpdir(), "aigw-pool-"));
    const broken = join(tempDir, "broken-worker.mjs");
    writeFileSync(broken, 'throw new Error("worker module exploded while loading");\n');
    pool = createDeliveryPool({ maxThreads: 1, concurrentTasksPerWorker: 1, workerUrl: pathToFileURL(broken) });
    const results: [number, { networkError: boolean; error: string }][] = [];
    const failure = await pool.runBatch(
      {
        destinations: [{ url: "http://127.0.0.1:9/", secrets: [SECRET] }],
        items: Array.from({ length: size }, (_, i) => ({ destination: 0, event: eventBytes(`req_${i}`) })),
        signatureHeader: "X-Webhook-Signature",
        timeoutMs: 1000,
        requireHttps: false,
        allowedNetworks: [],
        userAgent: USER_AGENT,
      },
      (index, result) => results.push([index, result]),
    );
    expect(failure?.message).toMatch(/delivery worker failed: .*exploded while loading/);
    expect(results.map(([i]) => i).sort()).toEqual(Array.from({ length: size }, (_, i) => i));
    for (const [, result] of results) {
      expect(result.networkError).toBe(true);
      expect(result.error).toMatch(/exploded while loading/);
    }
  });

  it("surfaces a worker that fails to load as an error instead of hanging", async () => {
    tempDir = mkdtempSync(join(tmpdir(), "aigw-pool-"));
    const broken = join(tempDir, "broken-worker.mjs");
    writeFileSync(broken, 'throw new Error("worker module exploded while loading");\n');
    pool = createDeliveryPool({ maxThreads: 1, concurrentTasksPerWorker: 1, workerUrl: pathToFileURL(broken) });
    const run = pool.run({
      deliveryId: "dlv_x",
      url: "http://127.0.0.1:9/",
      body: "{}",
      webhookId: "evt_x",
      secrets: [SECRET],
      signatureHeader: "X-Webhook-Signature",
      timeoutMs: 1000,
      requireHttps: false,
      allowedNetworks: [],
      userAgent: USER_AGENT,
    });
    await expect(run).rejects.toThrow(/delivery worker failed: .*exploded while loading/);
  });

  it("refuses work after close()", async () => {
    pool = createDeliveryPool({ maxThreads: 1, concurrentTasksPerWorker: 1 });
    await pool.close();
    await expect(
      pool.run({
        deliveryId: "d",
        url: "http://127.0.0.1:9/",
        body: "{}",
        webhookId: "e",
        secrets: [SECRET],
        signatureHeader: "X-Webhook-Signature",
        timeoutMs: 1000,
        requireHttps: false,
        allowedNetworks: [],
        userAgent: USER_AGENT,
      }),
    ).rejects.toThrow(/closed/);
  });
});
