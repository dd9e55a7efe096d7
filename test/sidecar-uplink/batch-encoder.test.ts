import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EVENT_ID_PATTERN, newEventId, newRequestId, ulid } from "../../common/ids.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { EventBatchSchema } from "../../gen/aigw/v1/ingest_pb.js";
import { completionEvent, errorEvent, rateLimitEvent, streamingEvent } from "../../sidecar/proxy/events.js";
import { BatchBody, encodeEventBatch } from "../../sidecar/uplink/batch-encoder.js";

// The sidecar's own batch encoder must write the bytes protobuf-es writes, for every event
// a sidecar can make and for any other, and refuse what protobuf-es refuses.

const reference = (seq: number, events: Event[]): Uint8Array =>
  toBinary(EventBatchSchema, create(EventBatchSchema, { seq: BigInt(seq), events }));

const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 60 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.string({ minLength: 120, maxLength: 300 }),
  fc.constantFrom("", "\ud800", "a\udfffb", "é".repeat(50), "\u0000", "x".repeat(127), "x".repeat(128)),
);
const u32 = fc.oneof(
  fc.constantFrom(0, 1, 127, 128, 16_383, 16_384, 0xffff_ffff),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
const u64 = fc.oneof(fc.constantFrom(0n, 1n, (1n << 64n) - 1n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
const dbl = fc.oneof(fc.double(), fc.constantFrom(0, -0, Number.NaN, Number.POSITIVE_INFINITY, 1e-300));
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(arb, { nil: undefined });
/** An init with the optional keys left out when undefined (as `create` is given them). */
const defined = <T extends object>(o: T): T =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

const payload = fc.oneof(
  fc
    .record({
      requestId: text,
      model: text,
      tokensUsed: u32,
      promptTokens: u32,
      completionTokens: u32,
      costUsd: dbl,
      latencyMs: u32,
      ttftMs: maybe(u32),
      stream: fc.boolean(),
      statusCode: u32,
      path: text,
      responseJson: text,
      pricingUnknown: fc.boolean(),
      finishReason: text,
      async: fc.boolean(),
      cacheReadTokens: maybe(u32),
      cacheWriteTokens: maybe(u32),
      cacheWrite1hTokens: maybe(u32),
      reasoningTokens: maybe(u32),
      usageUnknown: fc.boolean(),
    })
    .map((value) => ({ case: "completion" as const, value: defined(value) })),
  fc
    .record({
      requestId: text,
      errorType: text,
      errorMessage: text,
      statusCode: u32,
      retryAfter: maybe(u32),
      severity: text,
      model: text,
      path: text,
      latencyMs: u32,
    })
    .map((value) => ({ case: "error" as const, value: defined(value) })),
  fc
    .record({ requestId: text, tokenIndex: u32, content: text, finishReason: maybe(text), model: text })
    .map((value) => ({ case: "streaming" as const, value: defined(value) })),
  fc
    .record({
      usagePercent: dbl,
      limitType: text,
      currentSpend: dbl,
      budgetLimit: dbl,
      threshold: u32,
      period: text,
    })
    .map((value) => ({ case: "budget" as const, value })),
  fc
    .record({
      requestId: text,
      source: text,
      limitType: text,
      limit: maybe(u64),
      remaining: maybe(u64),
      resetAt: text,
      retryAfter: maybe(u32),
      statusCode: u32,
      warning: fc.boolean(),
    })
    .map((value) => ({ case: "rateLimit" as const, value: defined(value) })),
  // Not a sidecar's: written by protobuf-es inside the batch.
  fc
    .record({ endpoint: text, reason: text, failedAttempts: u32 })
    .map((value) => ({ case: "endpointDisabled" as const, value })),
  fc.constant(undefined),
);

const time = fc.oneof(
  fc.constant(undefined),
  fc.integer({ min: -8.64e15, max: 8.64e15 }).map((ms) => timestampFromMs(ms)),
  fc
    .record({
      // Around 2^53 too: below it the encoder writes the seconds as a double, above as a BigInt.
      seconds: fc.oneof(
        fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
        fc.bigInt({ min: 0n, max: 1n << 40n }),
        fc.bigInt({ min: (1n << 53n) - 3n, max: (1n << 53n) + 3n }),
        fc.constantFrom(-1n, 0n, 1n, 127n, 128n, (1n << 63n) - 1n, -(1n << 63n)),
      ),
      nanos: fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }),
    })
    .map((t) => create(EventSchema, { time: t }).time),
);

const event = fc
  .record({ id: text, orgId: text, app: text, provider: text, webhookUrl: text, time, payload })
  .map(({ payload, time, ...rest }) =>
    create(EventSchema, {
      ...rest,
      ...(time === undefined ? {} : { time }),
      ...(payload === undefined ? {} : { payload }),
    } as MessageInitShape<typeof EventSchema>),
  );

describe("encodeEventBatch", () => {
  it("writes the bytes protobuf-es writes, for any events and seq", () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 12 }), fc.nat(), (events, seq) => {
        expect(Buffer.from(encodeEventBatch(seq, events))).toEqual(Buffer.from(reference(seq, events)));
      }),
      { numRuns: 500 },
    );
  });

  it("writes a full batch of large events (lengths over two bytes) and then small ones alike", () => {
    const big = create(EventSchema, {
      id: newEventId(),
      payload: { case: "streaming", value: { requestId: "req_1", content: "ü".repeat(200_000) } },
    });
    const small = completionEvent(
      { orgId: "org_a", app: "app", provider: "openai" },
      {
        requestId: newRequestId(),
        model: "gpt-4",
        usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 },
        usageKnown: true,
        latencyMs: 12,
        ttftMs: undefined,
        stream: false,
        statusCode: 200,
        path: "/v1/chat/completions",
        finishReason: undefined,
      },
    );
    const events = [...Array.from({ length: 255 }, () => small), big];
    expect(Buffer.from(encodeEventBatch(7, events))).toEqual(Buffer.from(reference(7, events)));
    expect(Buffer.from(encodeEventBatch(8, [small]))).toEqual(Buffer.from(reference(8, [small])));
  });

  it("refuses what protobuf-es refuses, with its error", () => {
    const bad = create(EventSchema, { id: "evt_1", payload: { case: "completion", value: { tokensUsed: 1 } } });
    (bad.payload.value as { tokensUsed: number }).tokensUsed = -1;
    expect(() => reference(1, [bad])).toThrow(/tokens_used/);
    expect(() => encodeEventBatch(1, [bad])).toThrow(/tokens_used/);
    const noValue = create(EventSchema, { id: "evt_3" });
    (noValue as { payload: unknown }).payload = { case: "completion", value: undefined };
    // protobuf-es writes an empty message for a case without a value; so does the encoder.
    expect(Buffer.from(encodeEventBatch(1, [noValue]))).toEqual(Buffer.from(reference(1, [noValue])));
    // The next batch is unharmed by the one refused.
    const good = create(EventSchema, { id: "evt_2" });
    expect(Buffer.from(encodeEventBatch(2, [good]))).toEqual(Buffer.from(reference(2, [good])));
  });

  it("writes the same bytes when the events are added one at a time, several batches open at once", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(event, { maxLength: 8 }), { minLength: 1, maxLength: 4 }),
        fc.nat(),
        (batches, seq) => {
          // Interleaved: every body gets its next event in turn, as the uplink's open and full bodies may.
          const bodies = batches.map(() => new BatchBody());
          for (let i = 0; i < Math.max(...batches.map((b) => b.length)); i++) {
            batches.forEach((events, b) => {
              if (i < events.length) bodies[b]!.add(events[i]!);
            });
          }
          bodies.forEach((body, b) => {
            expect(body.count).toBe(batches[b]!.length);
            expect(Buffer.from(body.finish(seq + b))).toEqual(Buffer.from(reference(seq + b, batches[b]!)));
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  it("keeps nothing of an event protobuf-es refuses: the body goes on with the next ones", () => {
    const bad = create(EventSchema, { id: "evt_1", payload: { case: "completion", value: { tokensUsed: 1 } } });
    (bad.payload.value as { tokensUsed: number }).tokensUsed = -1;
    const good = [create(EventSchema, { id: "evt_2" }), create(EventSchema, { id: "evt_3" })];
    const body = new BatchBody();
    body.add(good[0]!);
    const bytes = body.bytes;
    expect(() => body.add(bad)).toThrow(/tokens_used/);
    expect(body.count).toBe(1);
    expect(body.bytes).toBe(bytes);
    body.add(good[1]!);
    expect(Buffer.from(body.finish(4))).toEqual(Buffer.from(reference(4, good)));
    expect(() => body.finish(5)).toThrow(/finish\(\) twice/);
    expect(() => body.add(good[0]!)).toThrow(/after finish/);
  });

  it("encodes the events the proxy builds; they decode to what `create` makes of the same fields", () => {
    const origin = { orgId: "org_a", app: "shop", provider: "openai" };
    const events = [
      completionEvent(origin, {
        requestId: "req_1",
        model: "gpt-4o",
        usage: { promptTokens: 5, completionTokens: 6, totalTokens: 11, cacheReadTokens: 2, reasoningTokens: 1 },
        usageKnown: true,
        latencyMs: 42.4,
        ttftMs: 7.6,
        stream: true,
        statusCode: 200,
        path: "/v1/chat/completions",
        finishReason: "client_disconnected",
      }),
      errorEvent(origin, {
        requestId: "req_2",
        errorClass: { errorType: "rate_limit", severity: "warning" },
        errorMessage: "slow down",
        statusCode: 429,
        retryAfter: 3,
        model: "gpt-4o",
        path: "/v1/chat/completions",
        latencyMs: 5,
      }),
      streamingEvent(origin, { requestId: "req_3", tokenIndex: 4, content: "héllo", finishReason: "stop", model: "m" }),
      rateLimitEvent(origin, {
        requestId: "req_4",
        source: "upstream",
        limitType: "tokens",
        limit: 1000,
        remaining: 10,
        resetAt: 1_700_000_000_000,
        retryAfter: undefined,
        statusCode: 200,
        warning: true,
      }),
    ];
    const decoded = fromBinary(EventBatchSchema, encodeEventBatch(3, events));
    expect(decoded.events).toEqual(events);
    for (const e of events) {
      const { $typeName: _, ...init } = e;
      expect(e).toEqual(create(EventSchema, init as MessageInitShape<typeof EventSchema>));
      expect(e.id).toMatch(EVENT_ID_PATTERN);
    }
    expect(Buffer.from(encodeEventBatch(3, events))).toEqual(Buffer.from(reference(3, events)));
  });
});

describe("ids", () => {
  it("are ULIDs after their prefix: time first, then random, in Crockford base32", () => {
    const now = Date.UTC(2026, 10, 29, 12, 0, 0, 123);
    const a = ulid(now);
    const b = ulid(now);
    expect(a).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(a.slice(0, 10)).toBe(b.slice(0, 10));
    expect(a).not.toBe(b);
    // The time part read back is the time.
    let ms = 0;
    for (const c of a.slice(0, 10)) ms = ms * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".indexOf(c);
    expect(ms).toBe(now);
    expect(ulid(now + 1) > a).toBe(true);
    expect(newEventId(now)).toMatch(EVENT_ID_PATTERN);
    expect(newRequestId(now).startsWith("req_")).toBe(true);
    expect(new Set(Array.from({ length: 5000 }, () => newRequestId())).size).toBe(5000);
  });
});
