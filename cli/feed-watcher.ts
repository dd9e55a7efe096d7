import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Event, EventType } from "../gen/aigw/v1/events_pb.js";
import { FeedService, WatchRequestSchema } from "../gen/aigw/v1/feed_pb.js";

export interface FeedWatchOptions {
  transport: Transport;
  eventTypes: readonly EventType[];
  orgId?: string;
  app?: string;
  /** Start after this cursor; else `sinceMs` back from now; else at the live edge. */
  cursor?: string;
  sinceMs?: number;
  onEvent(event: Event, cursor: string): void;
  /** Connection news for a person (lost, reconnecting, resumed): never on stdout. */
  onNotice(text: string): void;
  signal: AbortSignal;
  /** First reconnect delay and its cap; doubled per failed attempt, with ±20 % jitter. */
  backoff?: { initialMs: number; maxMs: number };
}

/** Errors a reconnect cannot fix: the request or the credentials are wrong. */
const FATAL = new Set([
  Code.InvalidArgument,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.NotFound,
  Code.Unimplemented,
  Code.FailedPrecondition,
  Code.OutOfRange,
]);

/**
 * Watches the feed until `signal` aborts, reconnecting with backoff when the stream is
 * lost or the control plane ends it (restart, shutdown, a watcher that fell behind).
 * Each reconnect resumes after the last cursor seen, and the first response of every
 * stream is its start position, so nothing is missed or repeated across a cut.
 * Returns the last cursor; throws the errors a reconnect cannot fix.
 */
export async function watchFeedResuming(options: FeedWatchOptions): Promise<string> {
  const client = createClient(FeedService, options.transport);
  const { initialMs, maxMs } = options.backoff ?? { initialMs: 250, maxMs: 10_000 };
  let cursor = options.cursor ?? "";
  let failures = 0;
  let lost = false;
  let connected = false;
  for (;;) {
    let reason: string;
    let immediate = false;
    try {
      const request = create(WatchRequestSchema, {
        eventTypes: [...options.eventTypes],
        orgId: options.orgId ?? "",
        app: options.app ?? "",
        cursor,
        ...(cursor === "" && options.sinceMs !== undefined ? { since: durationFromMs(options.sinceMs) } : {}),
      });
      for await (const res of client.watch(request, { signal: options.signal })) {
        if (lost) {
          options.onNotice(
            connected
              ? `reconnected; resuming after cursor ${res.cursor}`
              : `connected; starting after cursor ${res.cursor}`,
          );
          lost = false;
        }
        failures = 0;
        connected = true;
        cursor = res.cursor;
        if (res.event) options.onEvent(res.event, res.cursor);
      }
      reason = "the control plane ended the feed";
    } catch (err) {
      if (options.signal.aborted) return cursor;
      const ce = ConnectError.from(err);
      if (FATAL.has(ce.code)) throw ce;
      reason = `${codeToString(ce.code)}: ${ce.rawMessage}`;
      // Fell behind: the store has everything; catch up from the cursor at once.
      immediate = ce.code === Code.ResourceExhausted && failures === 0;
    }
    if (options.signal.aborted) return cursor;
    const delay = immediate ? 0 : jitter(Math.min(maxMs, initialMs * 2 ** failures));
    failures++;
    lost = true;
    options.onNotice(
      `${connected ? "feed lost" : "cannot reach the feed"} (${reason}); ` +
        `${connected ? "reconnecting" : "retrying"} in ${(delay / 1000).toFixed(1)} s` +
        (cursor === "" ? "" : ` from cursor ${cursor}`),
    );
    if (!(await sleep(delay, options.signal))) return cursor;
  }
}

function jitter(ms: number): number {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

/** False when aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve(!signal.aborted);
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
