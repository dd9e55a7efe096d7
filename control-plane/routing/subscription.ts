import type { EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeFromName } from "../../common/event-types.js";
import type { EventsConfig } from "../config/types.js";
import { createHash } from "node:crypto";
import type { EndpointFilters, Store } from "../store/store.js";
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

/** The setting (store/cluster.ts) that holds a subscription set through the Admin API. */
const SETTING = "subscription";

/**
 * The global subscription at runtime. It starts from the config file; the Admin API's
 * changes are kept in the store, so every replica routes with them and they survive a
 * restart, until the config file's own subscription changes (then the file applies again).
 */
export class RuntimeSubscription implements SubscriptionControl {
  private current: SubscriptionSettings;
  private readonly fileDigest: string;

  constructor(
    events: Pick<EventsConfig, "subscribe" | "filters">,
    private readonly onChange: () => Promise<void>,
    private readonly store?: Pick<Store, "getSetting" | "putSetting">,
  ) {
    this.current = subscriptionFromConfig(events);
    this.fileDigest = digest(this.current);
  }

  get(): SubscriptionSettings {
    return this.current;
  }

  /**
   * Takes the subscription the Admin API set (on any replica) when it was set against this
   * config file's subscription; true when that changed what is routed.
   */
  async load(): Promise<boolean> {
    const text = await this.store?.getSetting(SETTING);
    if (text === undefined) return false;
    let saved: { file?: string; subscribe?: EventType[]; filters?: EndpointFilters };
    try {
      saved = JSON.parse(text) as typeof saved;
    } catch {
      return false;
    }
    if (saved.file !== this.fileDigest || !Array.isArray(saved.subscribe) || saved.filters === undefined) return false;
    const next = { subscribe: saved.subscribe, filters: saved.filters };
    if (digest(next) === digest(this.current)) return false;
    this.current = next;
    return true;
  }

  async update(next: Partial<SubscriptionSettings>): Promise<SubscriptionSettings> {
    this.current = {
      subscribe: next.subscribe ? [...new Set(next.subscribe)].sort((a, b) => a - b) : this.current.subscribe,
      filters: next.filters ?? this.current.filters,
    };
    await this.store?.putSetting(SETTING, JSON.stringify({ file: this.fileDigest, ...this.current }));
    await this.onChange();
    return this.current;
  }
}

function digest(s: SubscriptionSettings): string {
  return createHash("sha256")
    .update(JSON.stringify({ subscribe: [...s.subscribe], filters: s.filters }))
    .digest("base64url");
}
