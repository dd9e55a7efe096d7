import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type EventFilters as EventFiltersMessage,
  type GetSubscriptionResponse,
  GetSubscriptionResponseSchema,
  type RotateSigningKeyRequest,
  type RotateSigningKeyResponse,
  RotateSigningKeyResponseSchema,
  type UpdateSubscriptionRequest,
  type UpdateSubscriptionResponse,
  UpdateSubscriptionResponseSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import { eventTypeName } from "../../common/event-types.js";
import type { Logger } from "../../common/logger.js";
import { filtersFromMessage, filtersMessage } from "../routing/filters.js";
import type { SubscriptionControl, SubscriptionSettings } from "../routing/subscription.js";
import type { EndpointFilters, Store } from "../store/store.js";
import { invalidArgument } from "../../common/rpc-errors.js";
import { keyOverlapProblem, signingSecretProblem } from "../security/signing-secret.js";
import { firstUnknownEventType } from "./endpoint-validation.js";

// The Admin API's filter, subscription and org-key parts, kept out of
// admin-service.ts: these functions validate and answer; the service only delegates.

function invalid(field: string, problem: string): never {
  throw invalidArgument(field, problem);
}

/** Filters from a request message, or INVALID_ARGUMENT naming the field (`prefix` = where it sits). */
export function requestFilters(m: EventFiltersMessage | undefined, prefix: string): EndpointFilters {
  const result = filtersFromMessage(m, prefix);
  if ("field" in result) invalid(result.field, result.problem);
  return result.filters;
}

function subscriptionMessage(s: SubscriptionSettings) {
  return { subscribe: [...s.subscribe], filters: filtersMessage(s.filters) };
}

export function getSubscription(control: SubscriptionControl): GetSubscriptionResponse {
  return create(GetSubscriptionResponseSchema, subscriptionMessage(control.get()));
}

export async function updateSubscription(
  control: SubscriptionControl,
  req: UpdateSubscriptionRequest,
  logger: Logger,
): Promise<UpdateSubscriptionResponse> {
  const unknown = firstUnknownEventType(req.subscribe);
  if (unknown >= 0) invalid(`subscribe[${unknown}]`, `unknown event type ${req.subscribe[unknown]}`);
  const next: Partial<SubscriptionSettings> = {};
  if (req.subscribe.length > 0) next.subscribe = req.subscribe;
  if (req.filters !== undefined) next.filters = requestFilters(req.filters, "filters");
  const applied = await control.update(next);
  logger.info(
    { subscribe: applied.subscribe.map((t) => eventTypeName(t)), filters: applied.filters },
    "subscription updated (kept in the store for every replica, until the config file's subscription changes)",
  );
  return create(UpdateSubscriptionResponseSchema, subscriptionMessage(applied));
}

/**
 * RotateSigningKey with org_id: the org's key, which signs its one-off endpoints
 * (x-aigw-webhook-url). Creates the org's first key when it has none.
 */
export async function rotateOrgSigningKey(
  store: Store,
  req: RotateSigningKeyRequest,
  options: { now: number; defaultOverlapSeconds: number; newSecret: () => string; logger: Logger },
): Promise<RotateSigningKeyResponse> {
  if (req.endpoint !== "") invalid("org_id", "give either endpoint or org_id, not both");
  if (req.secret !== "") {
    const problem = signingSecretProblem(req.secret);
    if (problem !== undefined) throw invalidArgument("secret", problem.message, problem.code);
  }
  const overlapProblem = keyOverlapProblem(req.overlapSeconds);
  if (overlapProblem !== undefined) invalid("overlap_seconds", overlapProblem);
  const secret = req.secret !== "" ? req.secret : options.newSecret();
  const overlapSeconds = req.overlapSeconds === 0 ? options.defaultOverlapSeconds : req.overlapSeconds;
  const previousExpireAt = options.now + overlapSeconds * 1000;
  await store.addOrgSigningKey(req.orgId, secret, previousExpireAt);
  options.logger.info({ org: req.orgId, overlapSeconds }, "org signing key rotated");
  return create(RotateSigningKeyResponseSchema, { secret, previousKeysExpireTime: timestampFromMs(previousExpireAt) });
}
