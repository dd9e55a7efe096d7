import * as grpc from "@grpc/grpc-js";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, DeliveryStatus, type ListDeliveriesResponse } from "../../gen/aigw/v1/admin_pb.js";
import { grpcClientConstructor } from "../../common/grpc.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { startTestStack, type TestStack, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";

// Receivers that fail: retried with the same webhook-id, dead-lettered to backup, or not
// retried; every attempt visible through the Admin API from a Connect, a gRPC (connect-node)
// and a @grpc/grpc-js client.
describe("retries, dead letters and failover", () => {
  let primary: TestReceiver;
  let backup: TestReceiver;
  let stack: TestStack;
  let openai: OpenAI;
  // The model names the receiver's script, so it is known before the webhook can arrive:
  // "plan-503-503-200" → those statuses, in order; the last one repeats.
  const replayed = new Set<string>();

  beforeAll(async () => {
    primary = await startTestReceiver({
      secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      script: (attempt, body) => {
        if (replayed.has(String(body.request_id))) return 200;
        const plan = String(body.model).startsWith("plan-")
          ? String(body.model).slice(5).split("-").map(Number)
          : [200];
        return plan[Math.min(attempt, plan.length) - 1] ?? 200;
      },
    });
    backup = await startTestReceiver({ secret: "whsec_YmFja3VwLWVuZHBvaW50LXNlY3JldC1rZXktMzI=" });
    stack = await startTestStack(
      testConfigYaml({ primaryUrl: primary.url, backupUrl: backup.url, maxAttempts: 3, initialDelayMs: 30 }),
    );
    openai = new OpenAI({ baseURL: `${stack.sidecar.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
  });

  afterAll(async () => {
    await stack?.close();
    await primary?.close();
    await backup?.close();
  });

  async function call(plan: number[]): Promise<string> {
    const { response } = await openai.chat.completions
      .create({ model: `plan-${plan.join("-")}`, messages: [{ role: "user", content: "x" }] })
      .withResponse();
    return response.headers.get("x-aigw-request-id") as string;
  }

  const connectAdmin = () =>
    createClient(AdminService, createConnectTransport({ baseUrl: stack.controlPlane.httpUrl, httpVersion: "1.1" }));

  it("503, 503, 200: delivered on attempt 3 with the same webhook-id, attempts visible", async () => {
    const requestId = await call([503, 503, 200]);
    const delivered = await waitFor("the third attempt", () =>
      primary.received.find((r) => r.body.request_id === requestId && r.status === 200),
    );
    const all = primary.received.filter((r) => r.body.request_id === requestId);
    expect(all.map((r) => r.status)).toEqual([503, 503, 200]);
    expect(new Set(all.map((r) => r.id)).size).toBe(1);
    expect(delivered.attempt).toBe(3);

    const eventId = delivered.id;
    const admin = connectAdmin();
    const list = await waitFor("the delivery to be marked delivered", async () => {
      const l = await admin.listDeliveries({ eventId, endpoint: "primary" });
      return l.deliveries[0]?.status === DeliveryStatus.DELIVERED ? l : undefined;
    });
    const d = list.deliveries[0]!;
    expect(d.attemptCount).toBe(3);
    expect(d.attempts.map((a) => a.statusCode)).toEqual([503, 503, 200]);
    expect(d.attempts[0]?.error).toMatch(/503/);

    // The same story on /metrics: retries counted, every attempt's latency in the histogram.
    const metrics = await fetch(`${stack.controlPlane.httpUrl}/metrics`).then((r) => r.text());
    const value = (series: string) => Number(new RegExp(`^${series} (\\d+)$`, "m").exec(metrics)?.[1]);
    expect(value('aigw_delivery_attempts_total\\{outcome="retry"\\}')).toBeGreaterThanOrEqual(2);
    expect(value("aigw_delivery_attempt_duration_ms_count")).toBeGreaterThanOrEqual(3);
    expect(metrics).toMatch(/^aigw_delivery_attempt_duration_ms_bucket\{le="\+Inf"\} \d+$/m);
  });

  it("always 500: dead-lettered after max_attempts, then delivered to backup", async () => {
    const requestId = await call([500]);
    const onBackup = await waitFor("the backup delivery", () =>
      backup.accepted().find((r) => r.body.request_id === requestId),
    );
    const onPrimary = primary.received.filter((r) => r.body.request_id === requestId);
    expect(onPrimary.map((r) => r.status)).toEqual([500, 500, 500]);
    expect(onBackup.id).toBe(onPrimary[0]?.id);

    const admin = connectAdmin();
    // The receiver has the request before the control plane has recorded its answer.
    const byEndpoint = await waitFor("the backup delivery to be recorded as delivered", async () => {
      const l = await admin.listDeliveries({ eventId: onBackup.id });
      const by = Object.fromEntries(l.deliveries.map((x) => [x.endpoint, x]));
      return by.backup?.status === DeliveryStatus.DELIVERED ? by : undefined;
    });
    expect(byEndpoint.primary?.status).toBe(DeliveryStatus.DEAD_LETTERED);
    expect(byEndpoint.backup?.status).toBe(DeliveryStatus.DELIVERED);
    expect(byEndpoint.backup?.originDeliveryId).toBe(byEndpoint.primary?.id);

    // Replay the dead letter: the primary now answers 200.
    replayed.add(requestId);
    const replay = await admin.replayDelivery({ id: byEndpoint.primary!.id });
    expect(replay.delivery?.status).toBe(DeliveryStatus.PENDING);
    await waitFor("the replayed delivery", () =>
      primary.received.find((r) => r.body.request_id === requestId && r.status === 200),
    );
  });

  it("400: failed at once, never retried", async () => {
    const requestId = await call([400, 200]);
    const admin = connectAdmin();
    const first = await waitFor("the 400 attempt", () => primary.received.find((r) => r.body.request_id === requestId));
    const l = await waitFor("the failed delivery", async () => {
      const x = await admin.listDeliveries({ eventId: first.id, endpoint: "primary" });
      return x.deliveries[0]?.status === DeliveryStatus.FAILED ? x : undefined;
    });
    expect(l.deliveries[0]?.attemptCount).toBe(1);
    expect(primary.received.filter((r) => r.body.request_id === requestId)).toHaveLength(1);
    expect(backup.received.find((r) => r.body.request_id === requestId)).toBeUndefined();
  });

  it("answers the same Admin API over gRPC (connect-node and @grpc/grpc-js) and Connect", async () => {
    const viaConnect = await connectAdmin().listEndpoints({});
    const viaGrpc = await createClient(
      AdminService,
      createGrpcTransport({ baseUrl: stack.controlPlane.grpcUrl }),
    ).listEndpoints({});
    // gRPC-Web on the HTTP/1.1 port, for browsers and proxies that cannot do HTTP/2.
    const viaGrpcWeb = await createClient(
      AdminService,
      createGrpcWebTransport({ baseUrl: stack.controlPlane.httpUrl, httpVersion: "1.1" }),
    ).listEndpoints({});
    const GrpcAdmin = grpcClientConstructor(AdminService);
    const grpcJs = new GrpcAdmin(stack.controlPlane.grpcAddress, grpc.credentials.createInsecure());
    try {
      const viaGrpcJs = await new Promise<{ endpoints: { name: string; secret: string }[] }>((resolve, reject) =>
        (grpcJs as unknown as Record<string, (req: object, cb: (e: Error | null, r: never) => void) => void>)
          .listEndpoints!({}, (e, r) => (e ? reject(e) : resolve(r))),
      );
      const names = (x: { endpoints: { name: string }[] }) => x.endpoints.map((e) => e.name).sort();
      expect(names(viaConnect)).toEqual(["backup", "primary"]);
      expect(names(viaGrpc)).toEqual(["backup", "primary"]);
      expect(names(viaGrpcWeb)).toEqual(["backup", "primary"]);
      expect(names(viaGrpcJs)).toEqual(["backup", "primary"]);
      expect(viaGrpcJs.endpoints.every((e) => e.secret === "")).toBe(true);

      // Bad arguments: INVALID_ARGUMENT naming the field, on both protocols.
      const bad = await new Promise<grpc.ServiceError>((resolve) =>
        (grpcJs as unknown as Record<string, (req: object, cb: (e: grpc.ServiceError) => void) => void>)
          .listDeliveries!({ pageSize: 5000 }, resolve),
      );
      expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(bad.details).toMatch(/page_size/);
    } finally {
      grpcJs.close();
    }
  });

  it("send-test delivers a synthetic event to the named endpoint", async () => {
    const admin = connectAdmin();
    const res = await admin.sendTestEvent({ endpoint: "backup" });
    expect(res.deliveryIds).toHaveLength(1);
    await waitFor("the test event at backup", () => backup.accepted().find((r) => r.id === res.event?.id));
    const l: ListDeliveriesResponse = await admin.listDeliveries({ eventId: res.event!.id });
    expect(l.deliveries.map((d) => d.endpoint)).toEqual(["backup"]);
  });
});
