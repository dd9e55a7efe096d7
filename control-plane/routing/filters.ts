import { create } from "@bufbuild/protobuf";
import { type EventFilters as EventFiltersMessage, EventFiltersSchema } from "../../gen/aigw/v1/admin_pb.js";
import { ERROR_SEVERITIES } from "../config/events.js";
import type { EventFilters } from "../config/types.js";
import type { EndpointFilters } from "../store/store.js";

/**
 * Filters in one shape everywhere past the config file: the Admin API's EventFilters,
 * the store's endpoint filters and the router all use EndpointFilters (flat, empty lists
 * meaning "all"); the config file's nested events.filters is converted once at startup.
 */

export const NO_FILTERS: Readonly<EndpointFilters> = Object.freeze({
  completionModels: [],
  completionMinTokens: 0,
  errorSeverities: [],
});

/** A model list longer than this is a mistake (or an attack on the router's memory). */
const MAX_MODELS = 1000;
const MAX_MODEL_LENGTH = 200;

export function filtersFromConfig(f: EventFilters | undefined): EndpointFilters {
  return {
    completionModels: [...(f?.completion?.models ?? [])],
    completionMinTokens: f?.completion?.minTokens ?? 0,
    errorSeverities: [...(f?.error?.severity ?? [])],
  };
}

export function hasFilters(f: EndpointFilters): boolean {
  return f.completionModels.length > 0 || f.completionMinTokens > 0 || f.errorSeverities.length > 0;
}

export function filtersMessage(f: EndpointFilters): EventFiltersMessage {
  return create(EventFiltersSchema, {
    completionModels: [...f.completionModels],
    completionMinTokens: f.completionMinTokens,
    errorSeverities: [...f.errorSeverities],
  });
}

export interface FilterProblem {
  /** The request field, e.g. "filters.error_severities[1]". */
  field: string;
  problem: string;
}

/**
 * The filters an Admin API message asks for, or the first problem with it. `prefix` is
 * where the message sits in the request ("filters", "endpoint.filters"). Repeated models
 * and severities are dropped rather than refused: they change nothing.
 */
export function filtersFromMessage(
  m: EventFiltersMessage | undefined,
  prefix: string,
): { filters: EndpointFilters } | FilterProblem {
  if (m === undefined) return { filters: { ...NO_FILTERS, completionModels: [], errorSeverities: [] } };
  if (m.completionModels.length > MAX_MODELS) {
    return { field: `${prefix}.completion_models`, problem: `at most ${MAX_MODELS} models` };
  }
  for (const [i, model] of m.completionModels.entries()) {
    const problem = modelProblem(model);
    if (problem) return { field: `${prefix}.completion_models[${i}]`, problem };
  }
  const known: readonly string[] = ERROR_SEVERITIES;
  for (const [i, severity] of m.errorSeverities.entries()) {
    if (!known.includes(severity)) {
      return {
        field: `${prefix}.error_severities[${i}]`,
        problem: `${JSON.stringify(severity.slice(0, 40))} is not a severity; expected one of ${ERROR_SEVERITIES.join(", ")}`,
      };
    }
  }
  return {
    filters: {
      completionModels: [...new Set(m.completionModels)],
      completionMinTokens: m.completionMinTokens,
      errorSeverities: [...new Set(m.errorSeverities)],
    },
  };
}

function modelProblem(model: string): string | undefined {
  if (model.trim() === "") return "must not be empty";
  if (model.length > MAX_MODEL_LENGTH) return `must be at most ${MAX_MODEL_LENGTH} characters`;
  if (/\s/.test(model)) return `${JSON.stringify(model)} contains whitespace; expected a model name such as "gpt-4"`;
  const star = model.indexOf("*");
  if (star >= 0 && star !== model.length - 1) {
    return `${JSON.stringify(model)} has "*" before its end; only a trailing "*" (a prefix, e.g. "gpt-4*") is supported`;
  }
  return undefined;
}
