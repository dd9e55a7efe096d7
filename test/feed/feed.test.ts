import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Event, EventSchema, EventType } from "../../gen/aigw/v1/events_pb.js";
import { FeedService } from "../../gen/aigw/v1/feed_pb.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { EventBus } from "../../control-plane/feed/event-bus.js";
import { FeedServiceImpl } from "../../control-plane/feed/feed-service.js";
import type { RunningControlPlane } from "../../control-plane/run.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import type { StoredEvent } from "../../control-plane/store/store.js";
import { runAigw } from "../support/processes.js";
import { openTestStore } from "../support/store.js";
import { waitFor } from "../support/wait.js";

const completion = (model = "gpt-4"): Event =>
  create(EventSchema, {
    id: newEventId(),
    orgId: "org_feed",
    app: "feed",
    provider: "openai",
    time: timestampNow(),
    payload: { case: "completion", value: { requestId: newRequestId(), model, tokensUsed: 10 } },
  });
const error = (): Event =>
  create(EventSchema, {
    id: newEventId(),
    orgId: "org_feed",
    app: "feed",
    provider: "openai",
    time: timestampNow(),
    payload: { case: "error", value: { requestId: newRequestId(), errorType: "timeout", severity: "error" } },
  });

// FeedService.Watch over a real control plane: live events to several watchers, filtered
// by type, resumable by cursor, and a watcher that stops reading is cut off, never slowing ingest.
describe("live feed", () => {
  let fixture: ControlPlaneFixture;
  let cp: RunningControlPlane;

  beforeAll(async () => {
    fixture = await startControlPlane("security:\n  require_https: false\n");
    cp = fixture.cp;
  });
  afterAll(() => fixture?.close());

  it("streams events to several watchers, filtered by type, and resumes from a cursor", async () => {
    const grpcFeed = createClient(FeedService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
    const connectFeed = createClient(FeedService, createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1" }));
    const abort = new AbortController();
    const all: Event[] = [];
    const errorsOnly: Event[] = [];
    const cursors: string[] = [];
    const run1 = (async () => {
      for await (const r of grpcFeed.watch({}, { signal: abort.signal })) {
        all.push(r.event!);
        cursors.push(r.cursor);
      }
    })().catch(() => {});
    const run2 = (async () => {
      for await (const r of connectFeed.watch({ eventTypes: [EventType.ERROR] }, { signal: abort.signal }))
        errorsOnly.push(r.event!);
    })().catch(() => {});
    // Watchers are live once an event published after they subscribed reaches them.
    await waitFor("both watchers to be live", async () => {
      await cp.deliverEvents([completion(), error()]);
      return all.length > 0 && errorsOnly.length > 0;
    });
    const sent = [completion(), error(), completion("gpt-4o")];
    await cp.deliverEvents(sent);
    await waitFor("the three events on the unfiltered watcher", () =>
      sent.every((e) => all.some((x) => x.id === e.id)),
    );
    await waitFor("the error on the filtered watcher", () => errorsOnly.some((x) => x.id === sent[1]!.id));
    expect(errorsOnly.every((e) => e.payload.case === "error")).toBe(true);
    abort.abort();
    await Promise.all([run1, run2]);

    // Resume after the first of the three: the two after it come back from the store.
    const at = all.findIndex((e) => e.id === sent[0]!.id);
    const resumed: string[] = [];
    const again = new AbortController();
    const run3 = (async () => {
      for await (const r of grpcFeed.watch({ cursor: cursors[at] ?? "" }, { signal: again.signal }))
        resumed.push(r.event!.id);
    })().catch(() => {});
    await waitFor("the replay", () => resumed.length >= 2);
    expect(resumed.slice(0, 2)).toEqual([sent[1]!.id, sent[2]!.id]);
    again.abort();
    await run3;
  });

  it("answers INVALID_ARGUMENT for a bad cursor", async () => {
    const feed = createClient(FeedService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
    const err = await (async () => {
      for await (const _ of feed.watch({ cursor: "yesterday" })) {
        // no events expected
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/cursor/);
  });

  it("prints the feed with `aigw watch --json`", async () => {
    const p = runAigw(["watch", "--json", "--events", "completion", "--admin", cp.httpUrl]);
    try {
      const e = completion("gpt-4-watch");
      await waitFor("the watch line", async () => {
        await cp.deliverEvents([completion("gpt-4-watch"), e]);
        return p.lines.some((l) => l.includes("gpt-4-watch"));
      });
      const line = JSON.parse(p.lines.find((l) => l.includes("gpt-4-watch"))!) as Record<string, unknown>;
      expect(line).toMatchObject({ event: "completion", model: "gpt-4-watch", org_id: "org_feed" });
    } finally {
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    }
  });
});

describe("a watcher that stops reading", () => {
  it("is cut off with RESOURCE_EXHAUSTED and a cursor to resume from, while publishing goes on", async () => {
    const { store, cleanup } = await openTestStore();
    const bus = new EventBus();
    try {
      const transport = createRouterTransport((r) =>
        r.service(
          FeedService,
          new FeedServiceImpl({ store, bus, logger: createLogger({ level: "silent" }), maxQueued: 5 }),
        ),
      );
      const feed = createClient(FeedService, transport);
      const it = feed.watch({})[Symbol.asyncIterator]();
      let seq = 0;
      const stored = (): StoredEvent => {
        seq++;
        return { seq, event: completion(), ingestedAt: Date.now(), cursor: String(seq) };
      };
      // The first event proves the watcher is live.
      const first = it.next();
      await waitFor("the watcher's subscription", () => bus.size === 1);
      bus.publish([stored()]);
      expect((await first).done).toBe(false);
      // It stops reading; publishing 1000 more returns at once and cuts it off.
      bus.publish(Array.from({ length: 1000 }, stored));
      expect(bus.size).toBe(0);
      const got: string[] = [];
      const err = await (async () => {
        for (;;) {
          const r = await it.next();
          if (r.done) return undefined;
          got.push(r.value.cursor);
        }
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
      expect((err as ConnectError).rawMessage).toContain(`resume with cursor "${got.at(-1)}"`);
      expect(got.length).toBeLessThanOrEqual(6);
    } finally {
      bus.closeAll();
      await cleanup();
    }
  });
});
