import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, DeliveryStatus, TokenKind } from "../../gen/aigw/v1/admin_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { FeedService, type WatchResponse } from "../../gen/aigw/v1/feed_pb.js";
import {
  completion,
  type ControlPlaneFixture,
  openSidecarStream,
  startControlPlane,
} from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver } from "../support/webhook-receiver.js";

// An org admin token through the real Admin API and feed (HTTP, Connect, tokens in the
// config file and made at runtime): it sees and changes only its org; another org's objects
// are NOT_FOUND, operator-only RPCs PERMISSION_DENIED; a revoked token stops at once,
// on an open feed stream too.

const OPERATOR = "operator-admin-token";
const OPERATOR_SIDECAR = "operator-sidecar-token";
const GLOBEX_FILE_TOKEN = "globex-admin-token-from-the-file";

type Admin = Client<typeof AdminService>;

function clients(fx: ControlPlaneFixture, token: string) {
  const interceptors: Interceptor[] = [
    (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ];
  return {
    admin: createClient(
      AdminService,
      createConnectTransport({ baseUrl: fx.cp.httpUrl, httpVersion: "1.1", interceptors }),
    ),
    feed: createClient(FeedService, createGrpcTransport({ baseUrl: fx.cp.grpcUrl, interceptors })),
  };
}

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("org admin tokens on the Admin API and the feed", () => {
  let fx: ControlPlaneFixture;
  let receiver: Awaited<ReturnType<typeof startTestReceiver>>;
  let operator: Admin;
  let acme: ReturnType<typeof clients>;
  let globex: ReturnType<typeof clients>;
  let acmeTokenId: string;

  beforeAll(async () => {
    receiver = await startTestReceiver({ secret: TEST_SECRET });
    fx = await startControlPlane(`
webhooks:
  ops:
    url: "${receiver.url}?ops"
    secret: "${TEST_SECRET}"
  acme-hook:
    url: "${receiver.url}?acme"
    secret: "${TEST_SECRET}"
    org_id: acme
  globex-hook:
    url: "${receiver.url}?globex"
    secret: "${TEST_SECRET}"
    org_id: globex
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
retry:
  max_attempts: 1
auth:
  admin_tokens: ["${OPERATOR}"]
  sidecar_tokens: ["${OPERATOR_SIDECAR}"]
  orgs:
    globex:
      admin_tokens: ["${GLOBEX_FILE_TOKEN}"]
`);
    operator = clients(fx, OPERATOR).admin;
    const made = await operator.createToken({ orgId: "acme", kind: TokenKind.ADMIN, name: "acme ops" });
    expect(made.secret).toMatch(/^aigw_[A-Za-z0-9_-]{43}$/);
    acmeTokenId = made.token?.id ?? "";
    acme = clients(fx, made.secret);
    globex = clients(fx, GLOBEX_FILE_TOKEN);
    // Traffic of both orgs, reported by a sidecar with the operator's token.
    const sidecar = openSidecarStreamWithToken(fx);
    await sidecar.sendBatch([
      completion("gpt-4", 500, { orgId: "acme", app: "chat" }),
      completion("gpt-4", 500, { orgId: "globex", app: "chat" }),
    ]);
    sidecar.close();
    await waitFor("4 deliveries", () => receiver.received.length >= 4);
  }, 60_000);

  afterAll(async () => {
    await fx?.close();
    await receiver?.close();
  });

  function openSidecarStreamWithToken(f: ControlPlaneFixture) {
    return openSidecarStream(f.cp, { sidecarId: "sc-op", orgId: "", app: "chat" }, OPERATOR_SIDECAR);
  }

  it("each org token says whose it is", async () => {
    expect(await acme.admin.whoAmI({})).toMatchObject({ orgId: "acme", tokenId: acmeTokenId, tokenName: "acme ops" });
    expect(await globex.admin.whoAmI({})).toMatchObject({ orgId: "globex", tokenId: "" });
    expect((await operator.whoAmI({})).orgId).toBe("");
  });

  it("lists, gets and counts only its org's endpoints and events", async () => {
    expect((await acme.admin.listEndpoints({})).endpoints.map((e) => [e.name, e.orgId])).toEqual([
      ["acme-hook", "acme"],
    ]);
    expect((await operator.listEndpoints({ orgId: "globex" })).endpoints.map((e) => e.name)).toEqual(["globex-hook"]);
    expect((await operator.listEndpoints({})).endpoints.map((e) => e.name)).toEqual([
      "acme-hook",
      "globex-hook",
      "ops",
    ]);
    expect(await code(acme.admin.listEndpoints({ orgId: "globex" }))).toBe(Code.PermissionDenied);
    const stats = await acme.admin.getStats({});
    expect(stats.endpoints.map((s) => s.endpoint)).toEqual(["acme-hook"]);
    expect(stats.eventsIngested).toBe(1n);
    expect((await operator.getStats({})).eventsIngested).toBe(2n);
  });

  it("another org's endpoints are NOT_FOUND for every verb, exactly like missing ones", async () => {
    for (const name of ["globex-hook", "no-such-endpoint"]) {
      const missing = `endpoint "${name}" not found`;
      for (const call of [
        () => acme.admin.getEndpoint({ name }),
        () => acme.admin.updateEndpoint({ endpoint: { name, enabled: false }, updateMask: { paths: ["enabled"] } }),
        () => acme.admin.deleteEndpoint({ name }),
        () => acme.admin.rotateSigningKey({ endpoint: name }),
        () => acme.admin.sendTestEvent({ endpoint: name }),
        () => acme.admin.replayDeliveries({ endpoint: name }),
        () => acme.admin.replayDeliveries({ endpoint: name, since: timestampFromMs(Date.now() - 3_600_000) }),
        () => acme.admin.pauseEndpoint({ name }),
        () => acme.admin.resumeEndpoint({ name }),
        () => acme.admin.disableEndpoint({ name }),
        () => acme.admin.enableEndpoint({ name }),
      ]) {
        const err = await call().then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(err?.code, name).toBe(Code.NotFound);
        expect(err?.rawMessage, name).toBe(missing);
      }
    }
    const after = (await operator.getEndpoint({ name: "globex-hook" })).endpoint;
    expect(after?.enabled).toBe(true);
    expect(after?.paused).toBe(false);
  });

  it("its deliveries only: list, get and replay", async () => {
    const mine = await acme.admin.listDeliveries({});
    expect(mine.deliveries.map((d) => d.endpoint)).toEqual(["acme-hook"]);
    expect((await acme.admin.listDeliveries({ endpoint: "globex-hook" })).deliveries).toEqual([]);
    const theirs = (await operator.listDeliveries({ endpoint: "globex-hook" })).deliveries[0];
    expect(theirs?.status).toBe(DeliveryStatus.DELIVERED);
    expect(await code(acme.admin.getDelivery({ id: theirs?.id ?? "" }))).toBe(Code.NotFound);
    expect(await code(acme.admin.replayDelivery({ id: theirs?.id ?? "" }))).toBe(Code.NotFound);
    expect(await code(acme.admin.listDeliveries({ orgId: "globex" }))).toBe(Code.PermissionDenied);
    // Its own: shown and replayable.
    const own = mine.deliveries[0];
    expect((await acme.admin.getDelivery({ id: own?.id ?? "" })).body).toContain('"org_id":"acme"');
    expect((await acme.admin.replayDelivery({ id: own?.id ?? "" })).delivery?.endpoint).toBe("acme-hook");
    // The operator's deliveries carry acme's events too, but they are the operator's.
    const ops = (await operator.listDeliveries({ endpoint: "ops" })).deliveries[0];
    expect(await code(acme.admin.getDelivery({ id: ops?.id ?? "" }))).toBe(Code.NotFound);
  });

  it("creates endpoints in its org only; operator endpoints and operator verbs are PERMISSION_DENIED", async () => {
    const created = await acme.admin.createEndpoint({
      endpoint: {
        name: "acme-chat",
        url: `${receiver.url}?acme-chat`,
        secret: TEST_SECRET,
        enabled: true,
        apps: ["chat"],
      },
    });
    expect(created.endpoint).toMatchObject({ orgId: "acme", apps: ["chat"] });
    expect(
      await code(
        acme.admin.createEndpoint({
          endpoint: { name: "sneaky", url: receiver.url, secret: TEST_SECRET, enabled: true, orgId: "globex" },
        }),
      ),
    ).toBe(Code.PermissionDenied);
    // Failing over to another org's endpoint reads as naming none.
    const failover = await acme.admin
      .createEndpoint({
        endpoint: { name: "acme-2", url: receiver.url, secret: TEST_SECRET, enabled: true, failoverTo: "globex-hook" },
      })
      .catch((e: unknown) => ConnectError.from(e));
    expect(failover).toMatchObject({ code: Code.InvalidArgument });
    expect((failover as ConnectError).rawMessage).toContain('no endpoint named "globex-hook"');
    // ...and an operator endpoint is allowed as its failover.
    await acme.admin.updateEndpoint({
      endpoint: { name: "acme-chat", failoverTo: "ops" },
      updateMask: { paths: ["failover_to"] },
    });
    for (const call of [
      () => acme.admin.getEndpoint({ name: "ops" }),
      () => acme.admin.deleteEndpoint({ name: "ops" }),
      () => acme.admin.createToken({ orgId: "acme", kind: TokenKind.ADMIN }),
      () => acme.admin.listTokens({}),
      () => acme.admin.revokeToken({ id: acmeTokenId }),
      () => acme.admin.setModelPrice({ price: { model: "m", inputPerMillion: 1, outputPerMillion: 1 } }),
      () => acme.admin.updateSubscription({}),
      () => acme.admin.rotateSigningKey({ orgId: "globex" }),
      () => acme.admin.setBudget({ budget: { orgId: "globex", limitType: "monthly", budgetLimit: 5 } }),
    ]) {
      expect(await code(call()), call.toString()).toBe(Code.PermissionDenied);
    }
    // Its budgets and its org key: its own org, whatever it names or leaves empty.
    const budget = await acme.admin.setBudget({ budget: { limitType: "monthly", budgetLimit: 5 } });
    expect(budget.budget?.orgId).toBe("acme");
    await operator.setBudget({ budget: { orgId: "globex", limitType: "monthly", budgetLimit: 7 } });
    expect((await acme.admin.listBudgets({})).budgets.map((b) => b.orgId)).toEqual(["acme"]);
    expect((await acme.admin.rotateSigningKey({ orgId: "acme" })).secret).toMatch(/^whsec_/);
    // A test event of its own goes to its endpoints only, as its org.
    const sent = await acme.admin.sendTestEvent({});
    expect(sent.event?.orgId).toBe("acme");
    const targets = await Promise.all(sent.deliveryIds.map((id) => operator.getDelivery({ id })));
    expect(targets.map((t) => t.delivery?.endpoint).sort()).toEqual(["acme-chat", "acme-hook"]);
  });

  it("an org sidecar token reports as its org only: another --org is refused, events claiming another org are its org's", async () => {
    const side = await operator.createToken({ orgId: "acme", kind: TokenKind.SIDECAR });
    const impostor = openSidecarStream(fx.cp, { sidecarId: "sc-imp", orgId: "globex", app: "chat" }, side.secret);
    const refused = await impostor.sendBatch([completion("gpt-4", 500)]).catch((e: unknown) => ConnectError.from(e));
    impostor.close();
    expect(refused).toMatchObject({ code: Code.PermissionDenied });
    expect((refused as ConnectError).rawMessage).toContain('this sidecar token belongs to org "acme", not "globex"');
    // No --org: the token's. An event that says globex is stored as acme's.
    const honest = openSidecarStream(fx.cp, { sidecarId: "sc-acme", orgId: "", app: "chat" }, side.secret);
    const forged = completion("gpt-4", 500, { orgId: "globex", app: "chat" });
    await honest.sendBatch([forged, completion("gpt-4", 500, { orgId: "", app: "chat" })]);
    honest.close();
    const targets = (await operator.listDeliveries({ eventId: forged.id })).deliveries.map((d) => d.endpoint).sort();
    expect(targets).toEqual(["acme-chat", "acme-hook", "ops"]);
    const body = JSON.parse(
      (
        await operator.getDelivery({
          id: (await operator.listDeliveries({ eventId: forged.id, endpoint: "ops" })).deliveries[0]?.id ?? "",
        })
      ).body,
    );
    expect(body.org_id).toBe("acme");
    // A sidecar token is no admin token.
    expect(await code(clients(fx, side.secret).admin.listEndpoints({}))).toBe(Code.Unauthenticated);
  });

  it("a window replay with no endpoint named replays its org's failed deliveries only", async () => {
    // A port nothing listens on: every attempt fails, and with max_attempts 1 the delivery is dead-lettered.
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    for (const [name, orgId] of [
      ["acme-down", "acme"],
      ["globex-down", "globex"],
    ] as const) {
      await operator.createEndpoint({
        endpoint: {
          name,
          url: `http://127.0.0.1:${port}/`,
          secret: TEST_SECRET,
          enabled: true,
          orgId,
          eventTypes: [EventType.COMPLETION],
        },
      });
    }
    const sidecar = openSidecarStreamWithToken(fx);
    await sidecar.sendBatch([
      completion("gpt-4", 500, { orgId: "acme", app: "chat" }),
      completion("gpt-4", 500, { orgId: "globex", app: "chat" }),
    ]);
    sidecar.close();
    const deliveriesOf = async (endpoint: string) => (await operator.listDeliveries({ endpoint })).deliveries;
    const dead = await waitFor("a dead letter at each org's endpoint", async () => {
      const [a, g] = [await deliveriesOf("acme-down"), await deliveriesOf("globex-down")];
      return a[0]?.status === DeliveryStatus.DEAD_LETTERED && g[0]?.status === DeliveryStatus.DEAD_LETTERED
        ? { acme: a[0], globex: g[0] }
        : undefined;
    });

    const since = timestampFromMs(Date.now() - 3_600_000);
    expect((await acme.admin.replayDeliveries({ since })).replayed).toBe(1);
    // acme's dead letter is queued again; globex's is left as it was, for globex or the operator.
    expect((await deliveriesOf("acme-down")).map((d) => d.originDeliveryId)).toContain(dead.acme.id);
    expect((await deliveriesOf("globex-down")).map((d) => [d.id, d.status])).toEqual([
      [dead.globex.id, DeliveryStatus.DEAD_LETTERED],
    ]);
    expect((await globex.admin.replayDeliveries({ since, endpoint: "globex-down" })).replayed).toBe(1);
    for (const name of ["acme-down", "globex-down"]) await operator.deleteEndpoint({ name });
  });

  it("endpoint names are per org: two orgs each have their own, and neither learns of the other's", async () => {
    const [acmeRx, globexRx] = [
      await startTestReceiver({ secret: TEST_SECRET }),
      await startTestReceiver({ secret: TEST_SECRET }),
    ];
    try {
      const a = clients(fx, (await operator.createToken({ orgId: "acme", kind: TokenKind.ADMIN })).secret).admin;
      const g = clients(fx, (await operator.createToken({ orgId: "globex", kind: TokenKind.ADMIN })).secret).admin;
      const shared = (url: string) => ({
        name: "shared",
        url,
        secret: TEST_SECRET,
        enabled: true,
        eventTypes: [EventType.COMPLETION],
      });
      expect((await a.createEndpoint({ endpoint: shared(acmeRx.url) })).endpoint).toMatchObject({
        name: "shared",
        orgId: "acme",
      });
      // The same name in another org: no conflict, and nothing says acme has one.
      expect((await g.createEndpoint({ endpoint: shared(globexRx.url) })).endpoint).toMatchObject({
        name: "shared",
        orgId: "globex",
      });
      for (const org of [a, g]) {
        const again = await org
          .createEndpoint({ endpoint: shared(acmeRx.url) })
          .catch((e: unknown) => ConnectError.from(e));
        expect(again).toMatchObject({ code: Code.AlreadyExists, rawMessage: 'endpoint "shared" already exists' });
      }
      expect((await a.getEndpoint({ name: "shared" })).endpoint?.url).toBe(acmeRx.url);
      expect((await g.getEndpoint({ name: "shared" })).endpoint?.url).toBe(globexRx.url);
      expect((await g.listEndpoints({})).endpoints.filter((e) => e.name === "shared").map((e) => e.url)).toEqual([
        globexRx.url,
      ]);
      // The operator sees both: the second under ORG/NAME, and ORG/NAME finds either.
      const mine = (await operator.listEndpoints({})).endpoints.filter((e) => e.name.endsWith("shared"));
      expect(mine.map((e) => [e.name, e.orgId])).toEqual([
        ["globex/shared", "globex"],
        ["shared", "acme"],
      ]);
      expect((await operator.getEndpoint({ name: "acme/shared" })).endpoint?.url).toBe(acmeRx.url);
      expect((await operator.getEndpoint({ name: "globex/shared" })).endpoint?.url).toBe(globexRx.url);
      // Naming the other org's ORG/NAME is NOT_FOUND, like any missing endpoint.
      expect(await code(a.getEndpoint({ name: "globex/shared" }))).toBe(Code.NotFound);
      expect((await g.getEndpoint({ name: "globex/shared" })).endpoint?.name).toBe("shared");

      // Traffic of both orgs: each org's "shared" receives its org's events only.
      const sidecar = openSidecarStreamWithToken(fx);
      const events = [
        completion("gpt-4", 500, { orgId: "acme", app: "chat" }),
        completion("gpt-4", 500, { orgId: "globex", app: "chat" }),
        completion("gpt-4", 500, { orgId: "globex", app: "chat" }),
      ];
      await sidecar.sendBatch(events);
      sidecar.close();
      await waitFor(
        "each org's shared endpoint got its events",
        () => acmeRx.received.length >= 1 && globexRx.received.length >= 2,
      );
      expect(acmeRx.received.map((r) => r.body.org_id)).toEqual(["acme"]);
      expect(globexRx.received.map((r) => r.body.org_id)).toEqual(["globex", "globex"]);
      const globexDeliveries = (await g.listDeliveries({ endpoint: "shared" })).deliveries;
      expect(globexDeliveries.map((d) => d.endpoint)).toEqual(["shared", "shared"]);
      expect((await operator.listDeliveries({ endpoint: "globex/shared" })).deliveries.map((d) => d.endpoint)).toEqual([
        "globex/shared",
        "globex/shared",
      ]);
      expect((await a.listDeliveries({ endpoint: "shared" })).deliveries).toHaveLength(1);
      // Results are recorded a moment after the receiver answered (on PostgreSQL, up to 20 ms).
      await waitFor(
        "globex's two deliveries recorded",
        async () => (await g.getStats({})).endpoints.find((s) => s.endpoint === "shared")?.delivered === 2n,
      );
      expect((await operator.getStats({})).endpoints.find((s) => s.endpoint === "globex/shared")?.delivered).toBe(2n);

      // Each org's verbs reach its own endpoint only.
      await g.pauseEndpoint({ name: "shared" });
      expect((await a.getEndpoint({ name: "shared" })).endpoint?.paused).toBe(false);
      expect((await g.getEndpoint({ name: "shared" })).endpoint?.paused).toBe(true);
      await g.resumeEndpoint({ name: "shared" });
      // Its failover by name is its own endpoint, shown by name.
      const primary = await g.createEndpoint({
        endpoint: { ...shared(globexRx.url), name: "shared-primary", failoverTo: "shared" },
      });
      expect(primary.endpoint?.failoverTo).toBe("shared");
      expect((await operator.getEndpoint({ name: "globex/shared-primary" })).endpoint?.name).toBe("shared-primary");
      expect((await operator.getEndpoint({ name: "shared-primary" })).endpoint?.failoverTo).toBe("globex/shared");
      const blocked = await g.deleteEndpoint({ name: "shared" }).catch((e: unknown) => ConnectError.from(e));
      expect(blocked).toMatchObject({ code: Code.FailedPrecondition });
      expect((blocked as ConnectError).rawMessage).toContain('the failover of "shared-primary"');
      await g.deleteEndpoint({ name: "shared-primary" });
      await g.deleteEndpoint({ name: "shared" });
      expect(await code(g.getEndpoint({ name: "shared" }))).toBe(Code.NotFound);
      expect((await a.getEndpoint({ name: "shared" })).endpoint?.url).toBe(acmeRx.url);
      await a.deleteEndpoint({ name: "shared" });
    } finally {
      await acmeRx.close();
      await globexRx.close();
    }
  });

  it("the feed shows its org only, and a revoked token's open watch ends within a second", async () => {
    const seen: WatchResponse[] = [];
    const abort = new AbortController();
    const watching = (async () => {
      for await (const res of acme.feed.watch({ since: { seconds: 3600n } }, { signal: abort.signal })) seen.push(res);
    })().then(
      () => "ended" as const,
      (err: unknown) => ConnectError.from(err),
    );
    await waitFor("acme's events replayed", () => seen.filter((r) => r.event).length >= 2);
    expect(new Set(seen.flatMap((r) => (r.event ? [r.event.orgId] : [])))).toEqual(new Set(["acme"]));
    expect(await code(drain(acme.feed.watch({ orgId: "globex" })))).toBe(Code.PermissionDenied);

    const revokedAt = Date.now();
    await operator.revokeToken({ id: acmeTokenId });
    const outcome = await Promise.race([
      watching,
      new Promise<"still open">((r) => setTimeout(() => r("still open"), 5_000)),
    ]);
    abort.abort();
    expect(outcome).toBeInstanceOf(ConnectError);
    expect((outcome as ConnectError).code).toBe(Code.Unauthenticated);
    expect((outcome as ConnectError).rawMessage).toContain("token revoked");
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(await code(acme.admin.listEndpoints({}))).toBe(Code.Unauthenticated);
    const listed = await operator.listTokens({ includeRevoked: true });
    expect(listed.tokens.find((t) => t.id === acmeTokenId)?.revokeTime).toBeDefined();
    expect((await operator.listTokens({})).tokens.find((t) => t.id === acmeTokenId)).toBeUndefined();
  });
});

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) break;
}
