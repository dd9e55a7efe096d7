import type { Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeOfCase, isOperatorEventType } from "../../common/event-types.js";
import type { GatewayConfig } from "../config/types.js";
import type { EndpointFilters, EndpointRecord } from "../store/store.js";
import { hasFilters } from "./filters.js";
import { type SubscriptionSettings, subscriptionFromConfig } from "./subscription.js";

/** The global subscription, or a config to take it from (events.subscribe, events.filters). */
export type RoutingSource = SubscriptionSettings | Pick<GatewayConfig, "events">;

/**
 * Decides which endpoints receive an event: the global subscription and filters
 * (events.subscribe, events.filters), then each enabled endpoint's own event types and
 * filters, as the store holds them (the config file's are upserted there at startup, the
 * Admin API changes them at runtime). An endpoint that another enabled endpoint fails
 * over to is a standby: it gets deliveries only by failover (DESIGN.md: "backup receives
 * what primary could not take"). Orgs (DESIGN.md "Orgs"): an operator endpoint (no org)
 * receives every org's events; an org's endpoint only events of its org, and with apps only
 * those apps' events. The event's org is the one its sidecar's token fixes at ingest
 * (completion, error, streaming, rate_limit) or its budget's (budget); an event of no app
 * (budget) reaches every endpoint of its org, apps or not. Compiled once per subscription/endpoint change and
 * swapped in with one assignment, so routing an event is a few set lookups (it runs inside
 * the ingest transaction, once per event).
 */
export class EventRouter {
  private compiled: CompiledRouting;

  constructor(source: RoutingSource, endpoints: readonly EndpointRecord[]) {
    this.compiled = compile(source, endpoints);
  }

  update(source: RoutingSource, endpoints: readonly EndpointRecord[]): void {
    this.compiled = compile(source, endpoints);
  }

  /** Endpoint names that should receive the event (possibly none). */
  route(event: Event): string[] {
    const c = this.compiled;
    const type = eventTypeOfCase(event.payload.case);
    if (!c.subscribed.has(type) || !passes(event, c.globalFilters)) return [];
    const out: string[] = [];
    for (const ep of c.endpoints) {
      if (ep.orgId !== null && ep.orgId !== event.orgId) continue;
      if (ep.apps !== null && event.app !== "" && !ep.apps.has(event.app)) continue;
      if (ep.types !== null && !ep.types.has(type)) continue;
      if (ep.filters && !passes(event, ep.filters)) continue;
      out.push(ep.name);
    }
    return out;
  }

  /**
   * Whether events.subscribe includes the event's type. One-off endpoints
   * (x-aigw-webhook-url) are subject to this and to nothing else: their request asked
   * for its own events, so no filter (global or an endpoint's) stands in between.
   */
  isSubscribed(event: Event): boolean {
    return this.compiled.subscribed.has(eventTypeOfCase(event.payload.case));
  }

  /** Event types some enabled endpoint would receive that sidecars make: they skip producing the rest. */
  wantedEventTypes(): EventType[] {
    const c = this.compiled;
    const wanted = new Set<EventType>();
    for (const ep of c.endpoints) {
      for (const t of c.subscribed) {
        // Operator events are the control plane's own: no sidecar makes them.
        if (!isOperatorEventType(t) && (ep.types === null || ep.types.has(t))) wanted.add(t);
      }
    }
    return [...wanted].sort((a, b) => a - b);
  }
}

interface CompiledEndpoint {
  name: string;
  /** null: an operator endpoint (every org). */
  orgId: string | null;
  /** null: every app of its org. */
  apps: Set<string> | null;
  /** null: every subscribed type. */
  types: Set<EventType> | null;
  filters: CompiledFilters | null;
}

interface CompiledFilters {
  models: ModelMatcher | null;
  minTokens: number;
  severities: Set<string> | null;
}

interface CompiledRouting {
  subscribed: Set<EventType>;
  globalFilters: CompiledFilters;
  endpoints: CompiledEndpoint[];
}

type ModelMatcher = (model: string) => boolean;

function compile(source: RoutingSource, endpoints: readonly EndpointRecord[]): CompiledRouting {
  const settings = "events" in source ? subscriptionFromConfig(source.events) : source;
  // One-off endpoints are routed by the event's webhook_url, never by subscription.
  const configured = endpoints.filter((e) => !e.oneOff);
  // A failover target ("backup") only receives what its primary could not take. An org's
  // endpoint failing over to an operator endpoint does not make it a standby: it still
  // receives every org's events (an org cannot quiet the operator's endpoint).
  const orgOf = new Map(configured.map((e) => [e.name, e.orgId]));
  const standby = new Set(
    configured
      .filter((e) => e.enabled && e.failoverTo !== "" && orgOf.get(e.failoverTo) === e.orgId)
      .map((e) => e.failoverTo),
  );
  return {
    subscribed: new Set(settings.subscribe),
    globalFilters: compileFilters(settings.filters),
    endpoints: configured
      .filter((e) => e.enabled && !standby.has(e.name))
      .map((e) => ({
        name: e.name,
        orgId: e.orgId === "" ? null : e.orgId,
        apps: e.orgId !== "" && e.apps.length > 0 ? new Set(e.apps) : null,
        types: e.eventTypes.length > 0 ? new Set(e.eventTypes) : null,
        filters: hasFilters(e.filters) ? compileFilters(e.filters) : null,
      })),
  };
}

function compileFilters(filters: EndpointFilters): CompiledFilters {
  const models = filters.completionModels;
  const severity = filters.errorSeverities;
  return {
    models: models.length > 0 ? modelMatcher(models) : null,
    minTokens: filters.completionMinTokens,
    severities: severity.length > 0 ? new Set(severity) : null,
  };
}

/** Exact model names, or a trailing "*" for a prefix ("gpt-4*" matches "gpt-4-0613"). */
function modelMatcher(models: readonly string[]): ModelMatcher {
  const exact = new Set(models.filter((m) => !m.endsWith("*")));
  const prefixes = models.filter((m) => m.endsWith("*")).map((m) => m.slice(0, -1));
  return (model) => exact.has(model) || prefixes.some((p) => model.startsWith(p));
}

function passes(event: Event, f: CompiledFilters): boolean {
  const p = event.payload;
  if (p.case === "completion") {
    if (f.models && !f.models(p.value.model)) return false;
    return p.value.tokensUsed >= f.minTokens;
  }
  if (p.case === "error") return f.severities === null || f.severities.has(p.value.severity);
  return true;
}
