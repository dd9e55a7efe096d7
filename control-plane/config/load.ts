import { readFileSync } from "node:fs";
import { isScalar, LineCounter, parseDocument, type YAMLError } from "yaml";
import { readBudgets, readLimits, readPricing } from "./accounting.js";
import { defaultConfig } from "./defaults.js";
import type { ConfigEnv } from "./env-substitution.js";
import { DestinationPolicy } from "../security/destination-policy.js";
import { readEvents } from "./events.js";
import { ConfigReader } from "./reader.js";
import { readAuth, readDelivery, readRetry, readSecurity, readStorage } from "./sections.js";
import { ConfigError, type ConfigProblem, type GatewayConfig } from "./types.js";
import { configText, noSettingsProblem, openingsOf, syntaxProblem } from "./source.js";
import { readWebhooks } from "./webhooks.js";

export { defaultConfig } from "./defaults.js";
export { DEFAULT_PRICING, modelPrice } from "./pricing.js";
export type { ConfigEnv } from "./env-substitution.js";

export interface ParseOptions {
  /** Names the file in problems ("FILE:LINE: path: message"). */
  file: string;
  env: ConfigEnv;
}

const SECTIONS = [
  "webhooks",
  "events",
  "retry",
  "security",
  "delivery",
  "auth",
  "storage",
  "budgets",
  "pricing",
  "limits",
] as const;

/** Path given to problems that belong to the YAML text itself rather than a setting. */
const SYNTAX_PATH = "(yaml)";

/**
 * Parses and validates a webhook_config.yaml. Throws one ConfigError listing every problem
 * in the file, in line order, so one edit fixes them all; nothing should start on a bad file.
 */
export function parseConfig(text: string, options: ParseOptions): GatewayConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const openings = openingsOf(text);
  const toProblem = (e: YAMLError): ConfigProblem => syntaxProblem(e, text, lineCounter, SYNTAX_PATH, openings);
  // A repeated key leaves a sound tree: the reader reports it with its path, and checks the rest.
  const syntax = [...doc.errors, ...doc.warnings].filter((e) => e.code !== "DUPLICATE_KEY").map(toProblem);
  // Past a real syntax error the tree is a guess, and problems found in it would be noise.
  if (doc.errors.some((e) => e.code !== "DUPLICATE_KEY")) throw new ConfigError(options.file, inLineOrder(syntax));
  // Comments only: a file that configures nothing is a mistake (the wrong file, a failed template).
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) {
    throw new ConfigError(options.file, [noSettingsProblem()], "AIGW_CONFIG_UNREADABLE");
  }

  const r = new ConfigReader(doc, lineCounter, options.env);
  const defaults = defaultConfig();
  const keys = r.section(r.root(), SECTIONS);
  const security = readSecurity(r, keys.get("security"), defaults.security);
  const events = readEvents(r, keys.get("events"), defaults.events);
  const subscribeValid = r.isValid("events") && r.isValidTree("events.subscribe");
  const config: GatewayConfig = {
    webhooks: readWebhooks(r, keys.get("webhooks"), {
      destinations: new DestinationPolicy(security),
      judgeAddresses: r.isValidTree("security.allowed_networks"),
      subscribe: subscribeValid ? events.subscribe : undefined,
    }),
    events,
    retry: readRetry(r, keys.get("retry"), defaults.retry),
    security,
    delivery: readDelivery(r, keys.get("delivery"), defaults.delivery),
    auth: readAuth(r, keys.get("auth"), defaults.auth),
    storage: readStorage(r, keys.get("storage"), defaults.storage),
    budgets: readBudgets(r, keys.get("budgets")),
    pricing: { ...defaults.pricing, ...readPricing(r, keys.get("pricing")) },
    limits: readLimits(r, keys.get("limits")),
  };

  const problems = [...syntax, ...r.problems];
  if (problems.length > 0) throw new ConfigError(options.file, inLineOrder(problems));
  return config;
}

/** Parses a config file's bytes: refuses what is empty or not UTF-8 text, then parseConfig. */
export function parseConfigBytes(bytes: Uint8Array, options: ParseOptions): GatewayConfig {
  const source = configText(bytes);
  if ("problem" in source) throw new ConfigError(options.file, [source.problem], "AIGW_CONFIG_UNREADABLE");
  return parseConfig(source.text, options);
}

/** Reads and parses a config file; an unreadable file is a ConfigError like any other problem. */
export function loadConfigFile(path: string, env: ConfigEnv = process.env): GatewayConfig {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === "ENOENT"
        ? "no such file"
        : code === "EISDIR"
          ? "is a directory"
          : code === "EACCES"
            ? "permission denied"
            : (err as Error).message;
    throw new ConfigError(
      path,
      [
        {
          path: "(file)",
          line: 0,
          message: `cannot read the config file (${reason}); expected a readable YAML file such as examples/webhook_config.yaml`,
        },
      ],
      "AIGW_CONFIG_UNREADABLE",
    );
  }
  return parseConfigBytes(bytes, { file: path, env });
}

/** File order; problems without a line (line 0) last. Sort is stable, so ties keep reading order. */
function inLineOrder(problems: ConfigProblem[]): ConfigProblem[] {
  const key = (p: ConfigProblem) => (p.line === 0 ? Number.MAX_SAFE_INTEGER : p.line);
  return [...problems].sort((a, b) => key(a) - key(b));
}
