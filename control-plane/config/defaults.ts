import { PRODUCT_EVENT_TYPE_NAMES } from "../../common/event-types.js";
import { DEFAULT_PRICING } from "./pricing.js";
import type { GatewayConfig } from "./types.js";

export const DEFAULT_BUDGET_THRESHOLDS: readonly number[] = [50, 80, 90, 100];

/** A per-endpoint cap above 4 would let one slow receiver hold most of a small pool. */
export function defaultPerEndpointConcurrency(concurrentDeliveries: number): number {
  return Math.min(concurrentDeliveries, 4);
}

/**
 * Every setting at its default and no webhook endpoints, a fresh object on every call.
 * The values are the product page's webhook_config.yaml plus DESIGN.md's added settings.
 */
export function defaultConfig(): GatewayConfig {
  return {
    webhooks: {},
    events: {
      subscribe: [...PRODUCT_EVENT_TYPE_NAMES],
      filters: {},
      streaming: { coalesceMs: 0 },
      rateLimit: { warningShare: 0.1 },
    },
    retry: {
      maxAttempts: 5,
      backoffMultiplier: 2.0,
      initialDelayMs: 1000,
      maxDelayMs: 60_000,
      retryableStatusCodes: [408, 429, 500, 502, 503],
      jitter: 0.2,
    },
    security: {
      signatureAlgorithm: "sha256",
      signatureHeader: "X-Webhook-Signature",
      timestampToleranceMs: 300_000,
      requireHttps: true,
      allowedNetworks: [],
    },
    delivery: {
      timeoutMs: 30_000,
      concurrentDeliveries: 10,
      queueSize: 10_000,
      retentionHours: 168,
      perEndpointConcurrency: defaultPerEndpointConcurrency(10),
      circuitBreakerThreshold: 5,
      circuitBreakerCooldownMs: 30_000,
      autoDisableAfterMs: 86_400_000,
    },
    auth: { adminTokens: [], sidecarTokens: [], metricsTokens: [], orgs: {} },
    storage: { url: "sqlite:.aigw/aigw.db", encryptionKey: "" },
    budgets: [],
    pricing: Object.fromEntries(Object.entries(DEFAULT_PRICING).map(([model, p]) => [model, { ...p }])),
    limits: [],
  };
}
