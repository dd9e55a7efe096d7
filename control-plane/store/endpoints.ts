import type { EventType } from "../../gen/aigw/v1/events_pb.js";
import type { AutoDisable, AutoDisableEffects } from "./operator-events.js";

/** Endpoints and their signing keys; one-off endpoints (x-aigw-webhook-url) and org keys. */
export interface EndpointStore {
  /** Configured endpoints (operator and org ones); one-off endpoints are left out: see getEndpoint. */
  listEndpoints(): Promise<EndpointRecord[]>;
  /** Any endpoint, one-off endpoints included. */
  getEndpoint(name: string): Promise<EndpointRecord | undefined>;
  /** Creates; throws StoreConflictError when the name exists. */
  createEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord>;
  /** Creates or overwrites (config at startup); a changed secret becomes the only key. */
  upsertEndpoint(endpoint: NewEndpoint, secret: string): Promise<EndpointRecord>;
  /** Throws StoreNotFoundError when absent. */
  updateEndpoint(name: string, patch: EndpointPatch): Promise<EndpointRecord>;
  /**
   * Pauses (true) or resumes (false) the endpoint: a paused endpoint's deliveries stay
   * pending and are not claimed (not a lane); resuming lets them go in order of due time.
   * With its pending deliveries (held or released). Throws StoreNotFoundError when absent.
   */
  pauseEndpoint(name: string, paused: boolean): Promise<{ endpoint: EndpointRecord; pending: number }>;
  /**
   * Disables an enabled endpoint after a run of failed attempts and, in the same
   * transaction, stores an endpoint.disabled operator event (once: an endpoint already
   * disabled, or absent, is left as it is and nothing is made).
   */
  autoDisableEndpoint(name: string, why: AutoDisable): Promise<AutoDisableEffects>;
  /** Deletes the endpoint, its keys, and fails its pending deliveries. False if absent. */
  deleteEndpoint(name: string): Promise<boolean>;
  /** Adds a key; existing keys expire at `previousExpireAt` (overlap window). */
  addSigningKey(endpoint: string, secret: string, previousExpireAt: number): Promise<void>;
  /** Keys valid at `now`, newest first (a one-off endpoint's are its org's). Secrets are decrypted. */
  activeSigningKeys(endpoint: string, now: number): Promise<SigningKey[]>;
  /**
   * The one-off endpoint `name` of (orgId, url), created on first use, signed with the
   * org's keys; when the org has no active key, one is created from `newSecret()` in the
   * same transaction (`createdOrgKey`). Throws StoreConflictError when `name` belongs to
   * another endpoint.
   */
  ensureOneOffEndpoint(
    name: string,
    orgId: string,
    url: string,
    newSecret: () => string,
  ): Promise<{ endpoint: EndpointRecord; createdOrgKey: boolean }>;
  /** Adds an org key; the org's existing keys expire at `previousExpireAt` (overlap window). */
  addOrgSigningKey(orgId: string, secret: string, previousExpireAt: number): Promise<void>;
  /** The org's keys valid at `now`, newest first. Secrets are decrypted. */
  activeOrgSigningKeys(orgId: string, now: number): Promise<SigningKey[]>;
}

export interface NewEndpoint {
  name: string;
  url: string;
  enabled: boolean;
  /** Empty: every subscribed type. */
  eventTypes: EventType[];
  /** "" for none; the config layer fills the primary→backup default. */
  failoverTo: string;
  /** Applied after the global filters; absent: none. */
  filters?: EndpointFilters;
  /** The org it belongs to (only that org's events); "" or absent: an operator endpoint (every org's). */
  orgId?: string;
  /** With orgId: only these apps' events; empty or absent: every app. */
  apps?: string[];
}

/** events.filters' shape for one endpoint (the Admin API's EventFilters); empty lists: all. */
export interface EndpointFilters {
  /** Exact names, or a prefix ending in "*". */
  completionModels: string[];
  completionMinTokens: number;
  /** warning, error, critical */
  errorSeverities: string[];
}

export interface EndpointRecord extends NewEndpoint {
  filters: EndpointFilters;
  /** The org it belongs to; "" for an operator endpoint. A one-off endpoint's is the org whose keys sign it. */
  orgId: string;
  apps: string[];
  /** A one-off endpoint (x-aigw-webhook-url), signed with its org's keys. */
  oneOff: boolean;
  /** Written by the config file (its last upsert); false for one made with the Admin API. */
  fromConfig?: boolean;
  disabledReason: string;
  /** Deliveries held (pauseEndpoint); independent of enabled. */
  paused: boolean;
  pausedAt: number | null;
  createdAt: number;
  updatedAt: number;
  signingKeyCount: number;
}

export interface EndpointPatch {
  url?: string;
  enabled?: boolean;
  eventTypes?: EventType[];
  failoverTo?: string;
  disabledReason?: string;
  /** Replaces every key with this one. */
  secret?: string;
  filters?: EndpointFilters;
  apps?: string[];
}

export interface SigningKey {
  id: string;
  secret: string;
  createdAt: number;
  expiresAt: number | null;
}

// ---- rules every backend applies ---------------------------------------------------------

/**
 * The key of org `orgId`'s endpoint `name` when another endpoint held the plain name when it
 * was made (control-plane/admin/endpoint-names.ts); nameInOrg reads it back.
 */
export function qualifiedKey(orgId: string, name: string): string {
  return `${orgId}/${name}`;
}

/** An endpoint's stored key as its org knows it: the key without the `ORG/` of qualifiedKey. */
export function nameInOrg(key: string, orgId: string): string {
  const prefix = qualifiedKey(orgId, "");
  return orgId !== "" && key.startsWith(prefix) ? key.slice(prefix.length) : key;
}

export const NO_FILTERS: EndpointFilters = { completionModels: [], completionMinTokens: 0, errorSeverities: [] };

/** Stored as JSON text; rows from before filters existed hold "{}": no filters. */
export function parseFilters(json: string): EndpointFilters {
  const f = JSON.parse(json) as Partial<EndpointFilters>;
  return {
    completionModels: f.completionModels ?? [],
    completionMinTokens: f.completionMinTokens ?? 0,
    errorSeverities: f.errorSeverities ?? [],
  };
}

export function filtersJson(filters: EndpointFilters | undefined): string {
  const f = filters ?? NO_FILTERS;
  return JSON.stringify({
    completionModels: f.completionModels,
    completionMinTokens: f.completionMinTokens,
    errorSeverities: f.errorSeverities,
  });
}

export function validateEndpoint(endpoint: NewEndpoint): void {
  if (endpoint.name === "") throw new TypeError("endpoint name must not be empty");
  if ((endpoint.apps?.length ?? 0) > 0 && !endpoint.orgId) {
    throw new TypeError(`endpoint "${endpoint.name}": apps need an org`);
  }
  if (endpoint.url === "") throw new TypeError(`endpoint "${endpoint.name}": url must not be empty`);
  for (const type of endpoint.eventTypes) {
    if (!Number.isInteger(type)) throw new TypeError(`endpoint "${endpoint.name}": bad event type ${String(type)}`);
  }
}

export function requireSecret(secret: string, owner: string): void {
  if (secret === "") throw new TypeError(`endpoint "${owner}": signing secret must not be empty`);
}

/**
 * An endpoint after a patch, and why it is disabled: re-enabling clears the reason unless
 * the patch gives one; fields the patch leaves out keep their value.
 */
export function patchedEndpoint(
  current: EndpointRecord,
  patch: EndpointPatch,
): { next: NewEndpoint; disabledReason: string } {
  const enabled = patch.enabled ?? current.enabled;
  const disabledReason = patch.disabledReason ?? (patch.enabled === true ? "" : current.disabledReason);
  const next: NewEndpoint = {
    name: current.name,
    url: patch.url ?? current.url,
    enabled,
    eventTypes: patch.eventTypes ?? current.eventTypes,
    failoverTo: patch.failoverTo ?? current.failoverTo,
    filters: patch.filters ?? current.filters,
    // The org never changes after creation (its deliveries and keys belong to it).
    orgId: current.orgId,
    apps: patch.apps ?? current.apps,
  };
  validateEndpoint(next);
  return { next, disabledReason };
}

/**
 * Config upsert of an existing endpoint: the same file secret as last time keeps the keys
 * (rotations made at runtime survive a restart); a changed one replaces them all. A disabled
 * endpoint in the file keeps the reason it was disabled with.
 */
export function upsertPlan(
  endpoint: NewEndpoint,
  existingDisabledReason: string,
  sameConfigSecret: boolean,
): { disabledReason: string; replaceKeys: boolean } {
  return { disabledReason: endpoint.enabled ? "" : existingDisabledReason, replaceKeys: !sameConfigSecret };
}

export const signingKeyContext = (id: string): string => `signing key ${id}`;
export const orgKeyContext = (id: string): string => `org signing key ${id}`;
export const configSecretContext = (endpoint: string): string => `endpoint ${endpoint} config secret`;
