import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import type { ErrorCode } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { DestinationPolicy } from "../security/destination-policy.js";
import { generateSigningSecret } from "../security/signing-secret.js";
import type { SecurityConfig } from "../config/types.js";
import { type Store, StoreConflictError } from "../store/store.js";
import type { EventRouter } from "./event-router.js";

/** Names of one-off endpoints: this prefix and 16 hex characters. */
export const ONE_OFF_PREFIX = "oneoff-";

/**
 * The one-off endpoint of an org's x-aigw-webhook-url. The org is part of the name: two
 * orgs giving the same URL get two endpoints, each signed with its own org's key.
 */
export function oneOffEndpointName(orgId: string, url: string): string {
  return ONE_OFF_PREFIX + createHash("sha256").update(`${orgId}\n${url}`).digest("hex").slice(0, 16);
}

export function isOneOffEndpointName(name: string): boolean {
  return /^oneoff-[0-9a-f]{16}$/.test(name);
}

export interface OneOffMetrics {
  /** Events whose webhook_url got a delivery. */
  routed: number;
  /** Events whose webhook_url was refused (invalid URL, destination rules, no org). */
  refused: number;
  /** Org signing keys generated because a one-off event came before any rotation. */
  orgKeysGenerated: number;
}

export function newOneOffMetrics(): OneOffMetrics {
  return { routed: 0, refused: 0, orgKeysGenerated: 0 };
}

export interface OneOffOptions {
  store: Store;
  /** Read at each use: the destination rules of the current config. */
  security: () => SecurityConfig;
  logger: Logger;
  metrics: OneOffMetrics;
}

type Resolution = { endpoint: string } | { refused: string; code?: ErrorCode };

/**
 * One-off endpoints (DESIGN.md: "x-aigw-webhook-url registers a one-off endpoint for that
 * request"). The sidecar stamps the header's URL on every event of the request; at ingest
 * each such event gets, besides its normal routing, a delivery to the endpoint of
 * (org, URL), created on first use. They are subject to events.subscribe but to no filter,
 * and to the same destination rules as any endpoint: the URL text is checked here (scheme,
 * require_https, credentials, literal private addresses outside allowed_networks), the
 * resolved address again by the delivery worker at connect time. A refused URL costs the
 * event its one-off delivery only (log + metric), never the batch.
 *
 * Deliveries are signed with the org's key. An org without one gets a generated key, whose
 * secret nobody has seen: `aigw keys rotate --org ORG` returns a fresh one (the generated key
 * keeps signing alongside it through the overlap window).
 */
export class OneOffEndpoints {
  /** (org, URL) → endpoint or refusal; re-checked after a minute so a deleted endpoint comes back. */
  private readonly resolved = new LRUCache<string, Promise<Resolution>>({ max: 10_000, ttl: 60_000 });

  constructor(private readonly options: OneOffOptions) {}

  /**
   * The route for a batch: `router`'s, plus each subscribed event's one-off endpoint.
   * Resolving (and creating endpoints) happens before the batch's transaction.
   */
  async routeFor(events: readonly Event[], router: EventRouter): Promise<(event: Event) => string[]> {
    const oneOff = new Map<string, string>();
    for (const event of events) {
      if (event.webhookUrl === "" || !router.isSubscribed(event)) continue;
      const resolution = await this.resolve(event.orgId, event.webhookUrl);
      if ("endpoint" in resolution) {
        oneOff.set(event.id, resolution.endpoint);
        this.options.metrics.routed++;
      } else {
        this.options.metrics.refused++;
        this.options.logger.warn(
          {
            code: resolution.code,
            eventId: event.id,
            org: event.orgId,
            origin: safeOrigin(event.webhookUrl),
            problem: resolution.refused,
          },
          "refused the one-off webhook URL of an event (x-aigw-webhook-url)",
        );
      }
    }
    if (oneOff.size === 0) return (event) => router.route(event);
    return (event) => {
      const names = router.route(event);
      const extra = oneOff.get(event.id);
      return extra === undefined ? names : [...names, extra];
    };
  }

  private resolve(orgId: string, url: string): Promise<Resolution> {
    const key = `${orgId}\n${url}`;
    let pending = this.resolved.get(key);
    if (pending === undefined) {
      pending = this.create(orgId, url);
      this.resolved.set(key, pending);
      // A store failure is not a verdict on the URL: ask again next time.
      pending.catch(() => this.resolved.delete(key));
    }
    return pending;
  }

  private async create(orgId: string, url: string): Promise<Resolution> {
    if (orgId === "") return { refused: "the event has no org_id, so there is no org key to sign with" };
    const problem = new DestinationPolicy(this.options.security()).urlProblem(url);
    if (problem !== undefined) return { refused: `webhook_url: ${problem.message}`, code: problem.code };
    const name = oneOffEndpointName(orgId, url);
    let ensured: Awaited<ReturnType<Store["ensureOneOffEndpoint"]>>;
    try {
      ensured = await this.options.store.ensureOneOffEndpoint(name, orgId, url, generateSigningSecret);
    } catch (err) {
      if (err instanceof StoreConflictError) return { refused: err.message };
      throw err;
    }
    const { endpoint, createdOrgKey } = ensured;
    if (createdOrgKey) {
      this.options.metrics.orgKeysGenerated++;
      this.options.logger.warn(
        { org: orgId },
        `generated a signing key for org ${orgId} (one-off endpoints); get a secret to verify with: aigw keys rotate --org ${orgId}`,
      );
    }
    if (!endpoint.enabled) {
      return {
        refused: `one-off endpoint ${name} is disabled${endpoint.disabledReason ? ` (${endpoint.disabledReason})` : ""}`,
      };
    }
    return { endpoint: endpoint.name };
  }
}

/** Only the origin: a receiver URL's path or query may carry a token. */
function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "(not a URL)";
  }
}
