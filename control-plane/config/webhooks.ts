import type { EventTypeName } from "../../common/event-types.js";
import type { DestinationPolicy } from "../security/destination-policy.js";
import { signingSecretProblem } from "../security/signing-secret.js";
import { checkAppName, checkOrgId, ENDPOINT_NAME } from "./checks.js";
import { readEventTypes, readFilters } from "./events.js";
import { failoverChainProblem, failoverOrgProblem } from "./failover-chain.js";
import type { ConfigReader, Field } from "./reader.js";
import type { WebhookEndpointConfig } from "./types.js";

const ENDPOINT_KEYS = ["url", "secret", "enabled", "events", "failover_to", "filters", "org_id", "apps"] as const;

export interface EndpointContext {
  /** The destination rule of this file's security section. */
  destinations: DestinationPolicy;
  /** False when security.allowed_networks has problems: addresses are then not judged (no second, misleading problem). */
  judgeAddresses: boolean;
  /** events.subscribe; undefined when it is itself invalid. */
  subscribe: EventTypeName[] | undefined;
}

export function readWebhooks(
  r: ConfigReader,
  field: Field | undefined,
  context: EndpointContext,
): Record<string, WebhookEndpointConfig> {
  const entries = r.entries(field, "a mapping of endpoint name to endpoint");
  const names = entries.map((e) => e.key);
  const endpoints: ReadEndpoint[] = [];
  for (const { key: name, field: endpointField } of entries) {
    if (!ENDPOINT_NAME.test(name)) {
      r.failEntry(
        endpointField,
        `endpoint name ${JSON.stringify(name)} is invalid; expected 1-64 characters of a-z, 0-9, "_" and "-"`,
      );
    } else if (name.startsWith("oneoff-")) {
      // Reserved for the one-off endpoints of x-aigw-webhook-url (control-plane/routing/one-off.ts).
      r.failEntry(endpointField, `endpoint name ${JSON.stringify(name)} is invalid; the "oneoff-" prefix is reserved`);
    }
    endpoints.push(readEndpoint(r, endpointField, name, names, context));
  }
  checkFailoverChains(r, endpoints);
  return Object.fromEntries(endpoints.map((e) => [e.name, e.config]));
}

/**
 * Chains checked once every endpoint is read (one failover_to cannot show a cycle).
 * Problems with a value itself (an unknown name, the endpoint itself) are reported where
 * it is read, so only chains of valid values are walked here.
 */
function checkFailoverChains(r: ConfigReader, endpoints: ReadEndpoint[]): void {
  const failoverOf = new Map(endpoints.map((e) => [e.name, e.config.failoverTo]));
  const orgOf = new Map(endpoints.map((e) => [e.name, e.config.orgId]));
  for (const { name, field, failoverField, config } of endpoints) {
    const failoverTo = config.failoverTo;
    if (failoverTo === "" || failoverTo === name || !failoverOf.has(failoverTo)) continue;
    if (failoverField && !r.isValid(failoverField.path)) continue;
    const orgProblem = failoverOrgProblem(config.orgId, failoverTo, orgOf.get(failoverTo));
    if (orgProblem !== undefined) {
      if (failoverField) r.fail(failoverField, orgProblem);
      else r.report(`${field.path}.failover_to`, field.line, `${orgProblem} (primary fails over to backup by default)`);
      continue;
    }
    const problem = failoverChainProblem(name, failoverTo, failoverOf);
    if (problem === undefined) continue;
    if (failoverField) r.fail(failoverField, problem);
    else r.report(`${field.path}.failover_to`, field.line, `${problem} (primary fails over to backup by default)`);
  }
}

interface ReadEndpoint {
  name: string;
  field: Field;
  failoverField: Field | undefined;
  config: WebhookEndpointConfig;
}

function readEndpoint(
  r: ConfigReader,
  field: Field,
  name: string,
  names: string[],
  context: EndpointContext,
): ReadEndpoint {
  const keys = r.section(field, ENDPOINT_KEYS);

  const urlField = keys.get("url");
  if (!urlField) r.report(`${field.path}.url`, field.line, "is required; expected the https:// URL to deliver to");
  // URLs can carry credentials: never echoed.
  const url = r.string(urlField, { sensitive: true });
  const urlProblem = url === undefined ? undefined : context.destinations.urlProblem(url.trim());
  if (urlField && urlProblem && (context.judgeAddresses || urlProblem.code !== "AIGW_DESTINATION_REFUSED")) {
    r.fail(urlField, urlProblem.message);
  }

  const secretField = keys.get("secret");
  if (!secretField) {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shows the config's own ${VAR} syntax
    r.report(`${field.path}.secret`, field.line, 'is required; expected "whsec_" + base64 (e.g. "${WEBHOOK_SECRET}")');
  }
  const secret = r.string(secretField, { sensitive: true, allowEmpty: true });
  const secretProblem = secret === undefined ? undefined : signingSecretProblem(secret);
  if (secretField && secretProblem) r.fail(secretField, secretProblem.message);

  const subscribed = context.subscribe;
  const events =
    readEventTypes(r, keys.get("events"), (type) =>
      subscribed && !subscribed.includes(type)
        ? `"${type}" is not in events.subscribe, so this endpoint would never receive it; add it there`
        : undefined,
    ) ?? [];

  const failoverField = keys.get("failover_to");
  const failoverTo = r.string(failoverField, { allowEmpty: true });
  if (failoverField && failoverTo) {
    if (failoverTo === name)
      r.fail(failoverField, `names this endpoint itself; expected another endpoint or "" for none`);
    else if (!names.includes(failoverTo)) {
      const others = names.filter((n) => n !== name);
      const expected =
        others.length > 0 ? `one of ${others.join(", ")}, or "" for none` : '"" (no other endpoint is configured)';
      r.fail(failoverField, `names no endpoint ${JSON.stringify(failoverTo)}; expected ${expected}`);
    }
  }

  const orgField = keys.get("org_id");
  const orgId = r.string(orgField) ?? "";
  const orgProblem = orgField && orgId !== "" ? checkOrgId(orgId) : undefined;
  if (orgField && orgProblem) r.fail(orgField, orgProblem);
  const appsField = keys.get("apps");
  const apps = r.stringList(appsField) ?? [];
  if (appsField && apps.length > 0) {
    if (!orgField) r.fail(appsField, "needs org_id: an endpoint without org_id receives every org's events");
    for (const [i, app] of apps.entries()) {
      const problem = checkAppName(app);
      if (problem) r.report(`${appsField.path}[${i}]`, r.lineOf(appsField), problem);
    }
  }

  const config: WebhookEndpointConfig = {
    url: url?.trim() ?? "",
    secret: secret ?? "",
    enabled: r.boolean(keys.get("enabled")) ?? true,
    events,
    failoverTo: failoverTo ?? (name === "primary" && names.includes("backup") ? "backup" : ""),
    filters: readFilters(r, keys.get("filters")),
    orgId,
    apps: [...new Set(apps)],
  };
  return { name, field, failoverField, config };
}
