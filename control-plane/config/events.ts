import { EVENT_TYPE_NAMES, type EventTypeName, isEventTypeName } from "../../common/event-types.js";
import type { ConfigReader, Field } from "./reader.js";
import type { EventFilters, EventsConfig } from "./types.js";

export const ERROR_SEVERITIES = ["warning", "error", "critical"] as const;

const FILTERABLE = "filters exist for completion (models, min_tokens) and error (severity)";

export function unknownEventType(name: string): string {
  return `unknown event type ${JSON.stringify(name)}; expected one of ${EVENT_TYPE_NAMES.join(", ")}`;
}

/**
 * A list of event type names, duplicates dropped; undefined when absent or invalid.
 * `check` adds a problem of the caller's for a known type (undefined: fine).
 */
export function readEventTypes(
  r: ConfigReader,
  field: Field | undefined,
  check?: (type: EventTypeName) => string | undefined,
): EventTypeName[] | undefined {
  const items = r.list(field, "a list of event types");
  if (!items) return undefined;
  const types = new Set<EventTypeName>();
  let valid = true;
  for (const item of items) {
    const name = r.string(item);
    if (name === undefined) valid = false;
    else if (isEventTypeName(name)) {
      const problem = check?.(name);
      if (problem) r.fail(item, problem);
      types.add(name);
    } else {
      r.fail(item, unknownEventType(name));
      valid = false;
    }
  }
  return valid ? [...types] : undefined;
}

/** `events.filters` and the per-endpoint `filters`: only completion and error have any. */
export function readFilters(r: ConfigReader, field: Field | undefined): EventFilters {
  const filters: EventFilters = {};
  for (const { key, field: typeField } of r.entries(field, "a mapping of event type to filter")) {
    if (!isEventTypeName(key)) {
      r.failEntry(typeField, `${unknownEventType(key)}; ${FILTERABLE}`);
    } else if (key === "completion") {
      const keys = r.section(typeField, ["models", "min_tokens"]);
      const completion: NonNullable<EventFilters["completion"]> = {};
      const modelsField = keys.get("models");
      const models = r.stringList(modelsField);
      if (modelsField && models?.length === 0) {
        r.fail(modelsField, "is empty, which would drop every completion; list at least one model, or remove models");
      } else if (models) completion.models = models;
      const minTokens = r.number(keys.get("min_tokens"), {
        integer: true,
        min: 0,
        max: 100_000_000,
        expected: "a whole number of tokens",
      });
      if (minTokens !== undefined) completion.minTokens = minTokens;
      filters.completion = completion;
    } else if (key === "error") {
      const keys = r.section(typeField, ["severity"]);
      const severityField = keys.get("severity");
      const items = r.list(severityField, "a list of severities");
      const severity: string[] = [];
      for (const item of items ?? []) {
        const value = r.oneOf(item, ERROR_SEVERITIES);
        if (value !== undefined) severity.push(value);
      }
      if (severityField && items?.length === 0) {
        r.fail(severityField, "is empty, which would drop every error; list severities, or remove severity");
      }
      filters.error = items ? { severity } : {};
    } else {
      r.failEntry(typeField, `event type "${key}" has no filters; ${FILTERABLE}`);
    }
  }
  return filters;
}

export function readEvents(r: ConfigReader, field: Field | undefined, defaults: EventsConfig): EventsConfig {
  const keys = r.section(field, ["subscribe", "filters", "streaming", "rate_limit"]);
  const streaming = r.section(keys.get("streaming"), ["coalesce_ms"]);
  const coalesceMs = r.number(streaming.get("coalesce_ms"), {
    integer: true,
    min: 0,
    max: 60_000,
    expected: "a whole number of milliseconds",
    hint: "(0 sends every chunk)",
  });
  const rateLimit = r.section(keys.get("rate_limit"), ["warning_share"]);
  // A share of 1 or more would warn on every response, which is noise, not a warning.
  const warningShare = r.number(rateLimit.get("warning_share"), {
    above: 0,
    below: 1,
    expected: "a share of the provider's limit",
    hint: "(0.1 warns below 10% remaining)",
  });
  return {
    subscribe: readEventTypes(r, keys.get("subscribe")) ?? defaults.subscribe,
    filters: readFilters(r, keys.get("filters")),
    streaming: { coalesceMs: coalesceMs ?? defaults.streaming.coalesceMs },
    rateLimit: { warningShare: warningShare ?? defaults.rateLimit.warningShare },
  };
}
