import { cidrProblem } from "../security/destination-policy.js";
import { checkEncryptionKey, checkHeaderName, checkOrgId, checkStorageUrl } from "./checks.js";
import { defaultPerEndpointConcurrency } from "./defaults.js";
import type { ConfigReader, Field, NumberRule } from "./reader.js";
import type { AuthConfig, DeliveryConfig, RetryConfig, SecurityConfig, StorageConfig } from "./types.js";

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** security.timestamp_tolerance_ms, and `aigw verify --tolerance-ms`: whole seconds, at most a day. */
export const TIMESTAMP_TOLERANCE_MS = { min: 1000, max: DAY_MS } as const;

function milliseconds(min: number, max: number, hint?: string): NumberRule {
  return { integer: true, min, max, expected: "a whole number of milliseconds", ...(hint ? { hint } : {}) };
}

function count(what: string, max: number, hint?: string): NumberRule {
  return { integer: true, min: 1, max, expected: `a whole number of ${what}`, ...(hint ? { hint } : {}) };
}

export function readRetry(r: ConfigReader, field: Field | undefined, defaults: RetryConfig): RetryConfig {
  const keys = r.section(field, [
    "max_attempts",
    "backoff_multiplier",
    "initial_delay_ms",
    "max_delay_ms",
    "retryable_status_codes",
    "jitter",
  ]);
  const initialField = keys.get("initial_delay_ms");
  const maxField = keys.get("max_delay_ms");
  const retry: RetryConfig = {
    maxAttempts: r.number(keys.get("max_attempts"), count("attempts", 100)) ?? defaults.maxAttempts,
    backoffMultiplier:
      r.number(keys.get("backoff_multiplier"), {
        min: 1,
        max: 10,
        expected: "a multiplier",
        hint: "(1 keeps every delay the same, 2 doubles it)",
      }) ?? defaults.backoffMultiplier,
    initialDelayMs: r.number(initialField, milliseconds(1, HOUR_MS, "(1 hour)")) ?? defaults.initialDelayMs,
    maxDelayMs: r.number(maxField, milliseconds(1, DAY_MS, "(24 hours)")) ?? defaults.maxDelayMs,
    retryableStatusCodes: readStatusCodes(r, keys.get("retryable_status_codes")) ?? defaults.retryableStatusCodes,
    jitter:
      r.number(keys.get("jitter"), {
        min: 0,
        max: 1,
        expected: "a share of each delay",
        hint: "(0: none, 1: the whole delay)",
      }) ?? defaults.jitter,
  };
  const pathOf = (key: string) => `${field?.path ?? "retry"}.${key}`;
  if (retry.maxDelayMs < retry.initialDelayMs && r.isValid(pathOf("initial_delay_ms"), pathOf("max_delay_ms"))) {
    if (maxField) {
      r.fail(
        maxField,
        `(${retry.maxDelayMs}) is less than retry.initial_delay_ms (${retry.initialDelayMs}); expected at least the initial delay`,
      );
    } else if (initialField) {
      r.fail(
        initialField,
        `(${retry.initialDelayMs}) exceeds retry.max_delay_ms (${retry.maxDelayMs}, the default); lower it or raise max_delay_ms`,
      );
    }
  }
  return retry;
}

function readStatusCodes(r: ConfigReader, field: Field | undefined): number[] | undefined {
  const items = r.list(field, "a list of HTTP status codes");
  if (!items) return undefined;
  const codes = items.map((item) =>
    r.number(item, { integer: true, min: 100, max: 599, expected: "an HTTP status code" }),
  );
  return codes.every((c) => c !== undefined) ? [...new Set(codes as number[])] : undefined;
}

export function readSecurity(r: ConfigReader, field: Field | undefined, defaults: SecurityConfig): SecurityConfig {
  const keys = r.section(field, [
    "signature_algorithm",
    "signature_header",
    "timestamp_tolerance_ms",
    "require_https",
    "allowed_networks",
  ]);
  const algorithmField = keys.get("signature_algorithm");
  const algorithm = r.string(algorithmField, { allowEmpty: true });
  if (algorithmField && algorithm !== undefined && algorithm !== "sha256") {
    r.fail(
      algorithmField,
      `unsupported signature algorithm ${JSON.stringify(algorithm)}; only "sha256" (HMAC-SHA256, as Standard Webhooks signs) is supported`,
    );
  }
  const headerField = keys.get("signature_header");
  const header = r.string(headerField, { allowEmpty: true });
  const headerProblem = header === undefined ? undefined : checkHeaderName(header);
  if (headerField && headerProblem) r.fail(headerField, headerProblem);

  const networks = r.list(keys.get("allowed_networks"), 'a list of CIDRs such as "127.0.0.0/8"');
  const allowedNetworks: string[] = [];
  for (const item of networks ?? []) {
    const cidr = r.string(item);
    const problem = cidr === undefined ? undefined : cidrProblem(cidr.trim());
    if (problem) r.fail(item, problem);
    else if (cidr !== undefined) allowedNetworks.push(cidr.trim());
  }
  return {
    signatureAlgorithm: "sha256",
    signatureHeader: headerProblem || header === undefined ? defaults.signatureHeader : header,
    timestampToleranceMs:
      r.number(
        keys.get("timestamp_tolerance_ms"),
        milliseconds(
          TIMESTAMP_TOLERANCE_MS.min,
          TIMESTAMP_TOLERANCE_MS.max,
          "(webhook-timestamp is in whole seconds; 300000 is the usual 5 minutes)",
        ),
      ) ?? defaults.timestampToleranceMs,
    requireHttps: r.boolean(keys.get("require_https")) ?? defaults.requireHttps,
    allowedNetworks,
  };
}

export function readDelivery(r: ConfigReader, field: Field | undefined, defaults: DeliveryConfig): DeliveryConfig {
  const keys = r.section(field, [
    "timeout_ms",
    "concurrent_deliveries",
    "queue_size",
    "retention_hours",
    "per_endpoint_concurrency",
    "circuit_breaker_threshold",
    "circuit_breaker_cooldown_ms",
    "auto_disable_after_ms",
  ]);
  const autoDisableField = keys.get("auto_disable_after_ms");
  const autoDisableAfterMs = r.number(
    autoDisableField,
    milliseconds(0, 30 * DAY_MS, "(30 days; 0 never disables; 86400000 is the default 24 hours)"),
  );
  // A window shorter than a second would disable on the second failure: not "sustained".
  if (autoDisableField && autoDisableAfterMs !== undefined && autoDisableAfterMs > 0 && autoDisableAfterMs < 1000) {
    r.fail(autoDisableField, `must be 0 (never) or at least 1000 ms, got ${autoDisableAfterMs}`);
  }
  const concurrentDeliveries =
    r.number(keys.get("concurrent_deliveries"), count("requests in flight", 10_000)) ?? defaults.concurrentDeliveries;
  return {
    timeoutMs: r.number(keys.get("timeout_ms"), milliseconds(100, 10 * 60_000, "(10 minutes)")) ?? defaults.timeoutMs,
    concurrentDeliveries,
    queueSize: r.number(keys.get("queue_size"), count("pending deliveries", 10_000_000)) ?? defaults.queueSize,
    retentionHours:
      r.number(keys.get("retention_hours"), count("hours", 87_600, "(10 years)")) ?? defaults.retentionHours,
    perEndpointConcurrency:
      r.number(keys.get("per_endpoint_concurrency"), count("requests in flight", 1000)) ??
      defaultPerEndpointConcurrency(concurrentDeliveries),
    circuitBreakerThreshold:
      r.number(keys.get("circuit_breaker_threshold"), count("consecutive failures", 10_000)) ??
      defaults.circuitBreakerThreshold,
    circuitBreakerCooldownMs:
      r.number(keys.get("circuit_breaker_cooldown_ms"), milliseconds(1, DAY_MS, "(24 hours)")) ??
      defaults.circuitBreakerCooldownMs,
    autoDisableAfterMs:
      autoDisableAfterMs !== undefined && (autoDisableAfterMs === 0 || autoDisableAfterMs >= 1000)
        ? autoDisableAfterMs
        : defaults.autoDisableAfterMs,
  };
}

export function readAuth(r: ConfigReader, field: Field | undefined, defaults: AuthConfig): AuthConfig {
  const keys = r.section(field, ["admin_tokens", "sidecar_tokens", "metrics_tokens", "orgs"]);
  // Where each token was first given: one token, one scope (an org's token that is also the
  // operator's would be the operator's).
  const seen = new Map<string, string>();
  const tokens = (f: Field | undefined, unique = true): string[] | undefined => {
    const items = r.list(f, "a list of strings");
    if (!items) return undefined;
    const values = items.map((item) => r.string(item, { sensitive: true }));
    if (!values.every((v) => v !== undefined)) return undefined;
    if (unique) {
      values.forEach((token, i) => {
        const item = items[i] as Field;
        const first = seen.get(token);
        if (first !== undefined) r.fail(item, `is the same token as ${first}; expected one scope per token`);
        else seen.set(token, item.path);
      });
    }
    return values;
  };
  const auth: AuthConfig = {
    adminTokens: tokens(keys.get("admin_tokens")) ?? defaults.adminTokens,
    sidecarTokens: tokens(keys.get("sidecar_tokens")) ?? defaults.sidecarTokens,
    metricsTokens: tokens(keys.get("metrics_tokens"), false) ?? defaults.metricsTokens,
    orgs: {},
  };
  for (const { key: org, field: orgField } of r.entries(keys.get("orgs"), "a mapping of org id to its tokens")) {
    const orgProblem = checkOrgId(org);
    if (orgProblem) r.failEntry(orgField, orgProblem);
    const orgKeys = r.section(orgField, ["admin_tokens", "sidecar_tokens"]);
    auth.orgs[org] = {
      adminTokens: tokens(orgKeys.get("admin_tokens")) ?? [],
      sidecarTokens: tokens(orgKeys.get("sidecar_tokens")) ?? [],
    };
  }
  return auth;
}

export function readStorage(r: ConfigReader, field: Field | undefined, defaults: StorageConfig): StorageConfig {
  const keys = r.section(field, ["url", "encryption_key"]);
  const urlField = keys.get("url");
  // A PostgreSQL URL can carry a password: never echoed.
  const url = r.string(urlField, { sensitive: true });
  const urlProblem = url === undefined ? undefined : checkStorageUrl(url);
  if (urlField && urlProblem) r.fail(urlField, urlProblem);
  const keyField = keys.get("encryption_key");
  const encryptionKey = r.string(keyField, { sensitive: true, allowEmpty: true });
  const keyProblem = encryptionKey ? checkEncryptionKey(encryptionKey) : undefined;
  if (keyField && keyProblem) r.fail(keyField, keyProblem);
  return { url: url ?? defaults.url, encryptionKey: encryptionKey ?? defaults.encryptionKey };
}
