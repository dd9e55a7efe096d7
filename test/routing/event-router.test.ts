import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { newEventId } from "../../common/ids.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { EventRouter } from "../../control-plane/routing/event-router.js";
import { NO_FILTERS } from "../../control-plane/routing/filters.js";
import type { EndpointRecord } from "../../control-plane/store/store.js";

const endpoint = (name: string, eventTypes: EventType[] = [], enabled = true, failoverTo = ""): EndpointRecord => ({
  name,
  paused: false,
  pausedAt: null,
  url: `https://example.com/${name}`,
  enabled,
  eventTypes,
  failoverTo,
  disabledReason: "",
  createdAt: 0,
  updatedAt: 0,
  signingKeyCount: 1,
  filters: { completionModels: [], completionMinTokens: 0, errorSeverities: [] },
  orgId: "",
  apps: [],
  oneOff: false,
});

const completion = (model: string, tokensUsed: number): Event =>
  create(EventSchema, {
    id: newEventId(),
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: "req_1", model, tokensUsed } },
  });

const error = (severity: string): Event =>
  create(EventSchema, {
    id: newEventId(),
    time: timestampNow(),
    payload: { case: "error", value: { requestId: "req_2", errorType: "upstream_error", severity } },
  });

const streaming = (): Event =>
  create(EventSchema, {
    id: newEventId(),
    time: timestampNow(),
    payload: { case: "streaming", value: { requestId: "req_3", tokenIndex: 0, content: "Hi" } },
  });

const config = (yaml: string) => parseConfig(yaml, { file: "t.yaml", env: {} });

describe("EventRouter", () => {
  it("applies the product page's filters: models and min_tokens for completions, severity for errors", () => {
    const router = new EventRouter(
      config(`
events:
  subscribe: ["completion", "error"]
  filters:
    completion:
      models: ["gpt-4", "gpt-4-turbo"]
      min_tokens: 100
    error:
      severity: ["error", "critical"]
`),
      [endpoint("primary")],
    );
    expect(router.route(completion("gpt-4", 1250))).toEqual(["primary"]);
    expect(router.route(completion("gpt-4", 99))).toEqual([]);
    expect(router.route(completion("gpt-3.5-turbo", 5000))).toEqual([]);
    expect(router.route(error("critical"))).toEqual(["primary"]);
    expect(router.route(error("warning"))).toEqual([]);
    // Not subscribed.
    expect(router.route(streaming())).toEqual([]);
    expect(router.wantedEventTypes()).toEqual([EventType.COMPLETION, EventType.ERROR]);
  });

  it("matches model prefixes written with a trailing *", () => {
    const router = new EventRouter(
      config(`
events:
  filters:
    completion:
      models: ["gpt-4*"]
`),
      [endpoint("primary")],
    );
    expect(router.route(completion("gpt-4o-mini", 1))).toEqual(["primary"]);
    expect(router.route(completion("o3-mini", 1))).toEqual([]);
  });

  it("routes by each endpoint's event types and skips disabled endpoints", () => {
    const router = new EventRouter(config("{}"), [
      endpoint("all"),
      endpoint("errors", [EventType.ERROR]),
      endpoint("off", [], false),
    ]);
    expect(router.route(completion("gpt-4", 1)).sort()).toEqual(["all"]);
    expect(router.route(error("error")).sort()).toEqual(["all", "errors"]);
    expect(router.wantedEventTypes()).toHaveLength(5);

    router.update(config("{}"), [endpoint("errors", [EventType.ERROR])]);
    expect(router.route(completion("gpt-4", 1))).toEqual([]);
    expect(router.wantedEventTypes()).toEqual([EventType.ERROR]);
  });

  it("keeps a failover target on standby while the endpoint failing over to it is enabled", () => {
    const router = new EventRouter(config("{}"), [endpoint("primary", [], true, "backup"), endpoint("backup")]);
    expect(router.route(completion("gpt-4", 1))).toEqual(["primary"]);
    // With primary disabled, backup is an ordinary endpoint again.
    router.update(config("{}"), [endpoint("primary", [], false, "backup"), endpoint("backup")]);
    expect(router.route(completion("gpt-4", 1))).toEqual(["backup"]);
  });

  it("leaves one-off endpoints (org set) to the event's webhook_url, and applies store-held endpoint filters", () => {
    const oneOff: EndpointRecord = { ...endpoint("oneoff-0123456789abcdef"), orgId: "org_a" };
    const filtered: EndpointRecord = {
      ...endpoint("big", [EventType.COMPLETION]),
      filters: { completionModels: [], completionMinTokens: 1000, errorSeverities: [] },
    };
    const router = new EventRouter({ subscribe: [EventType.COMPLETION], filters: NO_FILTERS }, [oneOff, filtered]);
    expect(router.route(completion("gpt-4", 999))).toEqual([]);
    expect(router.route(completion("gpt-4", 1000))).toEqual(["big"]);
    expect(router.isSubscribed(completion("gpt-4", 1))).toBe(true);
    expect(router.isSubscribed(error("critical"))).toBe(false);
    expect(router.wantedEventTypes()).toEqual([EventType.COMPLETION]);
  });
});
