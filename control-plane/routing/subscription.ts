import type { EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeFromName } from "../../common/event-types.js";
import type { EventsConfig } from "../config/types.js";
import type { EndpointFilters } from "../store/store.js";
import { filtersFromConfig } from "./filters.js";

/** events.subscribe and events.filters as the router applies them. */
export interface SubscriptionSettings {
  /** Event types anything is delivered for; the sidecars produce no others. */
  subscribe: readonly EventType[];
  filters: EndpointFilters;
}

/** What the Admin API's GetSubscription and UpdateSubscription read and change. */
export interface SubscriptionControl {
  get(): SubscriptionSettings;
  /** Applies the given parts (absent: kept) and resolves once routing uses them. */
  update(next: Partial<SubscriptionSettings>): Promise<SubscriptionSettings>;
}

export function subscriptionFromConfig(events: Pick<EventsConfig, "subscribe" | "filters">): SubscriptionSettings {
  return {
    subscribe: events.subscribe.flatMap((name) => {
      const t = eventTypeFromName(name);
      return t === undefined ? [] : [t];
    }),
    filters: filtersFromConfig(events.filters),
  };
}

/**
 * The global subscription at runtime. It starts from the config file and lives in memory:
 * the Admin API's changes last until the next start, when the file applies again (as the
 * file's endpoints are applied again at every start).
 */
export class RuntimeSubscription implements SubscriptionControl {
  private current: SubscriptionSettings;

  constructor(
    events: Pick<EventsConfig, "subscribe" | "filters">,
    private readonly onChange: () => Promise<void>,
  ) {
    this.current = subscriptionFromConfig(events);
  }

  get(): SubscriptionSettings {
    return this.current;
  }

  async update(next: Partial<SubscriptionSettings>): Promise<SubscriptionSettings> {
    this.current = {
      subscribe: next.subscribe ? [...new Set(next.subscribe)].sort((a, b) => a - b) : this.current.subscribe,
      filters: next.filters ?? this.current.filters,
    };
    await this.onChange();
    return this.current;
  }
}
