// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the config file's own ${VAR} syntax
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { EVENT_TYPE_NAMES, type EventTypeName } from "../../common/event-types.js";
import { defaultConfig, parseConfigBytes } from "../../control-plane/config/load.js";
import { ConfigError, type GatewayConfig, type WebhookEndpointConfig } from "../../control-plane/config/types.js";

// Property tests of the loader: whatever the bytes, it answers with a config or a
// ConfigError listing problems with their lines, never another exception and never raw
// bytes; and a valid config written out as YAML reads back as itself.

const ENV = {
  WEBHOOK_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  N: "42",
  EMPTY: "",
  NASTY: "\u0000\u001b[31mred\u202e",
};

// Pieces of YAML and of aigw's config, so random input reaches deep into the reader.
const TOKENS = [
  "\n",
  "  ",
  "    ",
  "\t",
  ": ",
  ":",
  "- ",
  "-",
  "#",
  '"',
  "'",
  "[",
  "]",
  "{",
  "}",
  ",",
  "&a ",
  "*a",
  "!!str ",
  "!!binary ",
  "|",
  ">",
  "? ",
  "---\n",
  "...\n",
  "%YAML 1.2\n",
  "<<: ",
  "~",
  "null",
  "true",
  "no",
  "0x1F",
  "0o17",
  "1e308",
  "-1",
  ".inf",
  ".nan",
  "3.5",
  "99999999999999999999",
  "webhooks",
  "primary",
  "url",
  "secret",
  "https://api.example.com/hooks",
  "http://127.0.0.1:9000/",
  "https://[::ffff:127.0.0.1]/",
  "retry",
  "max_attempts",
  "retryable_status_codes",
  "security",
  "allowed_networks",
  "10.0.0.0/8",
  "delivery",
  "timeout_ms",
  "events",
  "subscribe",
  "completion",
  "filters",
  "budgets",
  "org_id",
  "pricing",
  "limits",
  "auth",
  "storage",
  "${WEBHOOK_SECRET}",
  "${N}",
  "${MISSING}",
  "${NASTY}",
  "${EMPTY:-x}",
  "${",
  "\u0000",
  "\u001b[2J",
  "\u202e",
  "\u00e9",
  "\ud83d\ude00",
  "\r\n",
];

const yamlish = fc
  .array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...TOKENS) }, { weight: 1, arbitrary: fc.string() }), {
    maxLength: 60,
  })
  .map((parts) => Buffer.from(parts.join(""), "utf8"));
const rawBytes = fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b));

const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

function checkOutcome(bytes: Buffer): void {
  let error: unknown;
  try {
    parseConfigBytes(bytes, { file: "prop.yaml", env: ENV });
    return;
  } catch (err) {
    error = err;
  }
  if (!(error instanceof ConfigError)) throw new Error(`not a ConfigError: ${String(error)}`, { cause: error });
  const lineCount = bytes.toString("latin1").split("\n").length;
  expect(error.problems.length).toBeGreaterThan(0);
  expect(["AIGW_CONFIG_INVALID", "AIGW_CONFIG_UNREADABLE"]).toContain(error.code);
  for (const p of error.problems) {
    expect(p.path.length).toBeGreaterThan(0);
    expect(Number.isInteger(p.line) && p.line >= 1 && p.line <= lineCount, `line ${p.line} of ${lineCount}`).toBe(true);
    expect(p.message.length).toBeGreaterThan(0);
    expect(p.message.length).toBeLessThanOrEqual(400);
    expect(p.message).not.toMatch(UNPRINTABLE);
  }
  // One line per problem after the heading: nothing in a message breaks a line.
  const lines = error.message.split("\n");
  expect(lines).toHaveLength(error.problems.length + 1);
  for (const line of lines) expect(line).not.toMatch(UNPRINTABLE);
}

describe("config loader: properties", () => {
  it("answers random YAML-ish text with a config or a ConfigError of printable problems with lines", () => {
    fc.assert(fc.property(yamlish, checkOutcome), { numRuns: 1500 });
  });

  it("answers random bytes the same way", () => {
    fc.assert(fc.property(rawBytes, checkOutcome), { numRuns: 500 });
  });

  it("reads a valid config written out as YAML back as itself", () => {
    fc.assert(
      fc.property(validConfig, ({ yaml, expected }) => {
        const text = stringify(yaml);
        expect(parseConfigBytes(Buffer.from(text), { file: "valid.yaml", env: ENV }), text).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });
});

// ---- valid configs ------------------------------------------------------------------------------

const int = (min: number, max: number) => fc.integer({ min, max });
const subsetOf = <T>(items: readonly T[]) => fc.subarray([...items]);
const nonEmptySubsetOf = <T>(items: readonly T[]) => fc.subarray([...items], { minLength: 1 });

const secret = fc.uint8Array({ minLength: 24, maxLength: 64 }).map((b) => `whsec_${Buffer.from(b).toString("base64")}`);
const endpointName = fc.stringMatching(/^[a-z0-9_-]{1,12}$/).filter((n) => !n.startsWith("oneoff-"));
const host = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/).map((h) => `${h}.example.com`);

const validConfig = fc
  .record({
    subscribe: nonEmptySubsetOf(EVENT_TYPE_NAMES),
    endpoints: fc.uniqueArray(
      fc.record({
        name: endpointName,
        host,
        path: fc.stringMatching(/^[a-z0-9/]{0,12}$/),
        secret,
        enabled: fc.boolean(),
        eventPick: fc.array(fc.nat(), { maxLength: 3 }),
      }),
      { maxLength: 3, selector: (e) => e.name },
    ),
    retry: fc.record({
      maxAttempts: int(1, 100),
      backoffMultiplier: fc.constantFrom(1, 1.5, 2, 3, 10),
      initialDelayMs: int(1, 3_600_000),
      extraDelayMs: int(0, 80_000_000),
      retryableStatusCodes: fc.uniqueArray(int(100, 599), { minLength: 1, maxLength: 5 }),
      jitter: fc.constantFrom(0, 0.1, 0.2, 0.5, 1),
    }),
    security: fc.record({
      signatureHeader: fc.constantFrom("X-Webhook-Signature", "X-Aigw-Signature"),
      timestampToleranceMs: int(1000, 86_400_000),
      requireHttps: fc.boolean(),
      allowedNetworks: subsetOf(["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8"]),
    }),
    delivery: fc.record({
      timeoutMs: int(100, 600_000),
      concurrentDeliveries: int(1, 10_000),
      queueSize: int(1, 10_000_000),
      retentionHours: int(1, 87_600),
      perEndpointConcurrency: int(1, 1000),
      circuitBreakerThreshold: int(1, 10_000),
      circuitBreakerCooldownMs: int(1, 86_400_000),
    }),
    coalesceMs: int(0, 60_000),
    warningShare: fc.constantFrom(0.01, 0.1, 0.5, 0.99),
    adminTokens: fc.array(fc.stringMatching(/^[A-Za-z0-9]{8,20}$/), { maxLength: 2 }),
  })
  .map((g) => {
    const maxDelayMs = Math.min(86_400_000, g.retry.initialDelayMs + g.retry.extraDelayMs);
    const webhooksYaml: Record<string, unknown> = {};
    const webhooks: Record<string, WebhookEndpointConfig> = {};
    for (const e of g.endpoints) {
      const events = [...new Set(e.eventPick.map((i) => g.subscribe[i % g.subscribe.length]!))] as EventTypeName[];
      const url = `https://${e.host}/${e.path}`;
      webhooksYaml[e.name] = { url, secret: e.secret, enabled: e.enabled, events, failover_to: "" };
      webhooks[e.name] = {
        url,
        secret: e.secret,
        enabled: e.enabled,
        events,
        failoverTo: "",
        filters: {},
        orgId: "",
        apps: [],
      };
    }
    const yaml = {
      webhooks: webhooksYaml,
      events: {
        subscribe: g.subscribe,
        streaming: { coalesce_ms: g.coalesceMs },
        rate_limit: { warning_share: g.warningShare },
      },
      retry: {
        max_attempts: g.retry.maxAttempts,
        backoff_multiplier: g.retry.backoffMultiplier,
        initial_delay_ms: g.retry.initialDelayMs,
        max_delay_ms: maxDelayMs,
        retryable_status_codes: g.retry.retryableStatusCodes,
        jitter: g.retry.jitter,
      },
      security: {
        signature_algorithm: "sha256",
        signature_header: g.security.signatureHeader,
        timestamp_tolerance_ms: g.security.timestampToleranceMs,
        require_https: g.security.requireHttps,
        allowed_networks: g.security.allowedNetworks,
      },
      delivery: {
        timeout_ms: g.delivery.timeoutMs,
        concurrent_deliveries: g.delivery.concurrentDeliveries,
        queue_size: g.delivery.queueSize,
        retention_hours: g.delivery.retentionHours,
        per_endpoint_concurrency: g.delivery.perEndpointConcurrency,
        circuit_breaker_threshold: g.delivery.circuitBreakerThreshold,
        circuit_breaker_cooldown_ms: g.delivery.circuitBreakerCooldownMs,
      },
      auth: { admin_tokens: g.adminTokens },
    };
    const defaults = defaultConfig();
    const expected: GatewayConfig = {
      ...defaults,
      webhooks,
      events: {
        ...defaults.events,
        subscribe: g.subscribe,
        streaming: { coalesceMs: g.coalesceMs },
        rateLimit: { warningShare: g.warningShare },
      },
      retry: {
        maxAttempts: g.retry.maxAttempts,
        backoffMultiplier: g.retry.backoffMultiplier,
        initialDelayMs: g.retry.initialDelayMs,
        maxDelayMs,
        retryableStatusCodes: g.retry.retryableStatusCodes,
        jitter: g.retry.jitter,
      },
      security: { signatureAlgorithm: "sha256", ...g.security },
      delivery: { ...g.delivery, autoDisableAfterMs: defaults.delivery.autoDisableAfterMs },
      auth: { ...defaults.auth, adminTokens: g.adminTokens },
    };
    return { yaml, expected };
  });
