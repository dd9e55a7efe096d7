/**
 * The proxy's own answers when the upstream cannot answer: OpenAI-style JSON error bodies
 * (`{"error":{"message","type","code"}}`) so OpenAI clients surface them like provider errors.
 */

export interface GatewayFailure {
  kind: "network" | "timeout";
  /** 502 (no connection, reset) or 504 (no response in time). */
  status: 502 | 504;
  /** Stable code: upstream_unreachable, upstream_timeout. */
  code: "upstream_unreachable" | "upstream_timeout";
  /** Says what failed, without secrets (no headers, no body). */
  message: string;
}

/** Classifies an error from undici (or the socket) for a request that got no response head. */
export function upstreamFailure(err: Error): GatewayFailure {
  const code = (err as { code?: unknown }).code;
  const codeText = typeof code === "string" ? code : err.name;
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return {
      kind: "timeout",
      status: 504,
      code: "upstream_timeout",
      message: `upstream did not answer in time (${codeText})`,
    };
  }
  const cause = (err as { cause?: { code?: unknown } }).cause;
  const causeCode = typeof cause?.code === "string" ? ` ${cause.code}` : "";
  return {
    kind: "network",
    status: 502,
    code: "upstream_unreachable",
    message: `upstream unreachable (${codeText}${causeCode}): ${err.message}`,
  };
}

export function gatewayErrorBody(failure: GatewayFailure, upstreamName: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      error: {
        message: `aigw: ${failure.message} [upstream "${upstreamName}"]`,
        type: "aigw_gateway_error",
        code: failure.code,
      },
    }),
  );
}
