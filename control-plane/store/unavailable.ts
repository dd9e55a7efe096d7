import { AigwError, type ErrorCode, errorCodeOf } from "../../common/errors.js";

/**
 * The store refused a write for now, for a reason outside aigw: the database is locked by
 * another process, the disk under it is full, or the database server cannot be reached. Nothing was written (the transaction rolled
 * back whole), so the caller retries later or hands the work back (a sidecar keeps its
 * unacked batch; a delivery keeps its lease); it is never a reason to drop anything.
 */
export class StoreUnavailableError extends AigwError {
  override readonly name = "StoreUnavailableError";
}

const UNAVAILABLE_CODES: ReadonlySet<ErrorCode> = new Set([
  "AIGW_STORE_LOCKED",
  "AIGW_STORE_DISK_FULL",
  "AIGW_STORE_UNREACHABLE",
]);

export function isStoreUnavailable(err: unknown): boolean {
  const code = errorCodeOf(err);
  return code !== undefined && UNAVAILABLE_CODES.has(code);
}
