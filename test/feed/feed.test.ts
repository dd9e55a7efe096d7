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
import { main } from "../../cli/main.js";
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
        if (!r.event) continue; // the start position
        all.push(r.event);
        cursors.push(r.cursor);
      }
    })().catch(() => {});
    const run2 = (async () => {
      for await (const r of connectFeed.watch({ eventTypes: [EventType.ERROR] }, { signal: abort.signal }))
        if (r.event) errorsOnly.push(r.event);
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
        if (r.event) resumed.push(r.event.id);
    })().catch(() => {});
    await waitFor("the replay", () => resumed.length >= 2);
    expect(resumed.slice(0, 2)).toEqual([sent[1]!.id, sent[2]!.id]);
    again.abort();
    await run3;
  });

  it("starts with its position, so a watcher cut off before any event resumes without a gap", async () => {
    const feed = createClient(FeedService, createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1" }));
    const abort = new AbortController();
    const it = feed.watch({}, { signal: abort.signal })[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.done).toBe(false);
    expect(first.value.event).toBeUndefined();
    const start = first.value.cursor as string;
    expect(start).toBe(await cp.store.feedHead());
    abort.abort();
    await it.return?.();
    // Stored while no one watched: a watcher resuming at the start position gets them all.
    const missed = [completion(), error()];
    await cp.deliverEvents(missed);
    const got: string[] = [];
    for await (const r of feed.watch({ cursor: start })) {
      if (r.event) got.push(r.event.id);
      if (got.length === 2) break;
    }
    expect(got).toEqual(missed.map((e) => e.id));
  });

  it("filters by org and app, and replays by duration", async () => {
    const feed = createClient(FeedService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
    const other = create(EventSchema, { ...completion(), id: newEventId(), orgId: "org_other" });
    const otherApp = create(EventSchema, { ...completion(), id: newEventId(), app: "another-app" });
    const mine = completion("gpt-4-mine");
    await cp.deliverEvents([other, otherApp, mine]);
    const read = async (req: Parameters<typeof feed.watch>[0], until: string): Promise<string[]> => {
      const ids: string[] = [];
      for await (const r of feed.watch(req)) {
        if (!r.event) continue;
        ids.push(r.event.id);
        if (r.event.id === until) break;
      }
      return ids;
    };
    // A minute back covers everything this file stored; the filters leave one event each.
    const since = { seconds: 60n };
    expect(await read({ since, orgId: "org_other" }, other.id)).toEqual([other.id]);
    expect(await read({ since, app: "another-app" }, otherApp.id)).toEqual([otherApp.id]);
    const org = await read({ since, orgId: "org_feed", app: "feed", eventTypes: [EventType.COMPLETION] }, mine.id);
    expect(org).toContain(mine.id);
    expect(org).not.toContain(other.id);
    expect(org).not.toContain(otherApp.id);
    // since: 0 is the live edge: nothing stored is replayed.
    const live = feed.watch({ since: { seconds: 0n } })[Symbol.asyncIterator]();
    expect((await live.next()).value.cursor).toBe(await cp.store.feedHead());
    await live.return?.();
  });

  it("answers INVALID_ARGUMENT for since with a cursor, or a negative since", async () => {
    const feed = createClient(FeedService, createGrpcTransport({ baseUrl: cp.grpcUrl }));
    for (const [req, field] of [
      [{ cursor: "1", since: { seconds: 60n } }, "since: give a cursor or since"],
      [{ since: { seconds: -5n } }, "since: must not be negative"],
    ] as const) {
      const err = await (async () => {
        for await (const _ of feed.watch(req)) {
          // no events expected
        }
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
      expect((err as ConnectError).rawMessage).toContain(field);
    }
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

describe("aigw watch output", () => {
  let fixture: ControlPlaneFixture;
  beforeAll(async () => {
    fixture = await startControlPlane("security:\n  require_https: false\n");
  });
  afterAll(() => fixture?.close());

  async function watchLines(argv: string[], isTTY: boolean, events: Event[], count: number): Promise<string[]> {
    let out = "";
    let err = "";
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => {
      stop = resolve;
    });
    const running = main(["watch", "--since", "1m", "--admin", fixture.cp.httpUrl, ...argv], {
      out: (s) => {
        out += s;
      },
      err: (s) => {
        err += s;
      },
      env: {},
      isTTY,
      stopped,
    });
    await fixture.cp.deliverEvents(events);
    await waitFor(`${count} lines`, () => out.split("\n").length > count);
    stop();
    expect(await running).toBe(0);
    expect(err).toMatch(/^aigw watch: stopped; resume with --since \d+\n$/);
    return out.trimEnd().split("\n");
  }

  it("aligns and colours on a terminal only, and filters by --org and --app", async () => {
    const a = completion("gpt-4o-mini");
    const b = create(EventSchema, { ...error(), id: newEventId(), orgId: "org_feed_long_name", app: "x" });
    const elsewhere = create(EventSchema, { ...completion(), id: newEventId(), orgId: "org_elsewhere", app: "y" });
    const tty = await watchLines(["--org", "org_feed_long_name"], true, [elsewhere, b], 1);
    expect(tty).toHaveLength(1);
    expect(tty[0]).toContain("\u001b[31merror");
    expect(tty[0]).toContain(b.id);

    const piped = await watchLines(["--app", "feed"], false, [a, b], 1);
    // Piped: no escape codes, one space between fields, and only app "feed" (a, not b or elsewhere).
    expect(piped.join("\n")).not.toContain("\u001b");
    expect(
      piped.some((l) => l.includes(b.id)),
      piped.join("\n"),
    ).toBe(false);
    expect(piped.some((l) => l.includes(elsewhere.id))).toBe(false);
    const line = piped.find((l) => l.includes(a.id));
    expect(line).toMatch(/^\S+Z completion org_feed\/feed openai .*model=gpt-4o-mini .*evt_\w+$/);
    expect(line).not.toMatch(/ {2}/);

    const aligned = await watchLines(["--events", "completion,error"], true, [a, b], 3);
    // On a terminal the type, org/app and provider columns line up.
    const plain = aligned.map((l) => l.replace(/\u001b\[\d+m/g, ""));
    const at = (l: string | undefined) => l?.indexOf("openai");
    expect(new Set(plain.map(at)).size).toBe(1);
  });
});

describe("a watcher that stops reading", () => {
  it("does not keep the control plane from closing", async () => {
    const fixture = await startControlPlane("security:\n  require_https: false\n");
    const feed = createClient(FeedService, createGrpcTransport({ baseUrl: fixture.cp.grpcUrl }));
    const first = completion();
    await fixture.cp.deliverEvents([first]);
    // Leaving the loop stops reading without cancelling: the server's stream stays open.
    for await (const r of feed.watch({ since: { seconds: 60n } })) {
      if (r.event?.id === first.id) break;
    }
    await fixture.cp.deliverEvents([completion(), completion()]);
    const closed = await Promise.race([
      fixture.close().then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 30_000)),
    ]);
    expect(closed, "closed within 30 s").toBe(true);
  });

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
