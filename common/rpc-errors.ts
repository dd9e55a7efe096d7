import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { ErrorDetailSchema } from "../gen/aigw/v1/errors_pb.js";
import { type ErrorCode, errorCodeOf, isErrorCode } from "./errors.js";

/**
 * Catalogue codes across the RPC boundary: the server puts an aigw.v1.ErrorDetail in the
 * error's details, clients read it back. The message keeps its "field: problem" form.
 */

export interface RpcErrorOptions {
  /** The request field the error is about ("endpoint.url"). */
  field?: string;
  cause?: unknown;
}

export function rpcError(
  code: Code,
  aigwCode: ErrorCode,
  message: string,
  options: RpcErrorOptions = {},
): ConnectError {
  return new ConnectError(
    message,
    code,
    undefined,
    [{ desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { code: aigwCode, field: options.field ?? "" }) }],
    options.cause,
  );
}

/**
 * INVALID_ARGUMENT naming the field: "endpoint.url: <problem>". The code is the cause's
 * (AIGW_DESTINATION_REFUSED, AIGW_SECRET_INVALID, …) when it has one.
 */
export function invalidArgument(
  field: string,
  problem: string,
  aigwCode: ErrorCode = "AIGW_INVALID_ARGUMENT",
): ConnectError {
  return rpcError(Code.InvalidArgument, aigwCode, `${field}: ${problem}`, { field });
}

/** The catalogue code an RPC error carries, if any (details first, then the error's causes). */
export function rpcErrorCode(err: ConnectError): ErrorCode | undefined {
  for (const detail of err.findDetails(ErrorDetailSchema)) if (isErrorCode(detail.code)) return detail.code;
  return errorCodeOf(err.cause);
}

/**
 * One line for a person: "AIGW_DESTINATION_REFUSED (invalid_argument): endpoint.url: …", or
 * "invalid_argument: budget.limit_type: …" when the code says no more than the RPC code.
 */
export function describeRpcError(err: ConnectError): string {
  const aigwCode = rpcErrorCode(err);
  const codeName = codeToString(err.code);
  const specific = aigwCode !== undefined && aigwCode !== "AIGW_INVALID_ARGUMENT";
  return specific ? `${aigwCode} (${codeName}): ${err.rawMessage}` : `${codeName}: ${err.rawMessage}`;
}
