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
  name?: string;
}

export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? process.env.AIGW_LOG_LEVEL ?? "info",
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    base: { component: settings.name ?? "aigw" },
  };
  return settings.destination ? pino(options, settings.destination as pino.DestinationStream) : pino(options);
}
