import { AigwError } from "../../common/errors.js";
import type { EventTypeName } from "../../common/event-types.js";

/**
 * The control plane's configuration after loading, validation and defaults: the product
 * page's webhook_config.yaml plus DESIGN.md's added sections. Names are camelCase here;
 * the YAML keys are snake_case (max_attempts → maxAttempts).
 */
export interface GatewayConfig {
  webhooks: Record<string, WebhookEndpointConfig>;
  events: EventsConfig;
  retry: RetryConfig;
  security: SecurityConfig;
  delivery: DeliveryConfig;
  auth: AuthConfig;
  storage: StorageConfig;
  budgets: BudgetConfig[];
  /** Model name → USD per million tokens; merged over built-in defaults. */
  pricing: Record<string, ModelPrice>;
  limits: LimitConfig[];
}

export interface WebhookEndpointConfig {
  url: string;
  /** "whsec_" + base64, or raw text used as bytes. */
  secret: string;
  enabled: boolean;
  /** Event types this endpoint receives; empty: every subscribed type. */
  events: EventTypeName[];
  /** "" for none. Defaults to "backup" for "primary" when a "backup" endpoint exists. */
  failoverTo: string;
  /** Optional per-endpoint filters, same shape as events.filters, applied after the global ones. */
  filters: EventFilters;
  /** The org it belongs to (only that org's events); "": an operator endpoint (every org's). */
  orgId: string;
  /** With orgId: only these apps' events; empty: every app. */
  apps: string[];
}

export interface EventsConfig {
  subscribe: EventTypeName[];
  filters: EventFilters;
  streaming: { coalesceMs: number };
  /**
   * events.rate_limit.warning_share: a provider limit whose remaining share falls below
   * this (0 < x < 1) gets one warning rate_limit event; default 0.1.
   */
  rateLimit: { warningShare: number };
}

export interface EventFilters {
  completion?: { models?: string[]; minTokens?: number };
  error?: { severity?: string[] };
}

export interface RetryConfig {
  maxAttempts: number; // default 5
  backoffMultiplier: number; // 2.0
  initialDelayMs: number; // 1000
  maxDelayMs: number; // 60000
  retryableStatusCodes: number[]; // [408, 429, 500, 502, 503]
  /** Share of each delay randomised (full jitter band), 0..1; default 0.2. */
  jitter: number;
}

export interface SecurityConfig {
  signatureAlgorithm: "sha256";
  signatureHeader: string; // "X-Webhook-Signature"
  timestampToleranceMs: number; // 300000
  requireHttps: boolean; // true
  /** CIDRs exempt from the private-address guard, e.g. "127.0.0.0/8". */
  allowedNetworks: string[];
}

export interface DeliveryConfig {
  timeoutMs: number; // 30000
  concurrentDeliveries: number; // 10
  queueSize: number; // 10000
  retentionHours: number; // 168
  /** In-flight requests per endpoint; default min(concurrentDeliveries, 4). */
  perEndpointConcurrency: number;
  /** Consecutive failures that open an endpoint's circuit; default 5. */
  circuitBreakerThreshold: number;
  /** How long an open circuit waits before one trial delivery; default 30000. */
  circuitBreakerCooldownMs: number;
  /**
   * An endpoint every attempt of which failed for this long (two attempts at least) is
   * disabled, with an endpoint.disabled event; 0: never. Default 86400000 (24 hours).
   */
  autoDisableAfterMs: number;
}

export interface AuthConfig {
  /** Bearer tokens accepted on the Admin API; empty: no auth (loopback only). */
  adminTokens: string[];
  /** Bearer tokens accepted on IngestService; empty: no auth (loopback only). */
  sidecarTokens: string[];
  /** Bearer tokens accepted on /metrics only (a scraper's token cannot change anything); admin tokens are too. */
  metricsTokens: string[];
  /** auth.orgs.ORG: tokens scoped to one org (its admin view, its sidecars). */
  orgs: Record<string, { adminTokens: string[]; sidecarTokens: string[] }>;
}

export interface StorageConfig {
  /** "sqlite:PATH" or "postgres://..."; default "sqlite:.aigw/aigw.db". --store overrides. */
  url: string;
  /** 32-byte key (base64) for signing secrets at rest; default: a key file beside the SQLite file. */
  encryptionKey: string;
}

export interface BudgetConfig {
  orgId: string;
  limitType: "daily" | "monthly";
  budgetLimit: number;
  thresholds: number[]; // default [50, 80, 90, 100]
  enforce: boolean;
}

/**
 * USD per million tokens. Cache prices are optional: unset, they follow from the input
 * price (see cachePrices in pricing.ts), so a model priced with input and output only is
 * never charged less for its cached tokens than the provider's list rates.
 */
export interface ModelPrice {
  inputPerMillion: number;
  outputPerMillion: number;
  /** Input read from the prompt cache (OpenAI's cached input, Anthropic's cache reads). */
  cachedInputPerMillion?: number;
  /** Input written to the prompt cache for five minutes (Anthropic's cache writes). */
  cacheWritePerMillion?: number;
  /** Input written to the prompt cache for one hour (Anthropic). */
  cacheWrite1hPerMillion?: number;
}

export interface LimitConfig {
  orgId: string;
  /** "" for every app of the org. */
  app: string;
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

/** One problem in a config file: where (path and line) and what. */
export interface ConfigProblem {
  /** Dotted path, e.g. "retry.initial_delay_ms" or "webhooks.primary.url". */
  path: string;
  /** 1-based line in the file; 0 when the problem has no place (a missing section). */
  line: number;
  message: string;
}

/**
 * Every problem of a config file at once, one line each. Messages are made printable here,
 * whatever produced them: control and bidi characters are escaped and a message is cut at
 * MAX_MESSAGE, so no file can write raw bytes to the operator's terminal or logs.
 */
export class ConfigError extends AigwError {
  override readonly name = "ConfigError";
  readonly problems: ConfigProblem[];
  constructor(
    readonly file: string,
    problems: ConfigProblem[],
    code: "AIGW_CONFIG_INVALID" | "AIGW_CONFIG_UNREADABLE" = "AIGW_CONFIG_INVALID",
  ) {
    const clean = problems.map((p) => ({ ...p, path: printable(p.path), message: printable(p.message) }));
    const name = printable(file);
    super(
      code,
      `${name}: ${clean.length} problem${clean.length === 1 ? "" : "s"}:\n` +
        clean.map((p) => `  ${name}:${p.line}: ${p.path}: ${p.message}`).join("\n"),
    );
    this.problems = clean;
  }
}

const MAX_MESSAGE = 400;
// C0 and C1 controls (newlines too: one problem, one line), DEL, and the bidi overrides
// that can make a terminal show text in another order than it is.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;

export function printable(text: string): string {
  const escaped = text.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return escaped.length > MAX_MESSAGE ? `${escaped.slice(0, MAX_MESSAGE - 1)}…` : escaped;
}
