import type { MessageInitShape } from "@bufbuild/protobuf";
import type { EventFilters, EventFiltersSchema } from "../gen/aigw/v1/admin_pb.js";
import type { EventType } from "../gen/aigw/v1/events_pb.js";
import { eventTypeName } from "../common/event-types.js";
import type { FlagDefs, Flags } from "./command.js";
import { fields } from "./render.js";
import { commaList, parseCount, parseSeverities } from "./values.js";

// Event filters, as flags: shared by `endpoints` (per endpoint) and `subscription` (global).

export const FILTER_FLAGS: FlagDefs = {
  models: {
    type: "string",
    value: "M,…",
    help: 'completion events of these models only (exact, or "prefix*"; "" clears)',
  },
  "min-tokens": { type: "string", value: "N", help: "completion events of at least N tokens (0 clears)" },
  severity: {
    type: "string",
    value: "S,…",
    help: 'error events of these severities only: warning, error, critical ("" clears)',
  },
};

export function hasFilterFlags(flags: Flags): boolean {
  return Object.keys(FILTER_FLAGS).some((f) => flags.has(f));
}

/** Checks the filter flags' values, so a typo is a usage error before any request is made. */
export function checkFilterFlags(flags: Flags): void {
  filtersFromFlags(flags);
}

/** The filter flags over `base` (the current filters); undefined when none is given. */
export function filtersFromFlags(
  flags: Flags,
  base?: EventFilters,
): MessageInitShape<typeof EventFiltersSchema> | undefined {
  if (!hasFilterFlags(flags)) return undefined;
  const models = flags.string("models");
  const minTokens = flags.string("min-tokens");
  const severity = flags.string("severity");
  return {
    completionModels: models !== undefined ? commaList(models) : [...(base?.completionModels ?? [])],
    completionMinTokens:
      minTokens !== undefined ? parseCount("--min-tokens", minTokens, 0) : (base?.completionMinTokens ?? 0),
    errorSeverities: severity !== undefined ? parseSeverities(severity) : [...(base?.errorSeverities ?? [])],
  };
}

export function filtersText(f: EventFilters | undefined): string {
  const parts: string[] = [];
  if (f?.completionModels.length) parts.push(`models ${f.completionModels.join(",")}`);
  if (f?.completionMinTokens) parts.push(`min tokens ${f.completionMinTokens}`);
  if (f?.errorSeverities.length) parts.push(`severity ${f.errorSeverities.join(",")}`);
  return parts.length === 0 ? "none" : parts.join("; ");
}

export function eventTypesText(types: readonly EventType[], none = "all subscribed"): string {
  return types.length === 0 ? none : types.map((t) => eventTypeName(t) ?? String(t)).join(",");
}

export function subscriptionText(s: { subscribe: EventType[]; filters?: EventFilters | undefined }): string {
  return fields([
    ["events", eventTypesText(s.subscribe, "none")],
    ["filters", filtersText(s.filters)],
  ]);
}
