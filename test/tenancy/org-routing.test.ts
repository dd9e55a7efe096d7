import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { newEventId } from "../../common/ids.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { ConfigError } from "../../control-plane/config/types.js";
import { budgetEvent } from "../../control-plane/budgets/budget-ledger.js";
import { EventRouter } from "../../control-plane/routing/event-router.js";
import type { EndpointRecord } from "../../control-plane/store/store.js";
import {
  deliveryExhaustedEvent,
  endpointDisabledEvent,
  endpointRecoveredEvent,
  operatorTargets,
} from "../../control-plane/store/operator-events.js";

// The routing rule of orgs (DESIGN.md "Orgs"), for every event type: an operator endpoint
// gets every org's events, an org's endpoint only its org's, with apps only those apps'
// (an event of no app, a budget event, reaches every endpoint of its org).

const endpoint = (name: string, orgId = "", apps: string[] = []): EndpointRecord => ({
  name,
  url: `https://example.com/${name}`,
  enabled: true,
  eventTypes: [],
  failoverTo: "",
  disabledReason: "",
  createdAt: 0,
  updatedAt: 0,
  signingKeyCount: 1,
  filters: { completionModels: [], completionMinTokens: 0, errorSeverities: [] },
  orgId,
  apps,
  oneOff: false,
  paused: false,
  pausedAt: null,
});

/** endpoint.disabled for `name` of `orgId` after a 410, none pending. */
const goneEvent = (name: string, orgId: string, now: number): Event =>
  endpointDisabledEvent({ name, orgId }, "gone", "410", { statusCode: 410, lastError: "" }, 0, now);

const envelope = (orgId: string, app: string) => ({
  id: newEventId(),
  orgId,
  app,
  provider: "openai",
  time: timestampNow(),
});

/** One event of each type, as the sidecar of (org, app) reports it, and the budget event of org's budget. */
function everyType(orgId: string, app: string): Record<string, Event> {
  return {
    completion: create(EventSchema, {
      ...envelope(orgId, app),
      payload: { case: "completion", value: { requestId: "r1", model: "gpt-4", tokensUsed: 500 } },
    }),
    error: create(EventSchema, {
      ...envelope(orgId, app),
      payload: { case: "error", value: { requestId: "r2", errorType: "timeout", severity: "error" } },
    }),
    streaming: create(EventSchema, {
      ...envelope(orgId, app),
      payload: { case: "streaming", value: { requestId: "r3", tokenIndex: 0, content: "Hi" } },
    }),
    rate_limit: create(EventSchema, {
      ...envelope(orgId, app),
      payload: { case: "rateLimit", value: { requestId: "r4", source: "upstream", limitType: "requests" } },
    }),
    budget: budgetEvent(
      {
        eventId: newEventId(),
        budget: { orgId, limitType: "monthly", budgetLimit: 10, thresholds: [50], enforce: false },
        currentSpend: 6,
        threshold: 50,
        period: "2026-11",
      } as Parameters<typeof budgetEvent>[0],
      Date.now(),
    ),
  };
}

const ALL = { events: { subscribe: ["completion", "error", "streaming", "budget", "rate_limit"] } } as const;

function router(): EventRouter {
  const config = parseConfig(`events:\n  subscribe: ${JSON.stringify(ALL.events.subscribe)}\n`, {
    file: "t.yaml",
    env: {},
  });
  return new EventRouter(config, [
    endpoint("ops"),
    endpoint("acme-all", "acme"),
    endpoint("acme-chat", "acme", ["chat"]),
    endpoint("globex-all", "globex"),
  ]);
}

describe("routing by org and app, every event type", () => {
  const r = router();

  it.each(["completion", "error", "streaming", "rate_limit", "budget"])("%s events of org acme, app chat", (type) => {
    const event = everyType("acme", "chat")[type] as Event;
    expect(event.orgId).toBe("acme");
    expect(r.route(event).sort()).toEqual(["acme-all", "acme-chat", "ops"]);
  });

  it.each(["completion", "error", "streaming", "rate_limit"])("%s events of org acme, app batch", (type) => {
    expect(r.route(everyType("acme", "batch")[type] as Event).sort()).toEqual(["acme-all", "ops"]);
  });

  it("a budget event has no app: it reaches every endpoint of its org, apps or not", () => {
    const budget = everyType("acme", "batch").budget as Event;
    expect(budget.app).toBe("");
    expect(r.route(budget).sort()).toEqual(["acme-all", "acme-chat", "ops"]);
  });

  it.each(["completion", "error", "streaming", "rate_limit", "budget"])("%s events of org globex", (type) => {
    expect(r.route(everyType("globex", "chat")[type] as Event).sort()).toEqual(["globex-all", "ops"]);
  });

  it.each(["completion", "error", "streaming", "rate_limit", "budget"])(
    "%s events of an org with no endpoint reach the operator's only",
    (type) => {
      expect(r.route(everyType("initech", "chat")[type] as Event)).toEqual(["ops"]);
    },
  );

  it("operator events about an org's endpoint reach that org's other endpoints and the operator's, never another org's", () => {
    const config = parseConfig("events:\n  subscribe: [endpoint.disabled, endpoint.recovered, delivery.exhausted]\n", {
      file: "t.yaml",
      env: {},
    });
    const ops = new EventRouter(config, [
      endpoint("ops"),
      endpoint("acme-all", "acme"),
      endpoint("acme-chat", "acme", ["chat"]),
      endpoint("globex-all", "globex"),
    ]);
    const route = (e: Event) => ops.route(e);
    const now = Date.now();
    const disabled = goneEvent("acme-chat", "acme", now);
    expect(operatorTargets(route, disabled).sort()).toEqual(["acme-all", "ops"]);
    const recovered = endpointRecoveredEvent({ name: "globex-all", orgId: "globex" }, now - 1000, now);
    expect(operatorTargets(route, recovered).sort()).toEqual(["ops"]);
    const operatorOwn = goneEvent("ops", "", now);
    expect(operatorTargets(route, operatorOwn)).toEqual([]);
  });

  it("an operator event about an endpoint stored as ORG/NAME names it as its org does, and only it is left out", () => {
    const config = parseConfig("events:\n  subscribe: [endpoint.disabled, delivery.exhausted]\n", {
      file: "t.yaml",
      env: {},
    });
    // The operator's "hook" held the name when globex made its own "hook".
    const router = new EventRouter(config, [
      endpoint("hook"),
      endpoint("globex/hook", "globex"),
      endpoint("globex-all", "globex"),
    ]);
    const route = (e: Event) => router.route(e);
    const now = Date.now();
    const disabled = goneEvent("globex/hook", "globex", now);
    expect(disabled.payload.case === "endpointDisabled" && disabled.payload.value.endpoint).toBe("hook");
    expect(operatorTargets(route, disabled).sort()).toEqual(["globex-all", "hook"]);
    const exhausted = deliveryExhaustedEvent(
      {
        id: "d1",
        endpoint: "globex/hook",
        eventId: "e1",
        eventType: EventType.COMPLETION,
        attemptCount: 3,
        lastError: "HTTP 500",
        originDeliveryId: "",
      },
      "globex",
      now,
    );
    expect(exhausted?.payload.case === "deliveryExhausted" && exhausted.payload.value.endpoint).toBe("hook");
    expect(operatorTargets(route, exhausted as Event).sort()).toEqual(["globex-all", "hook"]);
    // The operator's own "hook" is the one left out of an event about it.
    const own = goneEvent("hook", "", now);
    expect(operatorTargets(route, own)).toEqual([]);
  });

  it("an org endpoint failing over to the operator's does not make it a standby", () => {
    const failing = (name: string, orgId: string, failoverTo: string) => ({ ...endpoint(name, orgId), failoverTo });
    const r2 = new EventRouter(parseConfig("webhooks: {}\n", { file: "t.yaml", env: {} }), [
      endpoint("ops"),
      failing("acme-main", "acme", "ops"),
      failing("acme-primary", "acme", "acme-backup"),
      endpoint("acme-backup", "acme"),
    ]);
    expect(r2.route(everyType("globex", "chat").completion as Event)).toEqual(["ops"]);
    expect(r2.route(everyType("acme", "chat").completion as Event).sort()).toEqual([
      "acme-main",
      "acme-primary",
      "ops",
    ]);
  });

  it("apps limit only an org's endpoint: an operator endpoint takes every app", () => {
    const lone = new EventRouter(parseConfig("webhooks: {}\n", { file: "t.yaml", env: {} }), [
      endpoint("ops", "", ["chat"]),
    ]);
    expect(lone.route(everyType("acme", "batch").completion as Event)).toEqual(["ops"]);
  });
});

describe("config: org endpoints, org tokens, failover across orgs", () => {
  const base = (webhooks: string, extra = "") =>
    `webhooks:\n${webhooks}\nsecurity:\n  require_https: false\n  allowed_networks: ["127.0.0.0/8"]\n${extra}`;
  const ep = (name: string, lines: string) =>
    `  ${name}:\n    url: "http://127.0.0.1:9/${name}"\n    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n${lines}`;

  it("reads org_id and apps, and auth.orgs", () => {
    const config = parseConfig(
      base(
        `${ep("ops", "")}${ep("acme", '    org_id: acme\n    apps: ["chat", "search"]\n')}`,
        'auth:\n  admin_tokens: ["op"]\n  orgs:\n    acme:\n      admin_tokens: ["a-admin"]\n      sidecar_tokens: ["a-side"]\n',
      ),
      { file: "t.yaml", env: {} },
    );
    expect(config.webhooks.ops).toMatchObject({ orgId: "", apps: [] });
    expect(config.webhooks.acme).toMatchObject({ orgId: "acme", apps: ["chat", "search"] });
    expect(config.auth.orgs).toEqual({ acme: { adminTokens: ["a-admin"], sidecarTokens: ["a-side"] } });
  });

  it("a failover across orgs, apps without an org, a bad org id and a token in two scopes are errors with their lines", () => {
    const yaml = base(
      [
        ep("primary", "    org_id: acme\n"),
        ep("backup", "    org_id: globex\n"),
        ep("ops", '    failover_to: "acme-b"\n'),
        ep("acme-b", "    org_id: acme\n"),
        ep("loose", '    apps: ["chat"]\n'),
        ep("odd", '    org_id: "has space"\n'),
      ].join(""),
      'auth:\n  admin_tokens: ["same"]\n  orgs:\n    acme:\n      admin_tokens: ["same"]\n',
    );
    let error: ConfigError | undefined;
    try {
      parseConfig(yaml, { file: "t.yaml", env: {} });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const lines = yaml.split("\n");
    const lineOf = (text: string, from = 0) => lines.findIndex((l, i) => i >= from && l.includes(text)) + 1;
    const problems = error?.problems ?? [];
    expect(problems).toContainEqual({
      path: "webhooks.primary.failover_to",
      line: lineOf("  primary:"),
      message: expect.stringContaining('"backup" belongs to org "globex", not "acme"'),
    });
    expect(problems).toContainEqual({
      path: "webhooks.ops.failover_to",
      line: lineOf('failover_to: "acme-b"'),
      message: expect.stringContaining("an operator endpoint (every org's events) fails over only to another operator"),
    });
    expect(problems).toContainEqual({
      path: "webhooks.loose.apps",
      line: lineOf('apps: ["chat"]'),
      message: expect.stringContaining("needs org_id"),
    });
    expect(problems).toContainEqual({
      path: "webhooks.odd.org_id",
      line: lineOf('org_id: "has space"'),
      message: expect.stringContaining("is not an org id"),
    });
    expect(problems).toContainEqual({
      path: "auth.orgs.acme.admin_tokens[0]",
      line: lines.length - 1,
      message: "is the same token as auth.admin_tokens[0]; expected one scope per token",
    });
    expect(problems).toHaveLength(5);
  });

  it("the product page's file keeps loading: no org means operator endpoints", async () => {
    const { loadConfigFile } = await import("../../control-plane/config/load.js");
    const config = loadConfigFile("examples/webhook_config.yaml", {
      WEBHOOK_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      BACKUP_WEBHOOK_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    expect(Object.values(config.webhooks).map((w) => w.orgId)).toEqual(["", ""]);
  });
});
