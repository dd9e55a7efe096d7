import { pino, type Logger, type LoggerOptions } from "pino";

export type { Logger };

/**
 * Paths whose values never reach a log line: signing secrets, bearer tokens and
 * provider keys, wherever a component puts them (pino redaction, fixed paths).
 */
export const REDACT_PATHS = [
  "secret",
  "*.secret",
  "*.*.secret",
  "secrets",
  "*.secrets",
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  'headers["x-api-key"]',
  '*.headers["x-api-key"]',
  "apiKey",
  "*.apiKey",
];

export interface LoggerSettings {
  level?: string;
  /** Where lines go; default stdout. Tests pass a stream to read what was logged. */
  destination?: NodeJS.WritableStream;
  /** The process: "control-plane", "sidecar"; every line carries it as `name`. */
  name?: string;
}

/**
 * The process's root logger. Its lines carry `name` (the process); parts of it log through
 * `logger.child({ component: "delivery" })`, so `component` names the part. The root does not
 * bind `component` itself: pino appends a child's bindings to its parent's, and a line with
 * two `component` keys is read differently by different log tools.
 */
export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? process.env.AIGW_LOG_LEVEL ?? "info",
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    base: { name: settings.name ?? "aigw" },
  };
  return settings.destination ? pino(options, settings.destination as pino.DestinationStream) : pino(options);
}
