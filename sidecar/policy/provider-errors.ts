import type { ServerResponse } from "node:http";
import { REQUEST_ID_HEADER } from "../proxy/headers.js";

/**
 * aigw's own refusals in the error format of the provider the app is calling, so that its
 * client library raises them like the provider's (openai: RateLimitError, BadRequestError;
 * @anthropic-ai/sdk the same).
 */

export type ErrorFormat = "openai" | "anthropic";

const ANTHROPIC_MESSAGES = "/v1/messages";

/** Anthropic's Messages API has its own error shape; everything else is OpenAI-compatible. */
export function errorFormatFor(path: string): ErrorFormat {
  return path === ANTHROPIC_MESSAGES ? "anthropic" : "openai";
}

export interface ProviderError {
  message: string;
  /** OpenAI's error.type ("requests", "tokens", "insufficient_quota", "invalid_request_error"). */
  openAiType: string;
  /** OpenAI's error.code. */
  code: string;
  /** OpenAI's error.param: the offending parameter, null when none. */
  param: string | null;
  /** Anthropic's error.type ("rate_limit_error", "invalid_request_error"). */
  anthropicType: string;
}

export function providerErrorBody(format: ErrorFormat, error: ProviderError): Buffer {
  const body =
    format === "anthropic"
      ? { type: "error", error: { type: error.anthropicType, message: error.message } }
      : { error: { message: error.message, type: error.openAiType, param: error.param, code: error.code } };
  return Buffer.from(JSON.stringify(body));
}

/** Answers with a provider-format error and closes the response. Extra headers as [name, value, …]. */
export function sendProviderError(
  res: ServerResponse,
  status: number,
  format: ErrorFormat,
  error: ProviderError,
  requestId: string,
  extraHeaders: readonly string[] = [],
): void {
  if (res.headersSent || res.destroyed) return;
  const body = providerErrorBody(format, error);
  res.writeHead(status, [
    "content-type",
    "application/json",
    "content-length",
    String(body.length),
    REQUEST_ID_HEADER,
    requestId,
    ...extraHeaders,
  ]);
  res.end(body);
}
