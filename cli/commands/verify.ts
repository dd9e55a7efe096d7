import { readFileSync } from "node:fs";
import { DEFAULT_TIMESTAMP_TOLERANCE_MS, verifyWebhookDetails, WebhookVerificationError } from "../../common/verify.js";
import { loadConfigFile } from "../../control-plane/config/load.js";
import { TIMESTAMP_TOLERANCE_MS } from "../../control-plane/config/sections.js";
import { signingSecretProblem } from "../../control-plane/security/signing-secret.js";
import { type CommandGroup, type Flags, UsageError } from "../command.js";

export const verify: CommandGroup = {
  name: "verify",
  summary: "check a saved webhook request as a receiver would",
  section: "tools",
  verbs: [
    {
      name: "",
      summary: "check a saved webhook request's signature and timestamp, as a receiver would (aigw/verify)",
      synopsis: [
        "--request FILE --secret S [--secret S2] [--tolerance-ms N] [--at UNIX_SECONDS] [--json]",
        "--body FILE (--headers FILE | --id ID --timestamp T --signature SIG) --secret S …",
        "--body FILE --headers FILE --config FILE --endpoint NAME …",
      ],
      details:
        "Checks the signature under the secret(s) (give the new and the old during a key rotation),\n" +
        "and webhook-timestamp within the tolerance of now (or of --at). Exit 0: valid; 1: invalid,\n" +
        "with the reason and its code; 2: usage.",
      flags: {
        request: {
          type: "string",
          value: "FILE",
          help: "the raw HTTP request: request line, headers, blank line, body",
        },
        body: { type: "string", value: "FILE", help: "the body bytes exactly as received" },
        headers: { type: "string", value: "FILE", help: '"Name: value" lines (curl -D, a proxy log) or a JSON object' },
        id: { type: "string", value: "ID", help: "webhook-id (over the headers file's)" },
        timestamp: { type: "string", value: "T", help: "webhook-timestamp (over the headers file's)" },
        signature: { type: "string", value: "SIG", help: "webhook-signature (over the headers file's)" },
        secret: {
          type: "string",
          value: "S",
          multiple: true,
          help: '"whsec_…" or raw text (env WEBHOOK_SECRET); repeatable',
        },
        config: {
          type: "string",
          value: "FILE",
          help: "take security.timestamp_tolerance_ms (and with --endpoint, the secret) from this config",
        },
        endpoint: { type: "string", value: "NAME", help: "with --config: the secret of webhooks.NAME" },
        "tolerance-ms": { type: "string", value: "N", help: "how far the timestamp may be from now (default 300000)" },
        at: {
          type: "string",
          value: "UNIX_SECONDS",
          help: "check as of this time instead of now (a request saved earlier)",
        },
        json: { type: "boolean", help: "print the verified body as JSON" },
      },
      async run({ flags, io, label }) {
        const input = readInput(flags, io.env);
        try {
          const result = verifyWebhookDetails(input.body, input.headers, {
            secret: input.secrets,
            toleranceMs: input.toleranceMs,
            now: input.now,
          });
          if (flags.bool("json")) {
            io.out(`${JSON.stringify(result.event, null, 2)}\n`);
          } else {
            const age = Math.round(result.ageMs / 1000);
            const when = age >= 0 ? `${age} s before the check` : `${-age} s after the check`;
            const key =
              input.secrets.length === 1 ? "the secret" : `secret ${result.secretIndex + 1} of ${input.secrets.length}`;
            io.out(
              `valid: webhook-id ${result.id}, ${String(result.event.event ?? "unknown")} event, signed ${when} ` +
                `(tolerance ${input.toleranceMs / 1000} s) with ${key}\n`,
            );
          }
          return 0;
        } catch (err) {
          if (!(err instanceof WebhookVerificationError)) throw err;
          io.err(`aigw ${label}: invalid: ${err.code}: ${err.message}\n`);
          return 1;
        }
      },
    },
  ],
};

interface VerifyInput {
  body: Buffer;
  headers: Record<string, string>;
  secrets: string[];
  toleranceMs: number;
  now: number;
}

function readInput(flags: Flags, env: Record<string, string | undefined>): VerifyInput {
  const values = {
    request: flags.string("request"),
    body: flags.string("body"),
    headers: flags.string("headers"),
    id: flags.string("id"),
    timestamp: flags.string("timestamp"),
    signature: flags.string("signature"),
    secret: flags.list("secret"),
    config: flags.string("config"),
    endpoint: flags.string("endpoint"),
    "tolerance-ms": flags.string("tolerance-ms"),
    at: flags.string("at"),
  };
  let body: Buffer;
  let headers: Record<string, string>;
  if (values.request !== undefined) {
    if (values.body !== undefined || values.headers !== undefined) {
      throw new UsageError("give --request, or --body with --headers, not both");
    }
    ({ body, headers } = parseRawRequest(readFile(values.request, "--request")));
  } else {
    if (values.body === undefined) throw new UsageError("--request FILE or --body FILE is required");
    body = readFile(values.body, "--body");
    headers = values.headers === undefined ? {} : parseHeaders(readFile(values.headers, "--headers").toString("utf8"));
  }
  // Flags win over the headers file: they correct one value of a saved request.
  if (values.id !== undefined) headers["webhook-id"] = values.id;
  if (values.timestamp !== undefined) headers["webhook-timestamp"] = values.timestamp;
  if (values.signature !== undefined) headers["webhook-signature"] = values.signature;

  const config = values.config === undefined ? undefined : loadConfigFile(values.config, env);
  const secrets = [...(values.secret ?? [])];
  if (values.endpoint !== undefined) {
    if (!config) throw new UsageError("--endpoint NAME needs --config FILE");
    const endpoint = config.webhooks[values.endpoint];
    if (!endpoint) {
      throw new UsageError(
        `--endpoint: ${values.config} has no webhook "${values.endpoint}" (it has: ${Object.keys(config.webhooks).join(", ") || "none"})`,
      );
    }
    secrets.push(endpoint.secret);
  }
  const fromEnv = secrets.length === 0 && env.WEBHOOK_SECRET !== undefined && env.WEBHOOK_SECRET !== "";
  if (fromEnv) secrets.push(env.WEBHOOK_SECRET ?? "");
  if (secrets.length === 0)
    throw new UsageError("--secret S (or WEBHOOK_SECRET, or --config with --endpoint) is required");
  // A secret aigw would refuse cannot be an endpoint's: say so rather than "no signature matches".
  for (const secret of secrets) {
    const problem = signingSecretProblem(secret);
    if (problem)
      throw new UsageError(`${fromEnv ? "WEBHOOK_SECRET" : "--secret"}: ${problem.code}: ${problem.message}`);
  }

  let toleranceMs = config?.security.timestampToleranceMs ?? DEFAULT_TIMESTAMP_TOLERANCE_MS;
  if (values["tolerance-ms"] !== undefined) {
    const text = values["tolerance-ms"];
    toleranceMs = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    const { min, max } = TIMESTAMP_TOLERANCE_MS;
    if (!(toleranceMs >= min && toleranceMs <= max)) {
      throw new UsageError(
        `--tolerance-ms: must be a whole number of milliseconds from ${min} to ${max} (a day), as security.timestamp_tolerance_ms, got "${text}"`,
      );
    }
  }
  let now = Date.now();
  if (values.at !== undefined) {
    if (!/^\d{1,15}$/.test(values.at)) throw new UsageError(`--at: "${values.at}" is not unix seconds`);
    now = Number(values.at) * 1000;
  }
  return { body, headers, secrets, toleranceMs, now };
}

function readFile(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : (err as Error).message;
    throw new UsageError(`${flag}: cannot read ${path} (${why})`);
  }
}

/** A saved raw request: an optional request line, header lines, a blank line, then the body bytes. */
function parseRawRequest(raw: Buffer): { body: Buffer; headers: Record<string, string> } {
  const crlf = raw.indexOf("\r\n\r\n");
  const lf = raw.indexOf("\n\n");
  const [end, gap] = crlf >= 0 && (lf < 0 || crlf < lf) ? [crlf, 4] : lf >= 0 ? [lf, 2] : [-1, 0];
  if (end < 0) throw new UsageError("--request: no blank line between the headers and the body");
  return { headers: parseHeaders(raw.subarray(0, end).toString("utf8")), body: raw.subarray(end + gap) };
}

/** "Name: value" lines (a request or status line first is skipped), or a JSON object. */
function parseHeaders(text: string): Record<string, string> {
  const trimmed = text.trim();
  const headers: Record<string, string> = {};
  if (trimmed.startsWith("{")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw new UsageError("--headers: starts with { but is not JSON");
    }
    for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
      headers[name.toLowerCase()] = Array.isArray(value) ? String(value[0]) : String(value);
    }
    return headers;
  }
  for (const line of trimmed.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0 || /^[A-Z]+ \S+ HTTP\/|^HTTP\//.test(line)) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!(name in headers)) headers[name] = line.slice(colon + 1).trim();
  }
  return headers;
}
