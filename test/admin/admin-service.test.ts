import { create, toJson } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AdminService, DeliveryStatus } from "../../gen/aigw/v1/admin_pb.js";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { newEventId } from "../../common/ids.js";
import { webhookBody } from "../../common/webhook-body.js";
import type { AttemptOutcome, NewAttempt } from "../../control-plane/store/store.js";
import { ErrorDetailSchema } from "../../gen/aigw/v1/errors_pb.js";
import type { ErrorCode } from "../../common/errors.js";
import { rpcErrorCode } from "../../common/rpc-errors.js";
import { type AdminFixture, openAdminFixture, SECRET_A, SECRET_B } from "./fixture.js";
import { claimDue } from "../support/claims.js";

async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

function completionEvent(requestId: string): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_1",
    app: "shop",
    provider: "openai",
    time: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
    payload: {
      case: "completion",
      value: { requestId, model: "gpt-4", tokensUsed: 1250, promptTokens: 450, completionTokens: 800, latencyMs: 900 },
    },
  });
}

const https = (host: string) => `https://${host}.example.com/hooks`;

describe("AdminService endpoints", () => {
  let f: AdminFixture;
  beforeEach(async () => {
    f = await openAdminFixture();
  });
  afterEach(async () => {
    await f.close();
  });

  it("creates, reads, lists, updates and deletes endpoints", async () => {
    const backup = await f.client.createEndpoint({
      endpoint: { name: "backup", url: https("backup"), secret: SECRET_B, enabled: true },
    });
    expect(backup.endpoint).toMatchObject({ name: "backup", url: https("backup"), enabled: true, signingKeyCount: 1 });
    // The product page's pair: primary fails over to backup unless told otherwise.
    const primary = await f.client.createEndpoint({
      endpoint: {
        name: "primary",
        url: https("api"),
        secret: SECRET_A,
        enabled: true,
        eventTypes: [EventType.COMPLETION, EventType.ERROR],
      },
    });
    expect(primary.endpoint?.failoverTo).toBe("backup");
    expect(primary.endpoint?.eventTypes).toEqual([EventType.COMPLETION, EventType.ERROR]);
    expect(primary.endpoint?.createTime).toBeDefined();
    expect(f.counters.endpointsChanged).toBe(2);

    const got = await f.client.getEndpoint({ name: "primary" });
    expect(got.endpoint?.url).toBe(https("api"));
    const list = await f.client.listEndpoints({});
    expect(list.endpoints.map((e) => e.name).sort()).toEqual(["backup", "primary"]);

    // Only the masked field changes.
    const moved = await f.client.updateEndpoint({
      endpoint: { name: "primary", url: https("new"), enabled: false },
      updateMask: { paths: ["url"] },
    });
    expect(moved.endpoint).toMatchObject({ url: https("new"), enabled: true, failoverTo: "backup" });
    const disabled = await f.client.updateEndpoint({
      endpoint: { name: "primary", enabled: false },
      updateMask: { paths: ["enabled"] },
    });
    expect(disabled.endpoint).toMatchObject({ url: https("new"), enabled: false });
    const retyped = await f.client.updateEndpoint({
      endpoint: { name: "primary", eventTypes: [EventType.STREAMING] },
      updateMask: { paths: ["event_types"] },
    });
    expect(retyped.endpoint?.eventTypes).toEqual([EventType.STREAMING]);

    // An empty mask sets every field; an empty secret keeps the keys.
    const replaced = await f.client.updateEndpoint({
      endpoint: { name: "primary", url: https("api"), enabled: true, failoverTo: "" },
    });
    expect(replaced.endpoint).toMatchObject({
      url: https("api"),
      enabled: true,
      eventTypes: [],
      failoverTo: "",
      signingKeyCount: 1,
    });

    const dup = await rpcError(
      f.client.createEndpoint({ endpoint: { name: "primary", url: https("x"), secret: SECRET_A } }),
    );
    expect(dup.code).toBe(Code.AlreadyExists);

    await f.client.deleteEndpoint({ name: "backup" });
    expect((await rpcError(f.client.getEndpoint({ name: "backup" }))).code).toBe(Code.NotFound);
    expect((await rpcError(f.client.deleteEndpoint({ name: "backup" }))).code).toBe(Code.NotFound);
    expect((await f.client.listEndpoints({})).endpoints.map((e) => e.name)).toEqual(["primary"]);
  });

  it("refuses to delete an endpoint another one fails over to", async () => {
    await f.client.createEndpoint({ endpoint: { name: "backup", url: https("b"), secret: SECRET_B, enabled: true } });
    await f.client.createEndpoint({ endpoint: { name: "primary", url: https("a"), secret: SECRET_A, enabled: true } });
    const err = await rpcError(f.client.deleteEndpoint({ name: "backup" }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain('failover of "primary"');
    const cycle = await rpcError(
      f.client.updateEndpoint({
        endpoint: { name: "backup", failoverTo: "primary" },
        updateMask: { paths: ["failover_to"] },
      }),
    );
    expect(cycle.code).toBe(Code.InvalidArgument);
    expect(cycle.rawMessage).toBe("endpoint.failover_to: failover chain backup → primary → backup is a cycle");
  });

  it("answers INVALID_ARGUMENT naming the field for each bad input", async () => {
    await f.client.createEndpoint({ endpoint: { name: "primary", url: https("a"), secret: SECRET_A, enabled: true } });
    const before = await f.client.listEndpoints({});
    const cases: [string, Promise<unknown>, string, ErrorCode?][] = [
      ["missing endpoint", f.client.createEndpoint({}), "endpoint: required"],
      [
        "bad name",
        f.client.createEndpoint({ endpoint: { name: "Not OK", url: https("a"), secret: SECRET_A } }),
        "endpoint.name: must match [a-z0-9_-]{1,64}",
      ],
      [
        "name too long",
        f.client.createEndpoint({ endpoint: { name: "a".repeat(65), url: https("a"), secret: SECRET_A } }),
        "endpoint.name: must match [a-z0-9_-]{1,64}",
      ],
      [
        "bad URL",
        f.client.createEndpoint({ endpoint: { name: "x", url: "not a url", secret: SECRET_A } }),
        "endpoint.url: is not a valid URL",
        "AIGW_DESTINATION_INVALID",
      ],
      [
        "http with require_https",
        f.client.createEndpoint({ endpoint: { name: "x", url: "http://hooks.example.com/", secret: SECRET_A } }),
        "endpoint.url: uses http:// but security.require_https is true",
        "AIGW_DESTINATION_HTTPS_REQUIRED",
      ],
      [
        "credentials in the URL",
        f.client.createEndpoint({ endpoint: { name: "x", url: "https://u:p@hooks.example.com/", secret: SECRET_A } }),
        "endpoint.url: must not contain credentials",
        "AIGW_DESTINATION_INVALID",
      ],
      [
        "literal private address",
        f.client.createEndpoint({ endpoint: { name: "x", url: "https://10.1.2.3/hook", secret: SECRET_A } }),
        "endpoint.url: destination 10.1.2.3 is a private address; allow it with security.allowed_networks",
        "AIGW_DESTINATION_REFUSED",
      ],
      [
        "IPv4-mapped loopback",
        f.client.createEndpoint({ endpoint: { name: "x", url: "https://[::ffff:127.0.0.1]/hook", secret: SECRET_A } }),
        "endpoint.url: destination ::ffff:7f00:1 carries 127.0.0.1, a loopback address",
        "AIGW_DESTINATION_REFUSED",
      ],
      [
        "trailing-dot localhost",
        f.client.createEndpoint({ endpoint: { name: "x", url: "https://localhost./hook", secret: SECRET_A } }),
        "endpoint.url: destination localhost. ends with a dot",
        "AIGW_DESTINATION_REFUSED",
      ],
      [
        "unknown event type",
        f.client.createEndpoint({
          endpoint: {
            name: "x",
            url: https("a"),
            secret: SECRET_A,
            eventTypes: [EventType.COMPLETION, 99 as EventType],
          },
        }),
        "endpoint.event_types[1]: unknown event type",
      ],
      [
        "missing secret",
        f.client.createEndpoint({ endpoint: { name: "x", url: https("a") } }),
        "endpoint.secret: is empty",
        "AIGW_SECRET_INVALID",
      ],
      [
        "1-byte secret (the config refuses it too)",
        f.client.createEndpoint({ endpoint: { name: "x", url: https("a"), secret: "s" } }),
        'endpoint.secret: is 1 bytes of text; expected "whsec_" + base64 of at least 16 random bytes',
        "AIGW_SECRET_INVALID",
      ],
      [
        "short whsec secret",
        f.client.createEndpoint({ endpoint: { name: "x", url: https("a"), secret: "whsec_b2xk" } }),
        'endpoint.secret: decodes to 3 bytes after "whsec_"',
        "AIGW_SECRET_INVALID",
      ],
      [
        "short secret on rotation",
        f.client.rotateSigningKey({ endpoint: "primary", secret: "whsec_b2xk" }),
        'secret: decodes to 3 bytes after "whsec_"',
        "AIGW_SECRET_INVALID",
      ],
      [
        "malformed whsec secret",
        f.client.createEndpoint({ endpoint: { name: "x", url: https("a"), secret: "whsec_***" } }),
        'endpoint.secret: is not valid base64 after "whsec_"',
        "AIGW_SECRET_INVALID",
      ],
      [
        "unknown failover",
        f.client.createEndpoint({ endpoint: { name: "x", url: https("a"), secret: SECRET_A, failoverTo: "nowhere" } }),
        'endpoint.failover_to: no endpoint named "nowhere"',
      ],
      [
        "self failover",
        f.client.updateEndpoint({
          endpoint: { name: "primary", failoverTo: "primary" },
          updateMask: { paths: ["failover_to"] },
        }),
        "endpoint.failover_to: an endpoint cannot fail over to itself",
      ],
      [
        "unknown mask path",
        f.client.updateEndpoint({ endpoint: { name: "primary" }, updateMask: { paths: ["name"] } }),
        'update_mask.paths[0]: "name" is not one of url, enabled, secret, event_types, failover_to',
      ],
      [
        "bad URL on update",
        f.client.updateEndpoint({ endpoint: { name: "primary", url: "ftp://x/" }, updateMask: { paths: ["url"] } }),
        'endpoint.url: uses the unsupported scheme "ftp"',
        "AIGW_DESTINATION_INVALID",
      ],
      ["page_size too big", f.client.listDeliveries({ pageSize: 1001 }), "page_size: must be 1..1000 (0 for 100)"],
      ["bad status", f.client.listDeliveries({ status: 42 as DeliveryStatus }), "status: unknown delivery status 42"],
      ["bad page token", f.client.listDeliveries({ pageToken: "%%not-a-token%%" }), "page_token: "],
      ["missing delivery id", f.client.getDelivery({ id: "" }), "id: required"],
      ["missing replay id", f.client.replayDelivery({ id: "" }), "id: required"],
      ["missing endpoint name", f.client.getEndpoint({ name: "" }), "name: required"],
      ["missing rotate endpoint", f.client.rotateSigningKey({ endpoint: "" }), "endpoint: required"],
      [
        "bad test event type",
        f.client.sendTestEvent({ eventType: 77 as EventType }),
        "event_type: unknown event type 77",
      ],
    ];
    // All calls are in flight at once; each is awaited below, so mark them handled now.
    for (const [, call] of cases) call.catch(() => {});
    for (const [what, call, message, code = "AIGW_INVALID_ARGUMENT"] of cases) {
      const err = await rpcError(call);
      expect(err.code, what).toBe(Code.InvalidArgument);
      expect(err.rawMessage.startsWith(message), `${what}: ${err.rawMessage}`).toBe(true);
      // The catalogue code and the field travel in the error's details.
      expect(rpcErrorCode(err), what).toBe(code);
      expect(err.findDetails(ErrorDetailSchema)[0]?.field, what).toBe(message.slice(0, message.indexOf(":")));
    }
    // Nothing was changed by any of them.
    expect(await f.client.listEndpoints({})).toEqual(before);
  });

  it("accepts plain http and allow-listed networks when the config says so", async () => {
    f.config.security.requireHttps = false;
    const err = await rpcError(
      f.client.createEndpoint({ endpoint: { name: "local", url: "http://127.0.0.1:9000/hook", secret: SECRET_A } }),
    );
    expect(err.rawMessage).toBe(
      "endpoint.url: destination 127.0.0.1 is a loopback address; allow it with security.allowed_networks",
    );
    f.config.security.allowedNetworks = ["127.0.0.0/8"];
    const ok = await f.client.createEndpoint({
      endpoint: { name: "local", url: "http://127.0.0.1:9000/hook", secret: SECRET_A, enabled: true },
    });
    expect(ok.endpoint?.url).toBe("http://127.0.0.1:9000/hook");
  });

  it("never returns or logs a secret, and rotation leaves two active keys", async () => {
    const responses: unknown[] = [];
    const keep = <T>(schemaName: keyof typeof AdminService.method, r: T): T => {
      responses.push(toJson(AdminService.method[schemaName].output, r as never));
      return r;
    };
    keep(
      "createEndpoint",
      await f.client.createEndpoint({
        endpoint: { name: "primary", url: https("a"), secret: SECRET_A, enabled: true },
      }),
    );
    keep("getEndpoint", await f.client.getEndpoint({ name: "primary" }));
    keep("listEndpoints", await f.client.listEndpoints({}));
    const replaced = keep(
      "updateEndpoint",
      await f.client.updateEndpoint({
        endpoint: { name: "primary", secret: SECRET_B },
        updateMask: { paths: ["secret"] },
      }),
    );
    expect(replaced.endpoint?.signingKeyCount).toBe(1);
    const keysAfterUpdate = await f.store.activeSigningKeys("primary", f.clock.now);
    expect(keysAfterUpdate.map((k) => k.secret)).toEqual([SECRET_B]);

    const rotated = await f.client.rotateSigningKey({ endpoint: "primary" });
    expect(rotated.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(rotated.secret.slice(6), "base64")).toHaveLength(32);
    expect(timestampMs(rotated.previousKeysExpireTime!)).toBe(f.clock.now + 24 * 3600 * 1000);
    const after = keep("getEndpoint", await f.client.getEndpoint({ name: "primary" }));
    expect(after.endpoint?.signingKeyCount).toBe(2);
    const keys = await f.store.activeSigningKeys("primary", f.clock.now);
    expect(keys.map((k) => k.secret)).toEqual([rotated.secret, SECRET_B]);
    keep("listEndpoints", await f.client.listEndpoints({}));

    for (const r of responses) {
      const text = JSON.stringify(r);
      expect(text).not.toContain(SECRET_A);
      expect(text).not.toContain(SECRET_B);
      expect(text).not.toContain(rotated.secret);
      expect(text).not.toMatch(/"secret"/);
    }
    const logs = f.logs();
    expect(logs).toContain("signing key rotated");
    for (const s of [SECRET_A, SECRET_B, rotated.secret]) expect(logs).not.toContain(s);
  });

  it("rotates with a given secret and overlap, after which only the new key signs", async () => {
    await f.client.createEndpoint({ endpoint: { name: "primary", url: https("a"), secret: SECRET_A, enabled: true } });
    const rotated = await f.client.rotateSigningKey({ endpoint: "primary", secret: SECRET_B, overlapSeconds: 60 });
    expect(rotated.secret).toBe(SECRET_B);
    expect(timestampMs(rotated.previousKeysExpireTime!)).toBe(f.clock.now + 60_000);
    expect(await f.store.activeSigningKeys("primary", f.clock.now + 59_000)).toHaveLength(2);
    const later = await f.store.activeSigningKeys("primary", f.clock.now + 61_000);
    expect(later.map((k) => k.secret)).toEqual([SECRET_B]);
    expect((await rpcError(f.client.rotateSigningKey({ endpoint: "nope" }))).code).toBe(Code.NotFound);
  });

  it("answers INTERNAL with the cause, and logs it, when the store fails", async () => {
    await f.closeStore();
    const err = await rpcError(f.client.listEndpoints({}));
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("ListEndpoints failed");
    // The cause stays on the server side of the wire.
    const direct = await rpcError(f.service.listEndpoints());
    expect(direct.code).toBe(Code.Internal);
    expect(direct.cause).toBeInstanceOf(Error);
    expect(f.logs()).toContain("admin RPC failed");
  });
});

describe("AdminService deliveries, replay, test events and stats", () => {
  let f: AdminFixture;
  /** Event ids in ingest order. */
  let events: Event[];

  beforeEach(async () => {
    f = await openAdminFixture();
    for (const name of ["alpha", "beta"]) {
      await f.client.createEndpoint({ endpoint: { name, url: https(name), secret: SECRET_A, enabled: true } });
    }
    events = [completionEvent("req_1"), completionEvent("req_2"), completionEvent("req_3")];
    const ingested = await f.store.ingest(events, () => ["alpha", "beta"]);
    expect(ingested.deliveries).toBe(6);

    // alpha: req_1 delivered, req_2 dead-lettered, req_3 failed. beta: one retry pending.
    const now = Date.now() + 1000;
    const claimed = await claimDue(f.store, { now, leaseOwner: "w1", leaseMs: 60_000 });
    expect(claimed).toHaveLength(6);
    const byKey = new Map(claimed.map((c) => [`${c.endpoint}/${c.eventId}`, c]));
    const attempt = (statusCode: number, error: string, latencyMs: number): NewAttempt => ({
      startedAt: now,
      statusCode,
      latencyMs,
      error,
      responseBody: statusCode === 200 ? "ok" : "nope",
    });
    const done = async (endpoint: string, i: number, a: NewAttempt, outcome: AttemptOutcome) => {
      const d = byKey.get(`${endpoint}/${events[i]!.id}`)!;
      const r = await f.store.completeAttempt(d, a, outcome);
      expect(r.recorded).toBe(true);
    };
    await done("alpha", 0, attempt(200, "", 40), { status: "delivered" });
    await done("alpha", 1, attempt(503, "HTTP 503", 60), { status: "dead_lettered" });
    await done("alpha", 2, attempt(400, "HTTP 400", 80), { status: "failed" });
    await done("beta", 0, attempt(503, "HTTP 503", 50), { status: "retry", nextAttemptAt: now + 3_600_000 });
    await f.store.releaseLeases("w1");
  });
  afterEach(async () => {
    await f.close();
  });

  it("lists deliveries with their attempts, by status, endpoint and event", async () => {
    const all = await f.client.listDeliveries({});
    expect(all.deliveries).toHaveLength(6);
    expect(all.nextPageToken).toBe("");

    const delivered = await f.client.listDeliveries({ status: DeliveryStatus.DELIVERED });
    expect(delivered.deliveries).toHaveLength(1);
    const d = delivered.deliveries[0]!;
    expect(d).toMatchObject({
      endpoint: "alpha",
      eventId: events[0]!.id,
      eventType: EventType.COMPLETION,
      attemptCount: 1,
    });
    expect(d.attempts).toHaveLength(1);
    expect(d.attempts[0]).toMatchObject({ number: 1, statusCode: 200, latencyMs: 40, error: "", responseBody: "ok" });
    expect(d.finishTime).toBeDefined();
    expect(d.nextAttemptTime).toBeUndefined();

    const dead = await f.client.listDeliveries({ status: DeliveryStatus.DEAD_LETTERED });
    expect(dead.deliveries.map((x) => [x.endpoint, x.eventId, x.lastError])).toEqual([
      ["alpha", events[1]!.id, "HTTP 503"],
    ]);
    const failed = await f.client.listDeliveries({ status: DeliveryStatus.FAILED });
    expect(failed.deliveries.map((x) => x.eventId)).toEqual([events[2]!.id]);

    const beta = await f.client.listDeliveries({ endpoint: "beta" });
    expect(beta.deliveries).toHaveLength(3);
    expect(beta.deliveries.every((x) => x.status === DeliveryStatus.PENDING)).toBe(true);
    const retried = beta.deliveries.find((x) => x.eventId === events[0]!.id)!;
    expect(retried.attempts.map((a) => a.statusCode)).toEqual([503]);
    expect(retried.nextAttemptTime).toBeDefined();

    const byEvent = await f.client.listDeliveries({ eventId: events[1]!.id });
    expect(byEvent.deliveries.map((x) => x.endpoint).sort()).toEqual(["alpha", "beta"]);
  });

  it("pages through deliveries with page tokens", async () => {
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await f.client.listDeliveries({ pageSize: 4, pageToken: token });
      expect(page.deliveries.length).toBeLessThanOrEqual(4);
      seen.push(...page.deliveries.map((x) => x.id));
      token = page.nextPageToken;
      pages++;
    } while (token !== "" && pages < 10);
    expect(pages).toBe(2);
    expect(new Set(seen).size).toBe(6);
  });

  it("shows one delivery with its attempts and the webhook body", async () => {
    const dead = (await f.client.listDeliveries({ status: DeliveryStatus.DEAD_LETTERED })).deliveries[0]!;
    const got = await f.client.getDelivery({ id: dead.id });
    expect(got.delivery?.id).toBe(dead.id);
    expect(got.delivery?.attempts.map((a) => a.error)).toEqual(["HTTP 503"]);
    expect(got.body).toBe(JSON.stringify(webhookBody(events[1]!)));
    expect(JSON.parse(got.body)).toMatchObject({ event: "completion", request_id: "req_2", model: "gpt-4" });
    expect((await rpcError(f.client.getDelivery({ id: "dlv_missing" }))).code).toBe(Code.NotFound);
  });

  it("replays one delivery, then only the dead letters not yet replayed", async () => {
    const dead = (await f.client.listDeliveries({ status: DeliveryStatus.DEAD_LETTERED })).deliveries[0]!;
    const bulk = await f.client.replayDeliveries({ endpoint: "beta" });
    expect(bulk.replayed).toBe(0);
    expect(f.counters.notified).toBe(0);
    const replay = await f.client.replayDelivery({ id: dead.id });
    expect(replay.delivery).toMatchObject({
      eventId: dead.eventId,
      endpoint: "alpha",
      status: DeliveryStatus.PENDING,
      originDeliveryId: dead.id,
      attemptCount: 0,
    });
    expect(replay.delivery?.id).not.toBe(dead.id);
    expect(f.counters.notified).toBe(1);

    const pending = (await f.client.listDeliveries({ endpoint: "beta" })).deliveries[0]!;
    const still = await rpcError(f.client.replayDelivery({ id: pending.id }));
    expect(still.code).toBe(Code.FailedPrecondition);
    expect((await rpcError(f.client.replayDelivery({ id: "dlv_missing" }))).code).toBe(Code.NotFound);

    // Bulk replay takes only dead letters not replayed yet: alpha's was, just now.
    expect((await f.client.replayDeliveries({})).replayed).toBe(0);
    expect(f.counters.notified).toBe(1);
    expect((await rpcError(f.client.replayDeliveries({ endpoint: "nope" }))).code).toBe(Code.NotFound);

    await f.client.updateEndpoint({ endpoint: { name: "alpha", enabled: false }, updateMask: { paths: ["enabled"] } });
    const disabled = await rpcError(f.client.replayDelivery({ id: dead.id }));
    expect(disabled.code).toBe(Code.FailedPrecondition);
    expect(disabled.rawMessage).toBe('endpoint "alpha" is disabled');
  });

  it("replays every dead letter in bulk, once", async () => {
    const dead = (await f.client.listDeliveries({ status: DeliveryStatus.DEAD_LETTERED })).deliveries[0]!;
    const bulk = await f.client.replayDeliveries({});
    expect(bulk.replayed).toBe(1);
    expect(f.counters.notified).toBe(1);
    const pending = await f.client.listDeliveries({ endpoint: "alpha", status: DeliveryStatus.PENDING });
    expect(pending.deliveries.map((d) => [d.eventId, d.originDeliveryId])).toEqual([[dead.eventId, dead.id]]);
    expect((await f.client.replayDeliveries({})).replayed).toBe(0);
  });

  it("sends test events to the named endpoint or every subscribed one", async () => {
    await f.client.createEndpoint({
      endpoint: {
        name: "errors",
        url: https("errors"),
        secret: SECRET_A,
        enabled: true,
        eventTypes: [EventType.ERROR],
      },
    });
    await f.client.createEndpoint({ endpoint: { name: "off", url: https("off"), secret: SECRET_A, enabled: false } });

    const completion = await f.client.sendTestEvent({});
    const ev = completion.event!;
    expect(ev.orgId).toBe("test");
    expect(ev.app).toBe("aigw-test");
    expect(ev.payload.case).toBe("completion");
    const body = webhookBody(ev);
    expect(body).toMatchObject({
      event: "completion",
      model: "gpt-4",
      tokens_used: 1250,
      org_id: "test",
      app: "aigw-test",
    });
    expect(body.request_id).toMatch(/^req_/);
    const endpointsOf = async (ids: string[], eventId: string) => {
      const l = await f.client.listDeliveries({ eventId });
      expect(l.deliveries.map((d) => d.id).sort()).toEqual([...ids].sort());
      return l.deliveries.map((d) => d.endpoint).sort();
    };
    expect(await endpointsOf(completion.deliveryIds, ev.id)).toEqual(["alpha", "beta"]);

    const error = await f.client.sendTestEvent({ eventType: EventType.ERROR });
    expect(error.event?.payload.case).toBe("error");
    expect(await endpointsOf(error.deliveryIds, error.event!.id)).toEqual(["alpha", "beta", "errors"]);

    const named = await f.client.sendTestEvent({ endpoint: "errors", eventType: EventType.BUDGET });
    expect(named.event?.payload.case).toBe("budget");
    expect(await endpointsOf(named.deliveryIds, named.event!.id)).toEqual(["errors"]);

    expect((await rpcError(f.client.sendTestEvent({ endpoint: "off" }))).code).toBe(Code.FailedPrecondition);
    expect((await rpcError(f.client.sendTestEvent({ endpoint: "nope" }))).code).toBe(Code.NotFound);

    // Nobody subscribes to rate_limit once the runtime subscription drops it.
    await f.client.updateSubscription({ subscribe: [EventType.COMPLETION] });
    const nobody = await rpcError(f.client.sendTestEvent({ eventType: EventType.RATE_LIMIT }));
    expect(nobody.code).toBe(Code.FailedPrecondition);
    expect(nobody.rawMessage).toBe("no enabled endpoint receives rate_limit events");
  });

  it("reports per-endpoint stats with circuit state and events ingested", async () => {
    await f.client.createEndpoint({
      endpoint: { name: "quiet", url: https("quiet"), secret: SECRET_A, enabled: true },
    });
    f.openCircuits.add("alpha");
    const stats = await f.client.getStats({});
    expect(stats.eventsIngested).toBe(3n);
    const by = Object.fromEntries(stats.endpoints.map((s) => [s.endpoint, s]));
    expect(Object.keys(by).sort()).toEqual(["alpha", "beta", "quiet"]);
    expect(by.alpha).toMatchObject({ delivered: 1n, failed: 1n, deadLettered: 1n, pending: 0n, circuitOpen: true });
    expect(by.alpha!.successRate).toBeCloseTo(1 / 3, 6);
    expect(by.alpha!.latencyP99Ms).toBeGreaterThanOrEqual(by.alpha!.latencyP50Ms);
    expect(by.alpha!.latencyP99Ms).toBeGreaterThan(0);
    expect(by.alpha!.failureReasons.map((r) => r.reason).sort()).toEqual(["HTTP 400", "HTTP 503"]);
    expect(by.beta).toMatchObject({ delivered: 0n, pending: 3n, successRate: 1, circuitOpen: false });
    expect(by.quiet).toMatchObject({ delivered: 0n, pending: 0n, successRate: 1 });

    // A window that starts after everything happened sees no events.
    f.clock.now = Date.now() + 3_600_000;
    const later = await f.client.getStats({ windowSeconds: 60 });
    expect(later.eventsIngested).toBe(0n);
  });
});
