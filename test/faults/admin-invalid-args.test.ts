import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, type DeliveryStatus, SeriesBreakdown, SeriesMetric } from "../../gen/aigw/v1/admin_pb.js";
import { ErrorDetailSchema } from "../../gen/aigw/v1/errors_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { completion, type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";

// Every Admin RPC with invalid arguments, table-driven, against a real control plane over
// both its listeners (Connect JSON on HTTP/1.1, gRPC on h2c): each answer is INVALID_ARGUMENT
// whose message starts with the field it names, whose aigw.v1.ErrorDetail names the same
// field, and the store is exactly as before (a snapshot of everything the Admin API can
// change, compared before and after).

type Admin = Client<typeof AdminService>;
const SHORT_SECRET = "whsec_c2hvcnQ="; // 5 bytes

const cases: { rpc: string; field: string; call: (c: Admin) => Promise<unknown> }[] = [
  // endpoints
  { rpc: "CreateEndpoint", field: "endpoint", call: (c) => c.createEndpoint({}) },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.org_id",
    call: (c) =>
      c.createEndpoint({ endpoint: { name: "n1", url: "https://a.example.com/h", secret: TEST_SECRET, orgId: "a b" } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.apps",
    call: (c) =>
      c.createEndpoint({
        endpoint: { name: "n1", url: "https://a.example.com/h", secret: TEST_SECRET, apps: ["chat"] },
      }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.apps[1]",
    call: (c) =>
      c.createEndpoint({
        endpoint: { name: "n1", url: "https://a.example.com/h", secret: TEST_SECRET, orgId: "acme", apps: ["ok", ""] },
      }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.name",
    call: (c) => c.createEndpoint({ endpoint: { name: "", url: "https://a.example.com/h", secret: TEST_SECRET } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.name",
    call: (c) =>
      c.createEndpoint({ endpoint: { name: "Has Spaces", url: "https://a.example.com/h", secret: TEST_SECRET } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.name",
    call: (c) =>
      c.createEndpoint({ endpoint: { name: "x".repeat(65), url: "https://a.example.com/h", secret: TEST_SECRET } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.url",
    call: (c) => c.createEndpoint({ endpoint: { name: "n1", url: "ftp://a.example.com/h", secret: TEST_SECRET } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.url",
    call: (c) =>
      c.createEndpoint({ endpoint: { name: "n1", url: "https://169.254.169.254/latest", secret: TEST_SECRET } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.url",
    call: (c) =>
      c.createEndpoint({
        endpoint: { name: "n1", url: `https://a.example.com/${"p".repeat(2100)}`, secret: TEST_SECRET },
      }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.secret",
    call: (c) => c.createEndpoint({ endpoint: { name: "n1", url: "https://a.example.com/h", secret: SHORT_SECRET } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.secret",
    call: (c) => c.createEndpoint({ endpoint: { name: "n1", url: "https://a.example.com/h", secret: "whsec_***" } }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.event_types[1]",
    call: (c) =>
      c.createEndpoint({
        endpoint: {
          name: "n1",
          url: "https://a.example.com/h",
          secret: TEST_SECRET,
          eventTypes: [EventType.ERROR, 99 as EventType],
        },
      }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.filters.error_severities[0]",
    call: (c) =>
      c.createEndpoint({
        endpoint: {
          name: "n1",
          url: "https://a.example.com/h",
          secret: TEST_SECRET,
          filters: { errorSeverities: ["loud"] },
        },
      }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.failover_to",
    call: (c) =>
      c.createEndpoint({
        endpoint: { name: "n1", url: "https://a.example.com/h", secret: TEST_SECRET, failoverTo: "nowhere" },
      }),
  },
  {
    rpc: "CreateEndpoint",
    field: "endpoint.name",
    call: (c) =>
      c.createEndpoint({ endpoint: { name: "oneoff-x", url: "https://a.example.com/h", secret: TEST_SECRET } }),
  },
  { rpc: "GetEndpoint", field: "name", call: (c) => c.getEndpoint({ name: "" }) },
  { rpc: "UpdateEndpoint", field: "endpoint", call: (c) => c.updateEndpoint({}) },
  { rpc: "UpdateEndpoint", field: "endpoint.name", call: (c) => c.updateEndpoint({ endpoint: { name: "" } }) },
  {
    rpc: "UpdateEndpoint",
    field: "update_mask.paths[1]",
    call: (c) => c.updateEndpoint({ endpoint: { name: "primary" }, updateMask: { paths: ["url", "created_at"] } }),
  },
  {
    rpc: "UpdateEndpoint",
    field: "endpoint.url",
    call: (c) =>
      c.updateEndpoint({ endpoint: { name: "primary", url: "https://10.0.0.1/h" }, updateMask: { paths: ["url"] } }),
  },
  {
    rpc: "UpdateEndpoint",
    field: "endpoint.secret",
    call: (c) =>
      c.updateEndpoint({ endpoint: { name: "primary", secret: SHORT_SECRET }, updateMask: { paths: ["secret"] } }),
  },
  {
    rpc: "UpdateEndpoint",
    field: "endpoint.event_types[0]",
    call: (c) =>
      c.updateEndpoint({
        endpoint: { name: "primary", eventTypes: [42 as EventType] },
        updateMask: { paths: ["event_types"] },
      }),
  },
  {
    rpc: "UpdateEndpoint",
    field: "endpoint.failover_to",
    call: (c) =>
      c.updateEndpoint({ endpoint: { name: "backup", failoverTo: "primary" }, updateMask: { paths: ["failover_to"] } }),
  },
  {
    rpc: "UpdateEndpoint",
    field: "endpoint.filters.completion_models[0]",
    call: (c) =>
      c.updateEndpoint({
        endpoint: { name: "primary", filters: { completionModels: [""] } },
        updateMask: { paths: ["filters"] },
      }),
  },
  // Several bad fields at once: the first is named, and nothing of the good ones is applied.
  {
    rpc: "UpdateEndpoint",
    field: "endpoint.url",
    call: (c) =>
      c.updateEndpoint({
        endpoint: { name: "primary", enabled: false, url: "not a url" },
        updateMask: { paths: ["enabled", "url"] },
      }),
  },
  { rpc: "DeleteEndpoint", field: "name", call: (c) => c.deleteEndpoint({ name: "" }) },
  // keys
  { rpc: "RotateSigningKey", field: "endpoint", call: (c) => c.rotateSigningKey({}) },
  {
    rpc: "RotateSigningKey",
    field: "secret",
    call: (c) => c.rotateSigningKey({ endpoint: "primary", secret: SHORT_SECRET }),
  },
  {
    rpc: "RotateSigningKey",
    field: "org_id",
    call: (c) => c.rotateSigningKey({ endpoint: "primary", orgId: "org_1" }),
  },
  { rpc: "RotateSigningKey", field: "secret", call: (c) => c.rotateSigningKey({ orgId: "org_1", secret: "whsec_!" }) },
  // An overlap of years would keep a rotated-out (perhaps leaked) key signing for that long.
  {
    rpc: "RotateSigningKey",
    field: "overlap_seconds",
    call: (c) => c.rotateSigningKey({ endpoint: "primary", overlapSeconds: 0xffffffff }),
  },
  {
    rpc: "RotateSigningKey",
    field: "overlap_seconds",
    call: (c) => c.rotateSigningKey({ orgId: "org_1", overlapSeconds: 30 * 24 * 3600 + 1 }),
  },
  // deliveries
  { rpc: "ListDeliveries", field: "page_size", call: (c) => c.listDeliveries({ pageSize: 1001 }) },
  { rpc: "ListDeliveries", field: "status", call: (c) => c.listDeliveries({ status: 77 as DeliveryStatus }) },
  { rpc: "ListDeliveries", field: "page_token", call: (c) => c.listDeliveries({ pageToken: "not-a-token" }) },
  { rpc: "GetDelivery", field: "id", call: (c) => c.getDelivery({ id: "" }) },
  { rpc: "GetSeries", field: "metric", call: (c) => c.getSeries({ window: "1h" }) },
  { rpc: "GetSeries", field: "window", call: (c) => c.getSeries({ metric: SeriesMetric.EVENTS, window: "90m" }) },
  {
    rpc: "GetSeries",
    field: "breakdown",
    call: (c) => c.getSeries({ metric: SeriesMetric.TOKENS, window: "1h", breakdown: SeriesBreakdown.OUTCOME }),
  },
  {
    rpc: "GetSeries",
    field: "end_time",
    call: (c) => c.getSeries({ metric: SeriesMetric.EVENTS, window: "1h", endTime: { seconds: -1n, nanos: 0 } }),
  },
  { rpc: "ReplayDelivery", field: "id", call: (c) => c.replayDelivery({ id: "" }) },
  {
    rpc: "ReplayDeliveries",
    field: "since",
    call: (c) => c.replayDeliveries({ since: timestampFromMs(Date.now() + 3_600_000) }),
  },
  {
    rpc: "ReplayDeliveries",
    field: "until",
    call: (c) =>
      c.replayDeliveries({ since: timestampFromMs(Date.now() - 1_000), until: timestampFromMs(Date.now() - 2_000) }),
  },
  {
    rpc: "ReplayDeliveries",
    field: "statuses",
    call: (c) => c.replayDeliveries({ statuses: [1 as DeliveryStatus] }),
  },
  { rpc: "ReplayDeliveries", field: "page_size", call: (c) => c.replayDeliveries({ pageSize: 5_001 }) },
  {
    rpc: "ReplayDeliveries",
    field: "page_token",
    call: (c) => c.replayDeliveries({ pageSize: 10, pageToken: "not-a-token" }),
  },
  // endpoint states
  { rpc: "PauseEndpoint", field: "name", call: (c) => c.pauseEndpoint({ name: "" }) },
  { rpc: "ResumeEndpoint", field: "name", call: (c) => c.resumeEndpoint({ name: "" }) },
  { rpc: "DisableEndpoint", field: "name", call: (c) => c.disableEndpoint({ name: "" }) },
  { rpc: "EnableEndpoint", field: "name", call: (c) => c.enableEndpoint({ name: "" }) },
  {
    rpc: "SendTestEvent",
    field: "event_type",
    call: (c) => c.sendTestEvent({ endpoint: "primary", eventType: 99 as EventType }),
  },
  // subscription
  {
    rpc: "UpdateSubscription",
    field: "subscribe[1]",
    call: (c) => c.updateSubscription({ subscribe: [EventType.ERROR, 99 as EventType] }),
  },
  {
    rpc: "UpdateSubscription",
    field: "filters.error_severities[0]",
    call: (c) => c.updateSubscription({ filters: { errorSeverities: ["fatal"] } }),
  },
  // budgets and prices
  { rpc: "SetBudget", field: "budget", call: (c) => c.setBudget({}) },
  {
    rpc: "SetBudget",
    field: "budget.org_id",
    call: (c) => c.setBudget({ budget: { orgId: "", limitType: "monthly", budgetLimit: 10 } }),
  },
  {
    rpc: "SetBudget",
    field: "budget.limit_type",
    call: (c) => c.setBudget({ budget: { orgId: "org_1", limitType: "weekly", budgetLimit: 10 } }),
  },
  {
    rpc: "SetBudget",
    field: "budget.budget_limit",
    call: (c) => c.setBudget({ budget: { orgId: "org_1", limitType: "monthly", budgetLimit: -5 } }),
  },
  {
    rpc: "SetBudget",
    field: "budget.budget_limit",
    call: (c) => c.setBudget({ budget: { orgId: "org_1", limitType: "monthly", budgetLimit: Number.NaN } }),
  },
  {
    rpc: "SetBudget",
    field: "budget.thresholds[1]",
    call: (c) =>
      c.setBudget({ budget: { orgId: "org_1", limitType: "monthly", budgetLimit: 10, thresholds: [50, 150] } }),
  },
  { rpc: "DeleteBudget", field: "org_id", call: (c) => c.deleteBudget({ orgId: "", limitType: "monthly" }) },
  { rpc: "CreateToken", field: "org_id", call: (c) => c.createToken({ orgId: "", kind: 1 }) },
  { rpc: "CreateToken", field: "org_id", call: (c) => c.createToken({ orgId: "has space", kind: 1 }) },
  { rpc: "CreateToken", field: "kind", call: (c) => c.createToken({ orgId: "acme" }) },
  { rpc: "CreateToken", field: "name", call: (c) => c.createToken({ orgId: "acme", kind: 2, name: "x".repeat(129) }) },
  { rpc: "RevokeToken", field: "id", call: (c) => c.revokeToken({}) },
  { rpc: "DeleteBudget", field: "limit_type", call: (c) => c.deleteBudget({ orgId: "org_1", limitType: "yearly" }) },
  { rpc: "SetModelPrice", field: "price", call: (c) => c.setModelPrice({}) },
  {
    rpc: "SetModelPrice",
    field: "price.model",
    call: (c) => c.setModelPrice({ price: { model: " ", inputPerMillion: 1, outputPerMillion: 1 } }),
  },
  {
    rpc: "SetModelPrice",
    field: "price.input_per_million",
    call: (c) => c.setModelPrice({ price: { model: "gpt-x", inputPerMillion: -1, outputPerMillion: 1 } }),
  },
  {
    rpc: "SetModelPrice",
    field: "price.output_per_million",
    call: (c) =>
      c.setModelPrice({ price: { model: "gpt-x", inputPerMillion: 1, outputPerMillion: Number.POSITIVE_INFINITY } }),
  },
];

describe("Admin API: every RPC with invalid arguments", () => {
  let fixture: ControlPlaneFixture;
  let clients: { name: string; client: Admin }[];

  beforeAll(async () => {
    fixture = await startControlPlane(`
webhooks:
  primary:
    url: "https://hooks.example.com/primary"
    secret: "${TEST_SECRET}"
  backup:
    url: "https://hooks.example.com/backup"
    secret: "${TEST_SECRET}"
budgets:
  - org_id: org_1
    limit_type: monthly
    budget_limit: 100
`);
    const { cp } = fixture;
    // Something of everything: deliveries, a runtime price, an org key.
    await cp.deliverEvents([completion("gpt-4", 10), completion("gpt-4", 20)], ["primary"]);
    await fixture.admin.setModelPrice({ price: { model: "gpt-test", inputPerMillion: 1, outputPerMillion: 2 } });
    await fixture.admin.rotateSigningKey({ orgId: "org_1" });
    // Nothing changes the store behind the test's back (the receivers here do not exist).
    await cp.scheduler.stop();
    await cp.retention.stop();
    clients = [
      { name: "Connect JSON", client: fixture.admin },
      { name: "gRPC", client: createClient(AdminService, createGrpcTransport({ baseUrl: cp.grpcUrl })) },
    ];
  });
  afterAll(() => fixture?.close());

  /** Everything the Admin API can change, as data. */
  async function snapshot() {
    const { store } = fixture.cp;
    const at = Date.now() + 60_000;
    const endpoints = await store.listEndpoints();
    return {
      endpoints,
      keys: await Promise.all(endpoints.map(async (e) => (await store.activeSigningKeys(e.name, at)).map((k) => k.id))),
      orgKeys: (await store.activeOrgSigningKeys("org_1", at)).map((k) => k.id),
      deliveries: (await store.listDeliveries({ pageSize: 1000 })).deliveries,
      events: await store.countEvents(),
      pending: await store.countPending(),
      budgets: (await fixture.admin.listBudgets({})).budgets,
      prices: await store.listModelPrices(),
      subscription: await fixture.admin.getSubscription({}),
    };
  }

  it("covers every RPC that takes arguments", () => {
    const covered = new Set(cases.map((c) => c.rpc));
    const withArguments = AdminService.methods
      .filter((m) => m.input.fields.length > 0)
      .map((m) => m.name)
      // Every value of these is valid: a window any length, an org or token filter matches
      // what it matches.
      .filter((name) => !["GetStats", "ListEndpoints", "ListTokens"].includes(name));
    expect([...covered].sort()).toEqual(withArguments.sort());
  });

  for (const c of cases) {
    it(`${c.rpc}: ${c.field} → INVALID_ARGUMENT naming it, store unchanged`, async () => {
      for (const { name, client } of clients) {
        const before = await snapshot();
        const err = await c.call(client).then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(err, `${name}: expected a refusal`).toBeInstanceOf(ConnectError);
        expect(Code[err!.code], `${name}: ${err!.rawMessage}`).toBe("InvalidArgument");
        expect(err!.rawMessage.startsWith(`${c.field}: `), `${name}: "${err!.rawMessage}"`).toBe(true);
        expect(err!.findDetails(ErrorDetailSchema).map((d) => d.field)).toEqual([c.field]);
        expect(await snapshot(), name).toEqual(before);
      }
    });
  }
});
