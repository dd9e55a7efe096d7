import type { BudgetState, ConfigSnapshot, GatewayLimit } from "../../gen/aigw/v1/ingest_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";

/**
 * What the proxy needs of the control plane's config, compiled from the latest good
 * ConfigSnapshot and swapped in with one assignment (the proxy reads it per request).
 */
export interface ProxySettings {
  /** Event types some subscription wants; the proxy builds no others. */
  readonly wantedEventTypes: ReadonlySet<EventType>;
  /** 0: one streaming event per chunk; more: a request's chunks merged over this window. */
  readonly streamingCoalesceMs: number;
  /** Remaining share (0..1) of a provider limit under which one warning rate_limit event goes out. */
  readonly rateLimitWarningShare: number;
  readonly budgets: readonly BudgetState[];
  /** This sidecar's share of each gateway limit. */
  readonly limits: readonly GatewayLimit[];
}

/** Until the control plane has spoken: completions and errors, no budgets, no limits. */
export const DEFAULT_PROXY_SETTINGS: ProxySettings = {
  wantedEventTypes: new Set([EventType.COMPLETION, EventType.ERROR]),
  streamingCoalesceMs: 0,
  rateLimitWarningShare: 0.1,
  budgets: [],
  limits: [],
};

export function settingsFromSnapshot(s: ConfigSnapshot): ProxySettings {
  const share = s.rateLimitWarningShare;
  return {
    wantedEventTypes: new Set(s.wantedEventTypes),
    streamingCoalesceMs: s.streamingCoalesceMs,
    rateLimitWarningShare: share > 0 && share < 1 ? share : DEFAULT_PROXY_SETTINGS.rateLimitWarningShare,
    budgets: s.budgets,
    limits: s.limits,
  };
}
