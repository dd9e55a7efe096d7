// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about the config's own ${VAR} syntax
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  DEFAULT_PRICING,
  defaultConfig,
  loadConfigFile,
  modelPrice,
  parseConfig,
  parseConfigBytes,
} from "../../control-plane/config/load.js";
import { ConfigError } from "../../control-plane/config/types.js";

const EXAMPLE = join(import.meta.dirname, "..", "..", "examples", "webhook_config.yaml");
const PRIMARY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BACKUP_SECRET = "whsec_dGhpcnR5LXR3by1ieXRlcy1vZi1iYWNrdXAtc2VjcmV0IQ==";
const ENV = { WEBHOOK_SECRET: PRIMARY_SECRET, BACKUP_WEBHOOK_SECRET: BACKUP_SECRET };

const tempDir = mkdtempSync(join(tmpdir(), "aigw-config-"));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));

function parse(text: string, env: Record<string, string | undefined> = ENV) {
  return parseConfig(text, { file: "test.yaml", env });
}

function problems(text: string, env: Record<string, string | undefined> = ENV) {
  try {
    parse(text, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

describe("the product page's webhook_config.yaml", () => {
  it("loads unchanged with the product page's values", () => {
    const config = loadConfigFile(EXAMPLE, ENV);
    expect(config.webhooks).toEqual({
      primary: {
        url: "https://api.yoursite.com/webhooks/ai",
        secret: PRIMARY_SECRET,
        enabled: true,
        events: [],
        failoverTo: "backup",
        filters: {},
        orgId: "",
        apps: [],
      },
      backup: {
        url: "https://backup.yoursite.com/hooks",
        secret: BACKUP_SECRET,
        enabled: true,
        events: [],
        failoverTo: "",
        filters: {},
        orgId: "",
        apps: [],
      },
    });
    expect(config.events).toEqual({
      subscribe: ["completion", "error", "streaming", "budget", "rate_limit"],
      filters: {
        completion: { models: ["gpt-4", "gpt-4-turbo"], minTokens: 100 },
        error: { severity: ["warning", "error", "critical"] },
      },
      streaming: { coalesceMs: 0 },
      rateLimit: { warningShare: 0.1 },
    });
    expect(config.retry).toEqual({
      maxAttempts: 5,
      backoffMultiplier: 2.0,
      initialDelayMs: 1000,
      maxDelayMs: 60000,
      retryableStatusCodes: [408, 429, 500, 502, 503],
      jitter: 0.2,
    });
    expect(config.security).toEqual({
      signatureAlgorithm: "sha256",
      signatureHeader: "X-Webhook-Signature",
      timestampToleranceMs: 300000,
      requireHttps: true,
      allowedNetworks: [],
    });
    expect(config.delivery).toEqual({
      timeoutMs: 30000,
      concurrentDeliveries: 10,
      queueSize: 10000,
      retentionHours: 168,
      perEndpointConcurrency: 4,
      circuitBreakerThreshold: 5,
      circuitBreakerCooldownMs: 30000,
      autoDisableAfterMs: 86400000,
    });
  });

  it("names a missing WEBHOOK_SECRET and its line", () => {
    const error = (() => {
      try {
        loadConfigFile(EXAMPLE, { BACKUP_WEBHOOK_SECRET: BACKUP_SECRET });
      } catch (err) {
        return err as ConfigError;
      }
      throw new Error("expected a ConfigError");
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.problems).toEqual([
      { path: "webhooks.primary.secret", line: 6, message: "environment variable WEBHOOK_SECRET is not set" },
    ]);
    expect(error.message).toContain(
      `${EXAMPLE}:6: webhooks.primary.secret: environment variable WEBHOOK_SECRET is not set`,
    );
  });

  it("reports both secrets when neither is set, each on its own line", () => {
    const found = problems(
      "webhooks:\n  primary:\n    url: https://a.example.com/\n    secret: ${WEBHOOK_SECRET}\n" +
        "  backup:\n    url: https://b.example.com/\n    secret: ${BACKUP_WEBHOOK_SECRET}\n",
      {},
    );
    expect(found.map((p) => [p.path, p.line])).toEqual([
      ["webhooks.primary.secret", 4],
      ["webhooks.backup.secret", 7],
    ]);
  });
});

describe("defaults", () => {
  it("an empty mapping is the default config; an empty file is refused, naming the file", () => {
    expect(parse("{}")).toEqual(defaultConfig());
    expect(parse("webhooks: {}\n")).toEqual(defaultConfig());
    for (const text of ["", "# only a comment\n", "\n  \n"]) {
      let error: unknown;
      try {
        parseConfigBytes(Buffer.from(text), { file: "conf/gw.yaml", env: {} });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).code).toBe("AIGW_CONFIG_UNREADABLE");
      expect((error as ConfigError).message).toMatch(
        /^conf\/gw\.yaml: 1 problem:\n {2}conf\/gw\.yaml:1: \(file\): (is empty|has no settings)/,
      );
    }
  });

  it("defaultConfig has the product page's values, DESIGN.md's additions and no webhooks", () => {
    const config = defaultConfig();
    expect(config.webhooks).toEqual({});
    expect(config.retry.jitter).toBe(0.2);
    expect(config.events.subscribe).toEqual(["completion", "error", "streaming", "budget", "rate_limit"]);
    expect(config.delivery.perEndpointConcurrency).toBe(4);
    expect(config.delivery.circuitBreakerThreshold).toBe(5);
    expect(config.delivery.circuitBreakerCooldownMs).toBe(30000);
    expect(config.auth).toEqual({ adminTokens: [], sidecarTokens: [], metricsTokens: [], orgs: {} });
    expect(config.storage).toEqual({ url: "sqlite:.aigw/aigw.db", encryptionKey: "" });
    expect(config.budgets).toEqual([]);
    expect(config.limits).toEqual([]);
    expect(config.pricing).toEqual(DEFAULT_PRICING);
  });

  it("returns a fresh object each time", () => {
    const a = defaultConfig();
    a.retry.retryableStatusCodes.push(404);
    a.pricing["gpt-4"]!.inputPerMillion = 0;
    expect(defaultConfig().retry.retryableStatusCodes).toEqual([408, 429, 500, 502, 503]);
    expect(defaultConfig().pricing["gpt-4"]!.inputPerMillion).toBe(30);
  });

  it("per_endpoint_concurrency follows a small concurrent_deliveries", () => {
    expect(parse("delivery:\n  concurrent_deliveries: 2\n").delivery.perEndpointConcurrency).toBe(2);
    expect(parse("delivery:\n  concurrent_deliveries: 50\n").delivery.perEndpointConcurrency).toBe(4);
  });

  it("fills budgets, limits and endpoints with their defaults", () => {
    const config = parse(
      [
        "webhooks:",
        "  primary:",
        "    url: https://a.example.com/",
        "    secret: raw text secret of 32 bytes.....",
        "budgets:",
        "  - { org_id: org_1, limit_type: monthly, budget_limit: 100 }",
        "limits:",
        "  - { org_id: org_1, tokens_per_minute: 1000 }",
      ].join("\n"),
    );
    expect(config.webhooks.primary).toEqual({
      url: "https://a.example.com/",
      secret: "raw text secret of 32 bytes.....",
      enabled: true,
      events: [],
      failoverTo: "",
      filters: {},
      orgId: "",
      apps: [],
    });
    expect(config.budgets).toEqual([
      { orgId: "org_1", limitType: "monthly", budgetLimit: 100, thresholds: [50, 80, 90, 100], enforce: false },
    ]);
    expect(config.limits).toEqual([{ orgId: "org_1", app: "", tokensPerMinute: 1000 }]);
  });
});

describe("${VAR} substitution", () => {
  const text = [
    "webhooks:",
    "  primary:",
    '    url: "https://${RECEIVER_HOST:-localhost.example.com}/hooks"',
    '    secret: "${WEBHOOK_SECRET}"',
    "delivery:",
    "  timeout_ms: ${TIMEOUT_MS:-15000}",
    "  queue_size: ${QUEUE_SIZE}",
    "security:",
    "  require_https: ${REQUIRE_HTTPS:-true}",
    "auth:",
    '  admin_tokens: ["literal $${NOT_A_VAR}", "${ADMIN_TOKEN}"]',
  ].join("\n");

  it("uses the default when the variable is unset or empty, and the value when set", () => {
    const unset = parse(text, { ...ENV, QUEUE_SIZE: "500", ADMIN_TOKEN: "tok" });
    expect(unset.webhooks.primary!.url).toBe("https://localhost.example.com/hooks");
    expect(unset.delivery.timeoutMs).toBe(15000);
    const empty = parse(text, { ...ENV, RECEIVER_HOST: "", QUEUE_SIZE: "500", ADMIN_TOKEN: "tok" });
    expect(empty.webhooks.primary!.url).toBe("https://localhost.example.com/hooks");
    const set = parse(text, {
      ...ENV,
      RECEIVER_HOST: "hooks.example.org",
      TIMEOUT_MS: "2500",
      QUEUE_SIZE: "7",
      ADMIN_TOKEN: "t",
    });
    expect(set.webhooks.primary!.url).toBe("https://hooks.example.org/hooks");
    expect(set.delivery.timeoutMs).toBe(2500);
    expect(set.delivery.queueSize).toBe(7);
  });

  it("reads substituted numbers and booleans as their type, and $${ as a literal ${", () => {
    const config = parse(text, { ...ENV, QUEUE_SIZE: "500", ADMIN_TOKEN: "tok", REQUIRE_HTTPS: "false" });
    expect(config.delivery.queueSize).toBe(500);
    expect(config.security.requireHttps).toBe(false);
    expect(config.auth.adminTokens).toEqual(["literal ${NOT_A_VAR}", "tok"]);
  });

  it("reports every missing variable with its line, and a substituted value of the wrong type", () => {
    expect(problems(text, { ...ENV, QUEUE_SIZE: "lots" })).toEqual([
      {
        path: "delivery.queue_size",
        line: 7,
        message: 'expected a whole number of pending deliveries from 1 to 10000000, got string "lots"',
      },
      { path: "auth.admin_tokens[1]", line: 11, message: "environment variable ADMIN_TOKEN is not set" },
    ]);
  });
});

describe("pricing", () => {
  it("merges config entries over the defaults", () => {
    const config = parse(
      "pricing:\n  gpt-4o:\n    input: 2\n    output: 8\n  my-finetune:\n    input: 3.5\n    output: 0\n",
    );
    expect(config.pricing["gpt-4o"]).toEqual({ inputPerMillion: 2, outputPerMillion: 8 });
    expect(config.pricing["my-finetune"]).toEqual({ inputPerMillion: 3.5, outputPerMillion: 0 });
    expect(config.pricing["gpt-4"]).toEqual(DEFAULT_PRICING["gpt-4"]);
    expect(config.pricing["claude-sonnet-4"]).toEqual({
      inputPerMillion: 3,
      outputPerMillion: 15,
      cachedInputPerMillion: 0.3,
      cacheWritePerMillion: 3.75,
      cacheWrite1hPerMillion: 6,
    });
    expect(DEFAULT_PRICING["gpt-4o"]).toEqual({
      inputPerMillion: 2.5,
      outputPerMillion: 10,
      cachedInputPerMillion: 1.25,
    });
  });

  it("reads the optional cache prices; an entry replaces the built-in price whole", () => {
    const config = parse(
      [
        "pricing:",
        "  claude-sonnet-4-5:",
        "    input: 2.4",
        "    output: 12",
        "    cached_input: 0.24",
        "    cache_write: 3",
        "    cache_write_1h: 4.8",
        "  gpt-4.1:",
        "    input: 2",
        "    output: 8",
        "    cached_input: 0",
        "  claude-haiku-4-5:",
        "    input: 1",
        "    output: 5",
        "",
      ].join("\n"),
    );
    expect(config.pricing["claude-sonnet-4-5"]).toEqual({
      inputPerMillion: 2.4,
      outputPerMillion: 12,
      cachedInputPerMillion: 0.24,
      cacheWritePerMillion: 3,
      cacheWrite1hPerMillion: 4.8,
    });
    expect(config.pricing["gpt-4.1"]).toEqual({ inputPerMillion: 2, outputPerMillion: 8, cachedInputPerMillion: 0 });
    // No cache rates in the file: the default rule (cached input = input, writes 1.25× / 2×), not the built-in rates.
    expect(config.pricing["claude-haiku-4-5"]).toEqual({ inputPerMillion: 1, outputPerMillion: 5 });
  });

  it("covers the common OpenAI and Anthropic models", () => {
    for (const model of [
      "gpt-4",
      "gpt-4-turbo",
      "gpt-4o",
      "gpt-4o-mini",
      "gpt-4.1",
      "gpt-4.1-mini",
      "gpt-3.5-turbo",
      "o1",
      "o3-mini",
      "text-embedding-3-small",
      "text-embedding-3-large",
      "claude-3-5-sonnet",
      "claude-3-5-haiku",
      "claude-3-opus",
      "claude-sonnet-4",
      "claude-opus-4",
    ]) {
      expect(DEFAULT_PRICING[model], model).toBeDefined();
    }
  });

  it("modelPrice matches dated snapshots to their family, never a shorter family", () => {
    const pricing = defaultConfig().pricing;
    expect(modelPrice(pricing, "gpt-4o-2024-08-06")).toEqual(pricing["gpt-4o"]);
    expect(modelPrice(pricing, "gpt-4o-mini-2024-07-18")).toEqual(pricing["gpt-4o-mini"]);
    expect(modelPrice(pricing, "claude-sonnet-4-20250514")).toEqual(pricing["claude-sonnet-4"]);
    expect(modelPrice(pricing, "claude-3-5-sonnet-latest")).toEqual(pricing["claude-3-5-sonnet"]);
    expect(modelPrice(pricing, "gpt-4o")).toEqual({
      inputPerMillion: 2.5,
      outputPerMillion: 10,
      cachedInputPerMillion: 1.25,
    });
    expect(modelPrice(pricing, "gpt-4oops")).toBeUndefined();
    expect(modelPrice(pricing, "llama-3-70b")).toBeUndefined();
  });
});

describe("endpoints", () => {
  it("allows plain HTTP to local receivers when require_https is off", () => {
    const config = parse(
      [
        "security:",
        "  require_https: false",
        '  allowed_networks: ["127.0.0.0/8", "::1/128", "fd00::/8"]',
        "webhooks:",
        "  local:",
        "    url: http://127.0.0.1:8080/hooks",
        "    secret: ${WEBHOOK_SECRET}",
        "    events: [completion, error]",
        "    failover_to: spare",
        "    filters:",
        "      error:",
        "        severity: [critical]",
        "  spare:",
        "    url: http://localhost:9090/",
        "    secret: plain-bytes-used-as-the-key-as-is",
        "    enabled: false",
      ].join("\n"),
    );
    expect(config.security.allowedNetworks).toEqual(["127.0.0.0/8", "::1/128", "fd00::/8"]);
    expect(config.webhooks.local).toMatchObject({
      url: "http://127.0.0.1:8080/hooks",
      events: ["completion", "error"],
      failoverTo: "spare",
      filters: { error: { severity: ["critical"] } },
    });
    expect(config.webhooks.spare).toMatchObject({ enabled: false, failoverTo: "" });
  });

  it("lets primary opt out of failing over to backup", () => {
    const config = parse(
      "webhooks:\n  primary:\n    url: https://a.example.com/\n    secret: a-raw-secret-of-24-bytes+\n    failover_to: ''\n" +
        "  backup:\n    url: https://b.example.com/\n    secret: a-raw-secret-of-24-bytes+\n",
    );
    expect(config.webhooks.primary!.failoverTo).toBe("");
  });

  it("follows YAML anchors and aliases", () => {
    const config = parse(
      "retry:\n  retryable_status_codes: &codes [500, 503]\nwebhooks:\n  primary:\n    url: &u https://a.example.com/\n    secret: a-raw-secret-of-24-bytes+\n",
    );
    expect(config.retry.retryableStatusCodes).toEqual([500, 503]);
    expect(config.webhooks.primary!.url).toBe("https://a.example.com/");
  });
});

describe("ConfigError", () => {
  it("formats each problem as FILE:LINE: path: message", () => {
    let error: ConfigError | undefined;
    try {
      parseConfig("retry:\n  max_attempts: 0\n  jitter: -1\n", { file: "conf/gw.yaml", env: {} });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error!.file).toBe("conf/gw.yaml");
    expect(error!.message).toBe(
      [
        "conf/gw.yaml: 2 problems:",
        "  conf/gw.yaml:2: retry.max_attempts: must be a whole number of attempts from 1 to 100, got 0",
        "  conf/gw.yaml:3: retry.jitter: must be a share of each delay from 0 to 1 (0: none, 1: the whole delay), got -1",
      ].join("\n"),
    );
  });

  it("is what loadConfigFile throws for a missing file", () => {
    const missing = join(tempDir, "nope.yaml");
    expect(() => loadConfigFile(missing, {})).toThrow(ConfigError);
    expect(() => loadConfigFile(missing, {})).toThrow(
      `${missing}:0: (file): cannot read the config file (no such file)`,
    );
    expect(() => loadConfigFile(tempDir, {})).toThrow("is a directory");
  });

  it("loadConfigFile reads a real file", () => {
    const file = join(tempDir, "gw.yaml");
    writeFileSync(file, "delivery:\n  timeout_ms: 1234\n");
    expect(loadConfigFile(file, {}).delivery.timeoutMs).toBe(1234);
  });
});
