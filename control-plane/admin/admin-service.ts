import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type AdminService,
  type DeleteBudgetResponse,
  type GetSubscriptionResponse,
  type ListBudgetsResponse,
  type DeleteBudgetRequest,
  type SetBudgetRequest,
  type SetModelPriceRequest,
  type ListPricingResponse,
  type SetBudgetResponse,
  type SetModelPriceResponse,
  type UpdateSubscriptionRequest,
  type UpdateSubscriptionResponse,
  type CreateEndpointRequest,
  type CreateEndpointResponse,
  CreateEndpointResponseSchema,
  type DeleteEndpointRequest,
  type DeleteEndpointResponse,
  DeleteEndpointResponseSchema,
  type Endpoint,
  type GetDeliveryRequest,
  type GetDeliveryResponse,
  GetDeliveryResponseSchema,
  type GetEndpointRequest,
  type GetEndpointResponse,
  GetEndpointResponseSchema,
  type GetSeriesRequest,
  type GetSeriesResponse,
  type ListQueuesResponse,
  type ListSidecarsResponse,
  type GetStatsRequest,
  type GetStatsResponse,
  GetStatsResponseSchema,
  type ListDeliveriesRequest,
  type ListDeliveriesResponse,
  ListDeliveriesResponseSchema,
  type ListEndpointsResponse,
  ListEndpointsResponseSchema,
  type ReplayDeliveriesRequest,
  type ReplayDeliveriesResponse,
  ReplayDeliveriesResponseSchema,
  type ReplayDeliveryRequest,
  type ReplayDeliveryResponse,
  ReplayDeliveryResponseSchema,
  type RotateSigningKeyRequest,
  type RotateSigningKeyResponse,
  RotateSigningKeyResponseSchema,
  type SendTestEventRequest,
  type SendTestEventResponse,
  SendTestEventResponseSchema,
  type UpdateEndpointRequest,
  type UpdateEndpointResponse,
  UpdateEndpointResponseSchema,
  type CreateTokenRequest,
  type CreateTokenResponse,
  type ListEndpointsRequest,
  type ListTokensRequest,
  type ListTokensResponse,
  type RevokeTokenRequest,
  type RevokeTokenResponse,
  type WhoAmIResponse,
  WhoAmIResponseSchema,
  type PauseEndpointRequest,
  type PauseEndpointResponse,
  PauseEndpointResponseSchema,
  type ResumeEndpointRequest,
  type ResumeEndpointResponse,
  ResumeEndpointResponseSchema,
  type DisableEndpointRequest,
  type DisableEndpointResponse,
  DisableEndpointResponseSchema,
  type EnableEndpointRequest,
  type EnableEndpointResponse,
  EnableEndpointResponseSchema,
  DeliveryStatus,
  SeriesBreakdown,
} from "../../gen/aigw/v1/admin_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { REPLAY_STEP_MAX, type ReplayableStatus, type ReplayWindow } from "../store/delivery-queue.js";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from "../store/page-token.js";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeName } from "../../common/event-types.js";
import type { Logger } from "../../common/logger.js";
import { webhookBody } from "../../common/webhook-body.js";
import type { GatewayConfig } from "../config/types.js";
import {
  type EndpointPatch,
  type EndpointRecord,
  type IngestResult,
  type Store,
  StoreConflictError,
  StoreNotFoundError,
} from "../store/store.js";
import { invalidArgument, rpcError } from "../../common/rpc-errors.js";
import { type ErrorCode, errorCodeOf } from "../../common/errors.js";
import { isStoreUnavailable } from "../store/unavailable.js";
import { DestinationPolicy } from "../security/destination-policy.js";
import { generateSigningSecret, keyOverlapProblem, signingSecretProblem } from "../security/signing-secret.js";
import { checkEndpointName, firstUnknownEventType } from "./endpoint-validation.js";
import { failoverChainProblem } from "../config/failover-chain.js";
import { deliveryMessage, deliveryStatusRecord, endpointMessage, endpointStatsMessage } from "./mapping.js";
import { syntheticEvent } from "./test-events.js";
import { ONE_OFF_PREFIX } from "../routing/one-off.js";
import { RuntimeSubscription, type SubscriptionControl } from "../routing/subscription.js";
import { getSubscription, requestFilters, rotateOrgSigningKey, updateSubscription } from "./subscription-rpc.js";
import type { BudgetAdminRpcs } from "../budgets/admin-rpcs.js";
import { getSeries, listQueues, listSidecars } from "./series-rpc.js";
import { operatorOnly, orgScope, type Principal, principalOf, requestOrg } from "../auth/principal.js";
import type { TokenRegistry } from "../auth/token-registry.js";
import { checkAppName, checkOrgId } from "../config/checks.js";
import { failoverOrgProblem } from "../config/failover-chain.js";
import { isOneOffEndpointName } from "../routing/one-off.js";
import { TokenAdminRpcs } from "./token-rpcs.js";
import { findEndpoint, newEndpointKey, orgEndpoint, shownName } from "./endpoint-names.js";

export interface AdminDeps {
  store: Store;
  /** Current config (security for URL checks, events.subscribe). */
  config: () => GatewayConfig;
  /** Stores events and creates deliveries: to `endpoints` when given, else by the normal routing; notifies the scheduler and the live feed. */
  deliverEvents(events: Event[], endpoints?: string[]): Promise<IngestResult>;
  /** Wakes the delivery lanes of `endpoints` after replay created deliveries (all lanes with work when absent). */
  notifyDeliveries(endpoints?: readonly string[]): void;
  isCircuitOpen(endpoint: string): boolean;
  /** Called after endpoints change (so routing caches refresh). */
  onEndpointsChanged(): void;
  logger: Logger;
  now?: () => number;
  /** Budgets and pricing RPCs; absent: those answer UNIMPLEMENTED. */
  budgets?: BudgetAdminRpcs;
  /** The global subscription (events.subscribe, events.filters) at runtime; absent: one from config(). */
  subscription?: SubscriptionControl;
  /** Who tokens are; told at once of tokens made or revoked here. Absent: tokens are still stored. */
  tokens?: TokenRegistry;
}

/** Fields UpdateEndpoint may change; an empty update_mask means all of them. */
export const UPDATABLE_ENDPOINT_FIELDS = [
  "url",
  "enabled",
  "secret",
  "event_types",
  "failover_to",
  "filters",
  "apps",
] as const;
type UpdatableField = (typeof UPDATABLE_ENDPOINT_FIELDS)[number];

export const DEFAULT_KEY_OVERLAP_SECONDS = 24 * 60 * 60;
export const DEFAULT_STATS_WINDOW_SECONDS = 3600;
/**
 * Deliveries looked at per replay transaction: a few milliseconds of the main thread each
 * (SQLite runs on it), with the event loop free between steps.
 */
export const REPLAY_STEP = 250;

/**
 * AdminService: endpoints, signing keys, deliveries, replay, test events and stats over
 * the store. Requests are validated here, and store errors become Connect codes here and
 * nowhere else; an unexpected failure is logged and answered INTERNAL with the original
 * as `cause`. Signing secrets go into the store and never come back out of this service
 * (RotateSigningKey returns the one it generated, once).
 *
 * Every RPC acts for its caller (auth/principal.ts): an org token sees only its org's
 * endpoints and their deliveries; another org's are NOT_FOUND exactly as if they did not
 * exist, operator endpoints and operator-only RPCs PERMISSION_DENIED.
 */
export class AdminServiceImpl implements ServiceImpl<typeof AdminService> {
  private readonly now: () => number;

  private readonly subscription: SubscriptionControl;
  private readonly tokenRpcs: TokenAdminRpcs;

  constructor(private readonly deps: AdminDeps) {
    this.now = deps.now ?? Date.now;
    this.tokenRpcs = new TokenAdminRpcs(deps.store, deps.logger, deps.tokens, this.now);
    this.subscription =
      deps.subscription ?? new RuntimeSubscription(deps.config().events, async () => deps.onEndpointsChanged());
  }

  createEndpoint(req: CreateEndpointRequest, ctx?: HandlerContext): Promise<CreateEndpointResponse> {
    return this.rpc("CreateEndpoint", async () => {
      const principal = principalOf(ctx);
      const ep = required(req.endpoint, "endpoint");
      const orgId = requestOrg(principal, ep.orgId, "endpoint.org_id");
      if (orgId !== "") invalidIf(checkOrgId(orgId), "endpoint.org_id");
      const apps = checkApps(ep.apps, orgId);
      invalidIf(checkEndpointName(ep.name), "endpoint.name");
      invalidIf(this.destinations().urlProblem(ep.url), "endpoint.url");
      invalidIf(signingSecretProblem(ep.secret), "endpoint.secret");
      checkEventTypes(ep.eventTypes);
      const filters = requestFilters(ep.filters, "endpoint.filters");
      if (ep.name.startsWith(ONE_OFF_PREFIX)) {
        invalid(
          "endpoint.name",
          `names starting with "${ONE_OFF_PREFIX}" are for one-off endpoints (x-aigw-webhook-url)`,
        );
      }
      // Names are per org (endpoint-names.ts): another org's endpoint by this name is no
      // conflict, and nothing says it exists.
      const key = await newEndpointKey(this.deps.store, orgId, ep.name);
      if (key === undefined) throw new ConnectError(`endpoint "${ep.name}" already exists`, Code.AlreadyExists);
      // An org token sees its org's endpoints and the operator's: failing over to another
      // org's endpoint reads as naming none.
      const visible = (await this.deps.store.listEndpoints()).filter((e) => visibility(e, principal) !== "foreign");
      // The product page's pair: primary fails over to backup unless told otherwise,
      // as the config loader does for the file.
      const backup =
        ep.name === "primary" && ep.failoverTo === ""
          ? await this.failoverTarget(orgId, "backup", principal)
          : undefined;
      const failoverName =
        backup !== undefined && failoverOrgProblem(orgId, backup.name, backup.orgId) === undefined
          ? "backup"
          : ep.failoverTo;
      const target = failoverName === "" ? undefined : await this.failoverTarget(orgId, failoverName, principal);
      const failoverTo = target?.name ?? failoverName;
      invalidIf(failoverChainProblem(key, failoverTo, failoverMap(visible)), "endpoint.failover_to");
      invalidIf(failoverOrgProblem(orgId, failoverName, target?.orgId), "endpoint.failover_to");
      const record = await this.deps.store.createEndpoint(
        {
          name: key,
          url: ep.url,
          enabled: ep.enabled,
          eventTypes: dedupe(ep.eventTypes),
          failoverTo,
          filters,
          orgId,
          apps,
        },
        ep.secret,
      );
      this.deps.onEndpointsChanged();
      // Only the origin: receiver URLs sometimes carry a token in their path or query.
      this.deps.logger.info(
        { endpoint: record.name, org: orgId || undefined, origin: new URL(record.url).origin },
        "endpoint created",
      );
      return create(CreateEndpointResponseSchema, { endpoint: endpointMessage(record, principal) });
    });
  }

  getEndpoint(req: GetEndpointRequest, ctx?: HandlerContext): Promise<GetEndpointResponse> {
    return this.rpc("GetEndpoint", async () => {
      const principal = principalOf(ctx);
      const record = await this.requireEndpoint(req.name, "name", principal);
      return create(GetEndpointResponseSchema, { endpoint: endpointMessage(record, principal) });
    });
  }

  listEndpoints(req?: ListEndpointsRequest, ctx?: HandlerContext): Promise<ListEndpointsResponse> {
    return this.rpc("ListEndpoints", async () => {
      const principal = principalOf(ctx);
      const orgId = requestOrg(principal, req?.orgId ?? "", "org_id");
      const records = (await this.deps.store.listEndpoints()).filter((e) => orgId === "" || e.orgId === orgId);
      return create(ListEndpointsResponseSchema, { endpoints: records.map((e) => endpointMessage(e, principal)) });
    });
  }

  updateEndpoint(req: UpdateEndpointRequest, ctx?: HandlerContext): Promise<UpdateEndpointResponse> {
    return this.rpc("UpdateEndpoint", async () => {
      const principal = principalOf(ctx);
      const ep = required(req.endpoint, "endpoint");
      invalidIf(ep.name === "" ? "required" : undefined, "endpoint.name");
      const fields = updateFields(req.updateMask?.paths ?? [], ep);
      const current = await this.requireEndpoint(ep.name, "endpoint.name", principal);
      const patch = await this.endpointPatch(ep, current, fields, principal);
      const record = await this.deps.store.updateEndpoint(current.name, patch);
      this.deps.onEndpointsChanged();
      this.deps.logger.info({ endpoint: record.name, fields: [...fields] }, "endpoint updated");
      return create(UpdateEndpointResponseSchema, { endpoint: endpointMessage(record, principal) });
    });
  }

  deleteEndpoint(req: DeleteEndpointRequest, ctx?: HandlerContext): Promise<DeleteEndpointResponse> {
    return this.rpc("DeleteEndpoint", async () => {
      invalidIf(req.name === "" ? "required" : undefined, "name");
      const principal = principalOf(ctx);
      const key =
        principal.scope === "org"
          ? (await this.requireEndpoint(req.name, "name", principal)).name
          : ((await findEndpoint(this.deps.store, req.name, principal))?.name ?? req.name);
      const all = await this.deps.store.listEndpoints();
      const dependent = all.find((e) => e.failoverTo === key && e.name !== key);
      if (dependent) {
        const theirs = shownName(dependent.name, principal);
        throw new ConnectError(
          `endpoint "${req.name}" is the failover of "${theirs}"; change ${theirs}'s failover_to first`,
          Code.FailedPrecondition,
        );
      }
      if (!(await this.deps.store.deleteEndpoint(key))) {
        throw new ConnectError(`endpoint "${req.name}" not found`, Code.NotFound);
      }
      this.deps.onEndpointsChanged();
      this.deps.logger.info({ endpoint: key }, "endpoint deleted");
      return create(DeleteEndpointResponseSchema, {});
    });
  }

  rotateSigningKey(req: RotateSigningKeyRequest, ctx?: HandlerContext): Promise<RotateSigningKeyResponse> {
    return this.rpc("RotateSigningKey", async () => {
      const principal = principalOf(ctx);
      if (req.orgId !== "") {
        requestOrg(principal, req.orgId, "org_id");
        const res = await rotateOrgSigningKey(this.deps.store, req, {
          now: this.now(),
          defaultOverlapSeconds: DEFAULT_KEY_OVERLAP_SECONDS,
          newSecret: generateSigningSecret,
          logger: this.deps.logger,
        });
        this.deps.onEndpointsChanged();
        return res;
      }
      const target = await this.requireEndpoint(req.endpoint, "endpoint", principal);
      if (target.oneOff) {
        throw new ConnectError(
          `endpoint "${req.endpoint}" is a one-off endpoint signed with org "${target.orgId}"'s key; rotate that with org_id`,
          Code.FailedPrecondition,
        );
      }
      if (req.secret !== "") invalidIf(signingSecretProblem(req.secret), "secret");
      invalidIf(keyOverlapProblem(req.overlapSeconds), "overlap_seconds");
      const secret = req.secret !== "" ? req.secret : generateSigningSecret();
      const overlapSeconds = req.overlapSeconds === 0 ? DEFAULT_KEY_OVERLAP_SECONDS : req.overlapSeconds;
      const previousExpireAt = this.now() + overlapSeconds * 1000;
      await this.deps.store.addSigningKey(target.name, secret, previousExpireAt);
      this.deps.onEndpointsChanged();
      this.deps.logger.info({ endpoint: target.name, overlapSeconds }, "signing key rotated");
      return create(RotateSigningKeyResponseSchema, {
        secret,
        previousKeysExpireTime: timestampFromMs(previousExpireAt),
      });
    });
  }

  listDeliveries(req: ListDeliveriesRequest, ctx?: HandlerContext): Promise<ListDeliveriesResponse> {
    return this.rpc("ListDeliveries", async () => {
      // An org token's list is its org's endpoints' deliveries: another org's endpoint named
      // here lists nothing, as a missing one does.
      const principal = principalOf(ctx);
      const orgId = requestOrg(principal, req.orgId, "org_id");
      const pageSize = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
      if (pageSize > MAX_PAGE_SIZE) invalid("page_size", `must be 1..${MAX_PAGE_SIZE} (0 for ${DEFAULT_PAGE_SIZE})`);
      let status: ReturnType<typeof deliveryStatusRecord>;
      if (req.status !== 0) {
        status = deliveryStatusRecord(req.status);
        if (status === undefined) invalid("status", `unknown delivery status ${req.status}`);
      }
      const page = await this.listDeliveriesPage({
        pageSize,
        ...(req.endpoint !== "" ? { endpoint: await this.endpointKey(req.endpoint, principal) } : {}),
        ...(status !== undefined ? { status } : {}),
        ...(req.eventId !== "" ? { eventId: req.eventId } : {}),
        ...(req.pageToken !== "" ? { pageToken: req.pageToken } : {}),
        ...(orgId !== "" ? { orgId } : {}),
      });
      const attempts = await Promise.all(page.deliveries.map((d) => this.deps.store.listAttempts(d.id)));
      return create(ListDeliveriesResponseSchema, {
        deliveries: page.deliveries.map((d, i) => deliveryMessage(d, principal, attempts[i])),
        nextPageToken: page.nextPageToken,
      });
    });
  }

  getDelivery(req: GetDeliveryRequest, ctx?: HandlerContext): Promise<GetDeliveryResponse> {
    return this.rpc("GetDelivery", async () => {
      invalidIf(req.id === "" ? "required" : undefined, "id");
      const principal = principalOf(ctx);
      const detail = await this.deps.store.getDelivery(req.id);
      if (!detail || !(await this.ownsDelivery(detail.delivery.endpoint, principal))) {
        throw new ConnectError(`delivery "${req.id}" not found`, Code.NotFound);
      }
      return create(GetDeliveryResponseSchema, {
        delivery: deliveryMessage(detail.delivery, principal, detail.attempts),
        body: JSON.stringify(webhookBody(detail.event)),
      });
    });
  }

  replayDelivery(req: ReplayDeliveryRequest, ctx?: HandlerContext): Promise<ReplayDeliveryResponse> {
    return this.rpc("ReplayDelivery", async () => {
      invalidIf(req.id === "" ? "required" : undefined, "id");
      const principal = principalOf(ctx);
      const detail = await this.deps.store.getDelivery(req.id);
      if (!detail || !(await this.ownsDelivery(detail.delivery.endpoint, principal))) {
        throw new ConnectError(`delivery "${req.id}" not found`, Code.NotFound);
      }
      const { delivery } = detail;
      if (delivery.status === "pending") {
        throw new ConnectError(`delivery "${req.id}" is still pending`, Code.FailedPrecondition);
      }
      await this.requireDeliverable(shownName(delivery.endpoint, principal), principal);
      const replay = await this.deps.store.replayDelivery(req.id);
      this.deps.notifyDeliveries([replay.endpoint]);
      this.deps.logger.info({ delivery: req.id, replay: replay.id, endpoint: replay.endpoint }, "delivery replayed");
      return create(ReplayDeliveryResponseSchema, { delivery: deliveryMessage(replay, principal) });
    });
  }

  /**
   * Replay by window (or every dead letter, without one). Always in steps of at most
   * REPLAY_STEP bounded transactions, yielding between them, so a window of 100k dead
   * letters never stalls deliveries; with page_size, one page per call (the CLI's
   * progress bar).
   */
  replayDeliveries(req: ReplayDeliveriesRequest, ctx?: HandlerContext): Promise<ReplayDeliveriesResponse> {
    return this.rpc("ReplayDeliveries", async () => {
      const principal = principalOf(ctx);
      const window = this.replayWindowOf(req, orgScope(principal));
      if (req.endpoint !== "") window.endpoint = (await this.requireEndpoint(req.endpoint, "endpoint", principal)).name;
      const paged = req.pageSize > 0;
      const total = req.pageToken === "" ? await this.deps.store.countReplayWindow(window) : 0;
      let after: string | undefined = req.pageToken === "" ? undefined : req.pageToken;
      let budget = paged ? req.pageSize : Number.POSITIVE_INFINITY;
      let replayed = 0;
      let skipped = 0;
      for (;;) {
        const limit = Math.min(REPLAY_STEP, budget);
        const step = await this.replayStep({ ...window, limit, ...(after !== undefined ? { after } : {}) });
        replayed += step.replayed;
        skipped += step.skipped;
        budget -= limit;
        after = step.next;
        if (step.endpoints.length > 0) this.deps.notifyDeliveries(step.endpoints);
        if (after === undefined || budget <= 0) break;
        // Deliveries (and everything else) run between steps.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      const level = replayed > 0 || !paged ? "info" : "debug";
      this.deps.logger[level](
        { endpoint: req.endpoint || "*", since: window.since, until: window.until, replayed, skipped },
        "deliveries replayed",
      );
      return create(ReplayDeliveriesResponseSchema, {
        replayed,
        skipped,
        nextPageToken: after ?? "",
        total,
      });
    });
  }

  private async replayStep(window: ReplayWindow) {
    try {
      return await this.deps.store.replayWindow(window);
    } catch (err) {
      if (window.after !== undefined && err instanceof TypeError && /cursor/.test(err.message)) {
        invalid("page_token", "is not a page token of this replay (pass back next_page_token unchanged)");
      }
      throw err;
    }
  }

  /** The request's window, checked: INVALID_ARGUMENT names the field. */
  private replayWindowOf(
    req: ReplayDeliveriesRequest,
    orgId: string | undefined,
  ): Omit<ReplayWindow, "after" | "limit"> {
    if (req.pageSize > REPLAY_STEP_MAX) invalid("page_size", `must be 0..${REPLAY_STEP_MAX}`);
    const statuses: ReplayableStatus[] = [];
    for (const status of req.statuses) {
      if (status === DeliveryStatus.FAILED) statuses.push("failed");
      else if (status === DeliveryStatus.DEAD_LETTERED) statuses.push("dead_lettered");
      else invalid("statuses", "only FAILED and DEAD_LETTERED deliveries are replayed");
    }
    // The store's finish times are wall-clock time, as Date.now reads it.
    const now = Date.now();
    const since = req.since ? timestampMs(req.since) : undefined;
    const until = req.until ? timestampMs(req.until) : now;
    if (since !== undefined && !Number.isFinite(since)) invalid("since", "is not a valid time");
    if (!Number.isFinite(until)) invalid("until", "is not a valid time");
    if (since !== undefined && since > now) invalid("since", "is in the future");
    if (since !== undefined && since >= until) invalid("until", "must be after since");
    if (statuses.length === 0)
      statuses.push(...(since === undefined ? (["dead_lettered"] as const) : (["failed", "dead_lettered"] as const)));
    return {
      since: since ?? Number.MIN_SAFE_INTEGER,
      // Unset: now, so deliveries that fail while the replay runs (its own copies among
      // them) are not replayed again by a later step of the same run.
      until,
      statuses: [...new Set(statuses)],
      ...(req.endpoint !== "" ? { endpoint: req.endpoint } : {}),
      ...(orgId !== undefined ? { orgId } : {}),
    };
  }

  pauseEndpoint(req: PauseEndpointRequest, ctx?: HandlerContext): Promise<PauseEndpointResponse> {
    return this.rpc("PauseEndpoint", async () => {
      const principal = principalOf(ctx);
      const { name } = await this.requireEndpoint(req.name, "name", principal);
      const { endpoint, pending } = await this.deps.store.pauseEndpoint(name, true);
      this.deps.onEndpointsChanged();
      this.deps.logger.info({ endpoint: name, held: pending }, "endpoint paused; its deliveries are held");
      return create(PauseEndpointResponseSchema, {
        endpoint: endpointMessage(endpoint, principal),
        heldDeliveries: pending,
      });
    });
  }

  resumeEndpoint(req: ResumeEndpointRequest, ctx?: HandlerContext): Promise<ResumeEndpointResponse> {
    return this.rpc("ResumeEndpoint", async () => {
      const principal = principalOf(ctx);
      const { name } = await this.requireEndpoint(req.name, "name", principal);
      const { endpoint, pending } = await this.deps.store.pauseEndpoint(name, false);
      this.deps.onEndpointsChanged();
      this.deps.notifyDeliveries([name]);
      this.deps.logger.info({ endpoint: name, released: pending }, "endpoint resumed; held deliveries go out");
      return create(ResumeEndpointResponseSchema, {
        endpoint: endpointMessage(endpoint, principal),
        releasedDeliveries: endpoint.enabled ? pending : 0,
      });
    });
  }

  disableEndpoint(req: DisableEndpointRequest, ctx?: HandlerContext): Promise<DisableEndpointResponse> {
    return this.rpc("DisableEndpoint", async () => {
      const principal = principalOf(ctx);
      const current = await this.requireEndpoint(req.name, "name", principal);
      const { name } = current;
      const dependent = current.enabled ? await this.failoverDependent(name) : undefined;
      const record = await this.deps.store.updateEndpoint(name, {
        enabled: false,
        disabledReason:
          req.reason !== "" ? req.reason : current.enabled ? "disabled by an operator" : current.disabledReason,
      });
      const failed = await this.deps.store.countEndpointPending(name);
      this.deps.onEndpointsChanged();
      // Its pending deliveries now fail without an attempt.
      this.deps.notifyDeliveries([name]);
      this.deps.logger.info(
        { endpoint: name, failing: failed, ...(dependent ? { failoverOf: dependent } : {}) },
        "endpoint disabled",
      );
      return create(DisableEndpointResponseSchema, {
        endpoint: endpointMessage(record, principal),
        failedDeliveries: failed,
      });
    });
  }

  enableEndpoint(req: EnableEndpointRequest, ctx?: HandlerContext): Promise<EnableEndpointResponse> {
    return this.rpc("EnableEndpoint", async () => {
      const principal = principalOf(ctx);
      const { name } = await this.requireEndpoint(req.name, "name", principal);
      const record = await this.deps.store.updateEndpoint(name, { enabled: true });
      const resumed = record.paused ? (await this.deps.store.pauseEndpoint(name, false)).endpoint : record;
      this.deps.onEndpointsChanged();
      this.deps.notifyDeliveries([name]);
      this.deps.logger.info({ endpoint: name }, "endpoint enabled");
      return create(EnableEndpointResponseSchema, { endpoint: endpointMessage(resumed, principal) });
    });
  }

  private async failoverDependent(name: string): Promise<string | undefined> {
    return (await this.deps.store.listEndpoints()).find((e) => e.failoverTo === name && e.name !== name)?.name;
  }

  sendTestEvent(req: SendTestEventRequest, ctx?: HandlerContext): Promise<SendTestEventResponse> {
    return this.rpc("SendTestEvent", async () => {
      const principal = principalOf(ctx);
      const orgId = orgScope(principal);
      const type = req.eventType === EventType.UNSPECIFIED ? EventType.COMPLETION : req.eventType;
      const typeName = eventTypeName(type);
      if (typeName === undefined) invalid("event_type", `unknown event type ${req.eventType}`);
      const config = this.deps.config();
      let targets: string[];
      if (req.endpoint !== "") {
        targets = [(await this.requireDeliverable(req.endpoint, principal)).name];
      } else {
        // Routing is decided here rather than by the normal filters: a test event is
        // meant to arrive even where, say, completion.min_tokens would drop it.
        const subscribed = this.subscription.get().subscribe.includes(type);
        targets = (await this.deps.store.listEndpoints())
          .filter((e) => orgId === undefined || e.orgId === orgId)
          .filter((e) => e.enabled && (e.eventTypes.length === 0 ? subscribed : e.eventTypes.includes(type)))
          .map((e) => e.name);
        if (targets.length === 0) {
          throw new ConnectError(`no enabled endpoint receives ${typeName} events`, Code.FailedPrecondition);
        }
      }
      const event = syntheticEvent(type, this.now(), config.pricing);
      // An org's test event is its own, so its receivers see their org_id.
      if (orgId !== undefined) event.orgId = orgId;
      await this.deps.deliverEvents([event], targets);
      const { deliveries } = await this.deps.store.listDeliveries({ eventId: event.id, pageSize: MAX_PAGE_SIZE });
      this.deps.logger.info({ event: event.id, type: typeName, endpoints: targets }, "test event sent");
      return create(SendTestEventResponseSchema, { event, deliveryIds: deliveries.map((d) => d.id) });
    });
  }

  // An org token's series are its org's: its events, and attempts to its own endpoints.
  getSeries(req: GetSeriesRequest, ctx?: HandlerContext): Promise<GetSeriesResponse> {
    return this.rpc("GetSeries", async () => {
      const principal = principalOf(ctx);
      const org = orgScope(principal);
      const res = await getSeries(this.deps.store, req, this.now(), this.deps.config().delivery.retentionHours, org);
      if (req.breakdown === SeriesBreakdown.ENDPOINT) for (const s of res.series) s.key = shownName(s.key, principal);
      return res;
    });
  }

  listQueues(_req: unknown, ctx?: HandlerContext): Promise<ListQueuesResponse> {
    return this.rpc("ListQueues", async () => {
      const principal = principalOf(ctx);
      const org = orgScope(principal);
      const all = await listQueues(this.deps.store);
      if (org === undefined) return all;
      const mine = new Set((await this.deps.store.listEndpoints()).filter((e) => e.orgId === org).map((e) => e.name));
      all.queues = all.queues.filter((q) => mine.has(q.endpoint));
      for (const q of all.queues) q.endpoint = shownName(q.endpoint, principal);
      return all;
    });
  }

  listSidecars(_req: unknown, ctx?: HandlerContext): Promise<ListSidecarsResponse> {
    return this.rpc("ListSidecars", async () => {
      const org = orgScope(principalOf(ctx));
      const all = await listSidecars(this.deps.store, this.now());
      if (org !== undefined) all.sidecars = all.sidecars.filter((s) => s.orgId === org);
      return all;
    });
  }

  getStats(req: GetStatsRequest, ctx?: HandlerContext): Promise<GetStatsResponse> {
    return this.rpc("GetStats", async () => {
      const principal = principalOf(ctx);
      const orgId = requestOrg(principal, req.orgId, "org_id");
      const windowSeconds = req.windowSeconds === 0 ? DEFAULT_STATS_WINDOW_SECONDS : req.windowSeconds;
      const since = this.now() - windowSeconds * 1000;
      const [all, allEndpoints, eventsIngested] = await Promise.all([
        this.deps.store.stats(since),
        this.deps.store.listEndpoints(),
        this.deps.store.countEvents(since, orgId === "" ? undefined : orgId),
      ]);
      const endpoints = orgId === "" ? allEndpoints : allEndpoints.filter((e) => e.orgId === orgId);
      const records = orgId === "" ? all : await this.orgStats(all, endpoints, orgId);
      // Every configured endpoint gets a row, quiet ones too (an open circuit matters
      // most when nothing gets through), plus deleted ones that still have deliveries.
      const byName = new Map(records.map((r) => [r.endpoint, r]));
      for (const e of endpoints) {
        if (!byName.has(e.name)) {
          byName.set(e.name, {
            endpoint: e.name,
            delivered: 0,
            failed: 0,
            deadLettered: 0,
            pending: 0,
            latencyP50Ms: 0,
            latencyP99Ms: 0,
            failureReasons: [],
          });
        }
      }
      const rows = [...byName.values()];
      return create(GetStatsResponseSchema, {
        endpoints: rows
          .map((r) => endpointStatsMessage(r, this.deps.isCircuitOpen(r.endpoint), principal))
          .sort((a, b) => a.endpoint.localeCompare(b.endpoint)),
        eventsIngested: BigInt(eventsIngested),
      });
    });
  }

  // ---- subscription (filters) -----------------------------------------------------------------

  // Validation and logic live in ./subscription-rpc.ts.

  getSubscription(): Promise<GetSubscriptionResponse> {
    return this.rpc("GetSubscription", async () => getSubscription(this.subscription));
  }

  updateSubscription(req: UpdateSubscriptionRequest, ctx?: HandlerContext): Promise<UpdateSubscriptionResponse> {
    return this.rpc("UpdateSubscription", async () => {
      operatorOnly(principalOf(ctx), "UpdateSubscription (the global subscription)");
      return updateSubscription(this.subscription, req, this.deps.logger);
    });
  }

  // ---- budgets and pricing ---------------------------------------------------------------------

  // Validation and logic live in control-plane/budgets/admin-rpcs.ts.

  listBudgets(_req?: unknown, ctx?: HandlerContext): Promise<ListBudgetsResponse> {
    return this.rpc("ListBudgets", async () => {
      const res = await this.budgetRpcs().listBudgets();
      const orgId = orgScope(principalOf(ctx));
      if (orgId !== undefined) res.budgets = res.budgets.filter((b) => b.orgId === orgId);
      return res;
    });
  }

  setBudget(req: SetBudgetRequest, ctx?: HandlerContext): Promise<SetBudgetResponse> {
    return this.rpc("SetBudget", () => {
      const principal = principalOf(ctx);
      if (principal.scope === "org" && req.budget !== undefined) {
        req.budget.orgId = requestOrg(principal, req.budget.orgId, "budget.org_id");
      }
      return this.budgetRpcs().setBudget(req);
    });
  }

  deleteBudget(req: DeleteBudgetRequest, ctx?: HandlerContext): Promise<DeleteBudgetResponse> {
    return this.rpc("DeleteBudget", () => {
      const principal = principalOf(ctx);
      if (principal.scope === "org") req.orgId = requestOrg(principal, req.orgId, "org_id");
      return this.budgetRpcs().deleteBudget(req);
    });
  }

  listPricing(): Promise<ListPricingResponse> {
    return this.rpc("ListPricing", () => this.budgetRpcs().listPricing());
  }

  setModelPrice(req: SetModelPriceRequest, ctx?: HandlerContext): Promise<SetModelPriceResponse> {
    return this.rpc("SetModelPrice", async () => {
      operatorOnly(principalOf(ctx), "SetModelPrice (pricing)");
      return this.budgetRpcs().setModelPrice(req);
    });
  }

  // ---- tokens (control-plane/admin/token-rpcs.ts) ----------------------------------------------

  createToken(req: CreateTokenRequest, ctx?: HandlerContext): Promise<CreateTokenResponse> {
    return this.rpc("CreateToken", async () => {
      operatorOnly(principalOf(ctx), "CreateToken");
      return this.tokenRpcs.createToken(req);
    });
  }

  listTokens(req: ListTokensRequest, ctx?: HandlerContext): Promise<ListTokensResponse> {
    return this.rpc("ListTokens", async () => {
      operatorOnly(principalOf(ctx), "ListTokens");
      return this.tokenRpcs.listTokens(req);
    });
  }

  revokeToken(req: RevokeTokenRequest, ctx?: HandlerContext): Promise<RevokeTokenResponse> {
    return this.rpc("RevokeToken", async () => {
      operatorOnly(principalOf(ctx), "RevokeToken");
      return this.tokenRpcs.revokeToken(req);
    });
  }

  whoAmI(_req?: unknown, ctx?: HandlerContext): Promise<WhoAmIResponse> {
    return this.rpc("WhoAmI", async () => {
      const p = principalOf(ctx);
      return p.scope === "operator"
        ? create(WhoAmIResponseSchema, {})
        : create(WhoAmIResponseSchema, { orgId: p.orgId, tokenId: p.tokenId, tokenName: p.tokenName });
    });
  }

  private budgetRpcs(): BudgetAdminRpcs {
    if (this.deps.budgets === undefined) {
      throw new ConnectError("budgets and pricing are not served by this Admin API", Code.Unimplemented);
    }
    return this.deps.budgets;
  }

  // ---- helpers ------------------------------------------------------------------------------

  private async endpointPatch(
    ep: Endpoint,
    current: EndpointRecord,
    fields: ReadonlySet<UpdatableField>,
    principal: Principal,
  ): Promise<EndpointPatch> {
    const patch: EndpointPatch = {};
    if (current.oneOff && [...fields].some((f) => f !== "enabled")) {
      throw new ConnectError(
        `endpoint "${current.name}" is a one-off endpoint (x-aigw-webhook-url): only "enabled" can change`,
        Code.FailedPrecondition,
      );
    }
    if (fields.has("filters")) patch.filters = requestFilters(ep.filters, "endpoint.filters");
    if (fields.has("url")) {
      invalidIf(this.destinations().urlProblem(ep.url), "endpoint.url");
      patch.url = ep.url;
    }
    if (fields.has("enabled")) {
      patch.enabled = ep.enabled;
      // Re-enabling is the operator's answer to whatever disabled it.
      if (ep.enabled) patch.disabledReason = "";
    }
    if (fields.has("secret")) {
      invalidIf(signingSecretProblem(ep.secret), "endpoint.secret");
      patch.secret = ep.secret;
    }
    if (fields.has("event_types")) {
      checkEventTypes(ep.eventTypes);
      patch.eventTypes = dedupe(ep.eventTypes);
    }
    if (fields.has("apps")) patch.apps = checkApps(ep.apps, current.orgId);
    if (fields.has("failover_to")) {
      const target =
        ep.failoverTo === "" ? undefined : await this.failoverTarget(current.orgId, ep.failoverTo, principal);
      const failoverTo = target?.name ?? ep.failoverTo;
      if (failoverTo !== current.failoverTo) {
        const all = (await this.deps.store.listEndpoints()).filter((e) => visibility(e, principal) !== "foreign");
        invalidIf(failoverChainProblem(current.name, failoverTo, failoverMap(all)), "endpoint.failover_to");
        invalidIf(failoverOrgProblem(current.orgId, ep.failoverTo, target?.orgId), "endpoint.failover_to");
        patch.failoverTo = failoverTo;
      }
    }
    return patch;
  }

  /** The stats rows of one org's endpoints: its configured ones and its one-off ones. */
  private async orgStats(
    records: Awaited<ReturnType<Store["stats"]>>,
    endpoints: readonly EndpointRecord[],
    orgId: string,
  ): Promise<Awaited<ReturnType<Store["stats"]>>> {
    const names = new Set(endpoints.map((e) => e.name));
    const out = [];
    for (const r of records) {
      if (names.has(r.endpoint)) out.push(r);
      else if (isOneOffEndpointName(r.endpoint) && (await this.deps.store.getEndpoint(r.endpoint))?.orgId === orgId) {
        out.push(r);
      }
    }
    return out;
  }

  /** Whether the principal may see deliveries to `endpoint` (a deleted endpoint's: the operator only). */
  private async ownsDelivery(endpoint: string, principal: Principal): Promise<boolean> {
    if (principal.scope === "operator") return true;
    const record = await this.deps.store.getEndpoint(endpoint);
    return record !== undefined && record.orgId === principal.orgId;
  }

  /** The destination rule of the current config (control-plane/security/destination-policy.ts). */
  private destinations(): DestinationPolicy {
    return new DestinationPolicy(this.deps.config().security);
  }

  /**
   * The endpoint, if the principal may act on it: another org's is NOT_FOUND with the same
   * message as a missing one, an operator endpoint PERMISSION_DENIED for an org token.
   */
  private async requireEndpoint(name: string, field: string, principal: Principal): Promise<EndpointRecord> {
    invalidIf(name === "" ? "required" : undefined, field);
    const record = await findEndpoint(this.deps.store, name, principal);
    const seen = record === undefined ? "foreign" : visibility(record, principal);
    if (!record || seen === "foreign") throw new ConnectError(`endpoint "${name}" not found`, Code.NotFound);
    if (seen === "operator") {
      throw rpcError(
        Code.PermissionDenied,
        "AIGW_PERMISSION_DENIED",
        `endpoint "${name}" is an operator endpoint; this token is scoped to org "${orgScope(principal)}"`,
      );
    }
    return record;
  }

  /** Deliveries to a missing or disabled endpoint would only fail; say so instead. */
  private async requireDeliverable(name: string, principal: Principal): Promise<EndpointRecord> {
    const record = await this.requireEndpoint(name, "endpoint", principal);
    if (!record.enabled) {
      const why = record.disabledReason ? ` (${record.disabledReason})` : "";
      throw new ConnectError(`endpoint "${name}" is disabled${why}`, Code.FailedPrecondition);
    }
    return record;
  }

  /**
   * The store key of the endpoint a caller names in a filter; the name itself when none
   * matches (a deleted endpoint's history, or nothing: the org filter keeps other orgs' out).
   */
  private async endpointKey(name: string, principal: Principal): Promise<string> {
    const record = await findEndpoint(this.deps.store, name, principal);
    return record !== undefined && visibility(record, principal) !== "foreign" ? record.name : name;
  }

  /**
   * What `name` fails over to for an endpoint of org `orgId` ("" for an operator endpoint):
   * that org's endpoint by the name first, else whatever holds it (the org rule then speaks);
   * for an org token another org's endpoint is as good as missing.
   */
  private async failoverTarget(orgId: string, name: string, principal: Principal): Promise<EndpointRecord | undefined> {
    const record =
      orgId !== "" && !name.includes("/")
        ? ((await orgEndpoint(this.deps.store, orgId, name)) ?? (await this.deps.store.getEndpoint(name)))
        : await findEndpoint(this.deps.store, name, principal);
    return record !== undefined && visibility(record, principal) !== "foreign" ? record : undefined;
  }

  private async listDeliveriesPage(filter: Parameters<Store["listDeliveries"]>[0]) {
    try {
      return await this.deps.store.listDeliveries(filter);
    } catch (err) {
      if (filter.pageToken !== undefined && isBadPageToken(err)) {
        throw rpcError(
          Code.InvalidArgument,
          "AIGW_INVALID_ARGUMENT",
          "page_token: not a token from a previous page (use next_page_token)",
          { field: "page_token", cause: err },
        );
      }
      throw err;
    }
  }

  /** The one place errors become Connect codes. */
  private async rpc<T>(method: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      if (err instanceof StoreNotFoundError)
        throw new ConnectError(err.message, Code.NotFound, undefined, undefined, err);
      if (err instanceof StoreConflictError) {
        throw new ConnectError(err.message, Code.AlreadyExists, undefined, undefined, err);
      }
      // Locked by another process, or a full disk: nothing changed; try again later.
      if (isStoreUnavailable(err)) {
        this.deps.logger.warn(
          { code: errorCodeOf(err), rpc: method, err },
          "admin RPC refused: the store refuses writes",
        );
        throw rpcError(Code.Unavailable, errorCodeOf(err) ?? "AIGW_STORE_LOCKED", (err as Error).message, {
          cause: err,
        });
      }
      this.deps.logger.error({ err, rpc: method }, "admin RPC failed");
      throw new ConnectError(`${method} failed`, Code.Internal, undefined, undefined, err);
    }
  }
}

function invalid(field: string, problem: string): never {
  throw invalidArgument(field, problem);
}

/** A problem as text, or with its catalogue code (destinations, secrets). */
function invalidIf(problem: string | { code: ErrorCode; message: string } | undefined, field: string): void {
  if (problem === undefined) return;
  if (typeof problem === "string") invalid(field, problem);
  throw invalidArgument(field, problem.message, problem.code);
}

function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) invalid(field, "required");
  return value;
}

function checkEventTypes(types: readonly EventType[]): void {
  const i = firstUnknownEventType(types);
  if (i >= 0) invalid(`endpoint.event_types[${i}]`, "unknown event type");
}

function updateFields(paths: readonly string[], ep: Endpoint): Set<UpdatableField> {
  if (paths.length === 0) {
    // Secrets are never returned, so a read-modify-write client cannot echo one back:
    // without a mask, an empty secret keeps the keys.
    return new Set(UPDATABLE_ENDPOINT_FIELDS.filter((f) => f !== "secret" || ep.secret !== ""));
  }
  const fields = new Set<UpdatableField>();
  for (const [i, path] of paths.entries()) {
    if (!(UPDATABLE_ENDPOINT_FIELDS as readonly string[]).includes(path)) {
      invalid(`update_mask.paths[${i}]`, `"${path}" is not one of ${UPDATABLE_ENDPOINT_FIELDS.join(", ")}`);
    }
    fields.add(path as UpdatableField);
  }
  return fields;
}

/**
 * How an endpoint looks to a principal: the operator owns every endpoint; an org token its
 * org's ("own"), the operator's ("operator": it may fail over to them, nothing more), and
 * no other org's ("foreign": as if it did not exist).
 */
function visibility(record: EndpointRecord, principal: Principal): "own" | "operator" | "foreign" {
  if (principal.scope === "operator" || record.orgId === principal.orgId) return "own";
  return record.orgId === "" && !record.oneOff ? "operator" : "foreign";
}

/** Apps of an endpoint: only with an org (an operator endpoint takes every app of every org). */
function checkApps(apps: readonly string[], orgId: string): string[] {
  if (apps.length > 0 && orgId === "") {
    invalid("endpoint.apps", "needs endpoint.org_id: an operator endpoint receives every org's events");
  }
  for (const [i, app] of apps.entries()) invalidIf(checkAppName(app), `endpoint.apps[${i}]`);
  return dedupe(apps);
}

function failoverMap(endpoints: readonly EndpointRecord[]): Map<string, string> {
  return new Map(endpoints.map((e) => [e.name, e.failoverTo]));
}

function dedupe<T>(values: readonly T[]): T[] {
  return [...new Set(values)];
}

/** The store's page-token decoders throw RangeError for tokens they did not make. */
function isBadPageToken(err: unknown): boolean {
  return err instanceof RangeError;
}
