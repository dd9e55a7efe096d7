import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type { EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeFromName, eventTypeOfCase } from "../../common/event-types.js";
import type { EndpointRecord } from "../store/store.js";
import type { EventFilters, GatewayConfig } from "../config/types.js";

/**
 * Decides which endpoints receive an event: the global subscription and filters
 * (events.subscribe, events.filters), then each enabled endpoint's own event types and
 * filters. An endpoint that another enabled endpoint fails over to is a standby: it gets
 * deliveries only by failover (DESIGN.md: "backup receives what primary could not take"). Compiled once per config/endpoint change and swapped in with one assignment,
 * so routing an event is a few set lookups (it runs inside the ingest transaction).
 */
export class EventRouter {
  private compiled: CompiledRouting;

  constructor(config: GatewayConfig, endpoints: readonly EndpointRecord[]) {
    this.compiled = compile(config, endpoints);
  }

  update(config: GatewayConfig, endpoints: readonly EndpointRecord[]): void {
    this.compiled = compile(config, endpoints);
  }

  /** Endpoint names that should receive the event (possibly none). */
  route(event: Event): string[] {
    const c = this.compiled;
    const type = eventTypeOfCase(event.payload.case);
    if (!c.subscribed.has(type) || !passes(event, c.globalFilters)) return [];
    const out: string[] = [];
    for (const ep of c.endpoints) {
      if (ep.types !== null && !ep.types.has(type)) continue;
      if (ep.filters && !passes(event, ep.filters)) continue;
      out.push(ep.name);
    }
    return out;
  }

  /** Event types some enabled endpoint would receive: sidecars skip producing the rest. */
  wantedEventTypes(): EventType[] {
    const c = this.compiled;
    const wanted = new Set<EventType>();
    for (const ep of c.endpoints) {
      for (const t of c.subscribed) if (ep.types === null || ep.types.has(t)) wanted.add(t);
    }
    return [...wanted].sort((a, b) => a - b);
  }
}

interface CompiledEndpoint {
  name: string;
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

function compile(config: GatewayConfig, endpoints: readonly EndpointRecord[]): CompiledRouting {
  const subscribed = new Set<EventType>();
  for (const name of config.events.subscribe) {
    const t = eventTypeFromName(name);
    if (t !== undefined) subscribed.add(t);
  }
  // A failover target ("backup") only receives what its primary could not take.
  const standby = new Set(endpoints.filter((e) => e.enabled && e.failoverTo !== "").map((e) => e.failoverTo));
  return {
    subscribed,
    globalFilters: compileFilters(config.events.filters),
    endpoints: endpoints
      .filter((e) => e.enabled && !standby.has(e.name))
      .map((e) => {
        const own = config.webhooks[e.name]?.filters;
        return {
          name: e.name,
          types: e.eventTypes.length > 0 ? new Set(e.eventTypes) : null,
          filters: own && (own.completion || own.error) ? compileFilters(own) : null,
        };
      }),
  };
}

function compileFilters(filters: EventFilters): CompiledFilters {
  const models = filters.completion?.models;
  const severity = filters.error?.severity;
  return {
    models: models && models.length > 0 ? modelMatcher(models) : null,
    minTokens: filters.completion?.minTokens ?? 0,
    severities: severity && severity.length > 0 ? new Set(severity) : null,
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
