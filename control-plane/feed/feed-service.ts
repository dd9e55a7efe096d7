import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { type Duration, durationMs } from "@bufbuild/protobuf/wkt";
import type { FeedService, WatchRequest, WatchResponse } from "../../gen/aigw/v1/feed_pb.js";
import { WatchResponseSchema } from "../../gen/aigw/v1/feed_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { eventTypeOfCase } from "../../common/event-types.js";
import type { Logger } from "../../common/logger.js";
import { invalidArgument } from "../../common/rpc-errors.js";
import type { Store, StoredEvent } from "../store/store.js";
import type { EventBus } from "./event-bus.js";
import { principalOf, requestOrg } from "../auth/principal.js";
import type { TokenRegistry } from "../auth/token-registry.js";
import { rpcError } from "../../common/rpc-errors.js";

export interface FeedDeps {
  store: Store;
  bus: EventBus;
  logger: Logger;
  /** Events a watcher may fall behind by before it is cut off. */
  maxQueued?: number;
  /** Ends the watches of org tokens when they are revoked; absent: nothing ends them. */
  tokens?: TokenRegistry;
}

const REPLAY_PAGE = 500;

/**
 * FeedService.Watch: stored events after the cursor (or since a time) first, then live
 * ones. The live subscription is opened before the replay so nothing falls in the gap;
 * events seen in both are skipped by cursor. The first response is the start position,
 * so a client cut off before any event resumes from there. A watcher that cannot keep up
 * ends with RESOURCE_EXHAUSTED and can resume from its last cursor. An org token watches
 * its org only (naming another is PERMISSION_DENIED), and its watch ends UNAUTHENTICATED
 * when the token is revoked.
 */
export class FeedServiceImpl implements ServiceImpl<typeof FeedService> {
  constructor(private readonly deps: FeedDeps) {}

  async *watch(req: WatchRequest, ctx: HandlerContext): AsyncGenerator<WatchResponse> {
    const types = new Set<EventType>(req.eventTypes.filter((t) => t !== EventType.UNSPECIFIED));
    for (const [i, t] of req.eventTypes.entries()) {
      if (!(t in EventType) || t === EventType.UNSPECIFIED) {
        throw invalidArgument(`event_types[${i}]`, `unknown event type ${t}`);
      }
    }
    if (req.cursor !== "" && req.since) throw invalidArgument("since", "give a cursor or since, not both");
    const sinceMs = req.since ? parseSince(req.since) : undefined;
    let after = "";
    if (req.cursor !== "") {
      after = req.cursor;
      try {
        this.deps.store.compareCursors(after, after);
      } catch {
        throw invalidArgument("cursor", `"${req.cursor.slice(0, 40)}" is not a cursor from a WatchResponse`);
      }
    }
    const principal = principalOf(ctx);
    const orgId = requestOrg(principal, req.orgId, "org_id");
    const accept = (e: StoredEvent): boolean =>
      (types.size === 0 || types.has(eventTypeOfCase(e.event.payload.case))) &&
      (orgId === "" || e.event.orgId === orgId) &&
      (req.app === "" || e.event.app === req.app);

    const sub = this.deps.bus.subscribe({ maxQueued: this.deps.maxQueued ?? 10_000, onOverflow: () => {}, accept });
    const abort = (): void => sub.close();
    ctx.signal.addEventListener("abort", abort);
    let revoked = false;
    const unwatch = this.deps.tokens?.watch(principal, () => {
      revoked = true;
      sub.close();
    });
    const endIfRevoked = (): void => {
      if (revoked) throw rpcError(Code.Unauthenticated, "AIGW_UNAUTHENTICATED", "authorization: token revoked");
    };
    try {
      const { store } = this.deps;
      if (req.cursor === "") {
        after = sinceMs === undefined ? await store.feedHead() : await store.feedCursorSince(Date.now() - sinceMs);
      }
      yield create(WatchResponseSchema, { cursor: after });
      for (;;) {
        const page = await store.readFeed(after, REPLAY_PAGE);
        for (const e of page) {
          endIfRevoked();
          after = e.cursor;
          if (accept(e)) yield toResponse(e);
        }
        if (page.length < REPLAY_PAGE) break;
      }
      for await (const e of sub) {
        endIfRevoked();
        if (store.compareCursors(e.cursor, after) <= 0) continue;
        after = e.cursor;
        yield toResponse(e);
      }
      endIfRevoked();
      if (sub.overflowed) {
        throw new ConnectError(
          `watcher fell more than ${this.deps.maxQueued ?? 10_000} events behind; resume with cursor "${after}"`,
          Code.ResourceExhausted,
        );
      }
    } finally {
      unwatch?.();
      ctx.signal.removeEventListener("abort", abort);
      sub.close();
    }
  }
}

function toResponse(e: StoredEvent): WatchResponse {
  return create(WatchResponseSchema, { event: e.event, cursor: e.cursor });
}

/** A non-negative duration, in milliseconds. */
function parseSince(since: Duration): number {
  const ms = durationMs(since);
  if (!(ms >= 0) || since.seconds < 0n || since.nanos < 0) throw invalidArgument("since", "must not be negative");
  return ms;
}
