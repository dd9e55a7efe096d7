/**
 * aigw's error catalogue: one stable code per kind of error, in log lines (`code`), in the
 * details of RPC errors (aigw.v1.ErrorDetail), in CLI messages and on thrown errors
 * (`err.code`). Codes never change meaning once released; messages may be reworded.
 *
 * To add a code: add an entry here (AIGW_ + the area + what happened, in capitals), add
 * its row to the README's "Errors" table (a test holds the two together), and throw an
 * AigwError with it, or pass it to the RPC helper (common/rpc-errors.ts) or a log line.
 */
export const ERROR_CATALOGUE = {
  // Configuration
  AIGW_CONFIG_INVALID: {
    meaning: "the config file has problems; each is listed as FILE:LINE: path: message, and nothing starts",
    fix: "fix every listed line and start again",
  },
  AIGW_CONFIG_UNREADABLE: {
    meaning: "the config file cannot be used at all: missing, a directory, not readable, empty, or not UTF-8 text",
    fix: "point --config at the YAML file (for example examples/webhook_config.yaml)",
  },
  AIGW_LISTEN_UNPROTECTED: {
    meaning: "asked to listen beyond loopback without auth.admin_tokens and auth.sidecar_tokens",
    fix: "add the tokens to the config, or listen on 127.0.0.1",
  },
  AIGW_KEY_FILE_BESIDE_DATABASE: {
    meaning:
      "(warning) signing secrets are sealed with a key file next to the database, so one copy of that folder holds both",
    fix: "set storage.encryption_key from the environment or a mounted secret",
  },
  // Ingest and delivery
  AIGW_INGEST_PAUSED: {
    meaning:
      "(warning) delivery.queue_size deliveries are pending: ingest holds sidecars' batches unacknowledged (they wait in the sidecars' spools, app traffic is unaffected) until fewer than 90 % of that are pending",
    fix: "find why deliveries do not finish (aigw stats: a receiver down or slow) and fix it; or raise delivery.queue_size",
  },
  AIGW_STORE_LOCKED: {
    meaning:
      "the database file is locked by another process (a second control plane on the same file, or a tool holding a write transaction): writes wait; sidecars keep their batches, deliveries keep their leases, and everything resumes when the lock is released",
    fix: "stop the other process (lsof or fuser on the database file names it); run one control plane per SQLite file, or use PostgreSQL for several",
  },
  AIGW_STORE_DISK_FULL: {
    meaning:
      "the disk holding the database is full: writes wait; sidecars keep their batches, deliveries keep their leases, and everything resumes when space is free",
    fix: "free space on the database's filesystem (shorter delivery.retention_hours keeps less history)",
  },
  AIGW_STORE_UNREACHABLE: {
    meaning:
      "the PostgreSQL server cannot be reached or cut the connection (restart, failover, pg_terminate_backend, too many connections): writes wait; sidecars keep their batches, deliveries keep their leases, and the control plane reconnects by itself",
    fix: "bring PostgreSQL back (or check the network and max_connections); nothing needs restarting on aigw's side",
  },
  AIGW_ENDPOINT_AUTO_DISABLED: {
    meaning:
      "(warning) every attempt to an endpoint failed for delivery.auto_disable_after_ms (two attempts at least): aigw disabled it and sent endpoint.disabled; its pending deliveries fail without an attempt",
    fix: "fix the receiver, then aigw endpoints enable NAME and replay what failed: aigw deliveries replay --since DURATION --endpoint NAME",
  },
  AIGW_RESULT_UNRECORDABLE: {
    meaning:
      "the store refused a delivery attempt's result for what it held (not for being unavailable): aigw recorded the attempt again without its details (its outcome, status code and time; the reason as its error), so the delivery is not sent again; a result refused even then waits for its lease to expire and the delivery is attempted again",
    fix: "report it with the log line (it names the delivery and the store's error): the store should take every result",
  },
  AIGW_RETENTION_KEPT_PENDING: {
    meaning:
      "(warning) events older than delivery.retention_hours are kept because their deliveries to live (enabled) endpoints are still pending; retention never takes work away from an endpoint",
    fix: "see which endpoint is behind (aigw stats, aigw deliveries list --status pending); fix its receiver, or disable or delete the endpoint to let the next run purge them",
  },
  // Destinations (webhook URLs)
  AIGW_DESTINATION_INVALID: {
    meaning: "a webhook URL is not an absolute http(s) URL, is too long, or carries credentials or a fragment",
    fix: "give the receiver's https:// URL, without user:password@ or #fragment",
  },
  AIGW_DESTINATION_HTTPS_REQUIRED: {
    meaning: "a webhook URL uses plain http:// while security.require_https is true",
    fix: "use https://, or set security.require_https: false for local test receivers",
  },
  AIGW_DESTINATION_REFUSED: {
    meaning:
      "a webhook destination is, spells, embeds or resolves to an address that is not public (loopback, private, link-local, …) and is outside security.allowed_networks",
    fix: "deliver to a public address, or add the network to security.allowed_networks",
  },
  // Signing secrets
  AIGW_SECRET_INVALID: {
    meaning: 'a signing secret is too short, too long, or "whsec_" followed by something that is not base64',
    fix: "use a generated secret (aigw keys rotate prints one) or at least 16 random bytes",
  },
  // Admin API and auth
  AIGW_INVALID_ARGUMENT: {
    meaning: "an Admin API request has a field that is not valid; the message names the field and nothing changed",
    fix: "correct the named field",
  },
  AIGW_UNAUTHENTICATED: {
    meaning: "a request to the Admin API, ingest, /metrics or the dashboard carries no accepted token",
    fix: "send Authorization: Bearer with a token from auth.admin_tokens (auth.metrics_tokens for /metrics)",
  },
  AIGW_PERMISSION_DENIED: {
    meaning:
      "an org-scoped token asked for what only the operator may do (tokens, pricing, the global subscription, operator endpoints), named another org, or a sidecar's --org is not its token's org",
    fix: "use an operator token (auth.admin_tokens, auth.sidecar_tokens), or the token's own org (aigw whoami shows it)",
  },
  // Webhook verification (aigw/verify, aigw verify)
  AIGW_WEBHOOK_HEADERS_MISSING: {
    meaning: "a webhook request lacks webhook-id, webhook-timestamp or webhook-signature",
    fix: "pass the request's headers unchanged",
  },
  AIGW_WEBHOOK_TIMESTAMP_INVALID: {
    meaning: "webhook-timestamp is not whole unix seconds",
    fix: "pass the header unchanged",
  },
  AIGW_WEBHOOK_TIMESTAMP_EXPIRED: {
    meaning: "webhook-timestamp is older than the tolerance (a replayed or long-delayed request)",
    fix: "reject it; aigw signs every attempt afresh, so a retry will carry a current timestamp",
  },
  AIGW_WEBHOOK_TIMESTAMP_FUTURE: {
    meaning: "webhook-timestamp is further in the future than the tolerance",
    fix: "check the clocks of sender and receiver (NTP)",
  },
  AIGW_WEBHOOK_SIGNATURE_MISMATCH: {
    meaning: "no signature in webhook-signature matches the body under any of the given secrets",
    fix: "verify the raw body bytes (not re-serialised JSON) with the endpoint's current secret",
  },
  AIGW_WEBHOOK_BODY_NOT_JSON: {
    meaning: "the signature is valid but the body is not JSON",
    fix: "the sender is not aigw, or the body was altered before signing",
  },
} as const satisfies Record<`AIGW_${string}`, { meaning: string; fix: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CATALOGUE, value);
}

/** An error with a catalogue code; the message says what and where. */
export class AigwError extends Error {
  override readonly name: string = "AigwError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The catalogue code of an error or of one of its causes, if any. */
export function errorCodeOf(err: unknown): ErrorCode | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (isErrorCode(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}
