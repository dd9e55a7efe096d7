import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { anthropicAdapter } from "../../sidecar/providers/anthropic.js";
import {
  JsonBodyObserver,
  OpenAiStreamObserver,
  openAiAdapter,
  UsageChunkFilter,
  usageFrom,
} from "../../sidecar/providers/openai.js";
import { parseSseBlock, SseFramer, SseParser } from "../../sidecar/providers/sse.js";

// Properties of the parsers that read what providers send: whatever the bytes and wherever
// the chunks split, they never throw, never lose or invent bytes on the client's path, and
// hold a bounded amount of memory.

/** Splits `bytes` at the given cut points (any order, any duplicates). */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const point of points) {
    chunks.push(bytes.subarray(from, point));
    from = point;
  }
  chunks.push(bytes.subarray(from));
  return chunks;
}

const lineEnd = fc.constantFrom("\n", "\r\n", "\r");
const fieldLine = fc
  .tuple(fc.constantFrom("data", "event", "id", "retry", ":", "data"), fc.string({ maxLength: 40 }))
  .map(([field, value]) => (field === ":" ? `:${value}` : `${field}: ${value.replace(/[\r\n]/g, " ")}`));
/** A well-formed event stream: blocks of field lines, each block ended by a blank line. */
const sseStream = fc
  .array(fc.tuple(fc.array(fieldLine, { minLength: 1, maxLength: 5 }), lineEnd), { maxLength: 20 })
  .map((blocks) => blocks.map(([lines, end]) => lines.map((l) => l + end).join("") + end).join(""));

const chunking = fc.array(fc.nat(), { maxLength: 30 });
const PROPERTY_RUNS = { numRuns: 300 };

describe("SSE parsing, properties", () => {
  it("gives the same events however a stream is split, and never throws", () => {
    fc.assert(
      fc.property(sseStream, chunking, (text, cuts) => {
        const bytes = Buffer.from(text, "utf8");
        const whole = new SseParser().push(bytes);
        const parser = new SseParser();
        const pieces = split(bytes, cuts).flatMap((chunk) => parser.push(chunk));
        expect(pieces).toEqual(whole);
      }),
      PROPERTY_RUNS,
    );
  });

  it("frames blocks whose bytes, with the unfinished tail, are exactly the input", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), chunking, (raw, cuts) => {
        const bytes = Buffer.from(raw);
        const framer = new SseFramer("pass");
        const out = split(bytes, cuts).flatMap((chunk) => framer.push(chunk));
        const rest = framer.flush();
        expect(Buffer.concat([...out, ...(rest ? [rest] : [])]).equals(bytes)).toBe(true);
      }),
      PROPERTY_RUNS,
    );
  });

  it("passes every byte of a block past the bound on, and holds no more than the bound", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.string({ maxLength: 400 }), chunking, (bound, line, cuts) => {
        const bytes = Buffer.from(`data: ${line.replace(/[\r\n]/g, "x")}\n\ndata: after\n\n`);
        const framer = new SseFramer("pass", bound);
        const out: Buffer[] = [];
        for (const chunk of split(bytes, cuts)) {
          out.push(...framer.push(chunk));
          expect(framer.heldBytes).toBeLessThanOrEqual(bound);
        }
        const rest = framer.flush();
        expect(Buffer.concat([...out, ...(rest ? [rest] : [])]).equals(bytes)).toBe(true);
      }),
      PROPERTY_RUNS,
    );
  });

  it("skips an event past the parser's bound and reads the next one", () => {
    const big = `data: ${"x".repeat(10_000)}\n\n`;
    const parser = new SseParser(1024);
    const events = split(Buffer.from(`${big}data: {"ok":1}\n\n`), [100, 5000, 10_003]).flatMap((c) => parser.push(c));
    expect(events).toEqual([{ event: "message", data: '{"ok":1}' }]);
  });

  it("reads any block without throwing", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 500 }), (raw) => {
        const event = parseSseBlock(Buffer.from(raw));
        if (event) expect(typeof event.data).toBe("string");
      }),
      PROPERTY_RUNS,
    );
  });
});

describe("usage parsing, properties", () => {
  const count = fc.oneof(fc.nat(), fc.double(), fc.constant(-1), fc.string(), fc.constant(null));

  it("reads only finite non-negative counts, whatever the usage object holds", () => {
    fc.assert(
      fc.property(
        fc.record(
          { prompt_tokens: count, completion_tokens: count, total_tokens: count, input_tokens: count },
          { requiredKeys: [] },
        ),
        (usage) => {
          const read = usageFrom(usage);
          if (read === undefined) return;
          for (const n of [read.promptTokens, read.completionTokens, read.totalTokens]) {
            expect(Number.isInteger(n) && n >= 0).toBe(true);
          }
        },
      ),
      PROPERTY_RUNS,
    );
  });

  it("finds a JSON body's usage however its bytes are split, and survives any bytes", () => {
    fc.assert(
      fc.property(fc.nat(100_000), fc.nat(100_000), chunking, fc.uint8Array({ maxLength: 200 }), (p, c, cuts, junk) => {
        const body = Buffer.from(
          JSON.stringify({
            id: "x",
            model: "gpt-4o",
            usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c },
          }),
        );
        const observer = new JsonBodyObserver();
        for (const chunk of split(body, cuts)) observer.push(chunk);
        expect(observer.finish()).toMatchObject({ model: "gpt-4o", usage: { promptTokens: p, completionTokens: c } });
        const garbage = new JsonBodyObserver();
        garbage.push(Buffer.from(junk));
        expect(() => garbage.finish()).not.toThrow();
      }),
      PROPERTY_RUNS,
    );
  });

  it("finds a stream's final usage chunk wherever the stream splits, and survives garbage between events", () => {
    fc.assert(
      fc.property(fc.nat(10_000), fc.nat(10_000), chunking, fc.string({ maxLength: 80 }), (p, c, cuts, junk) => {
        const stream = [
          `data: ${JSON.stringify({ model: "gpt-4o", choices: [{ delta: { content: "hi" } }] })}\n\n`,
          `data: ${junk.replace(/[\r\n]/g, " ")}\n\n`,
          `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: p, completion_tokens: c } })}\n\n`,
          "data: [DONE]\n\n",
        ].join("");
        const observer = new OpenAiStreamObserver();
        for (const chunk of split(Buffer.from(stream), cuts)) observer.push(chunk);
        expect(observer.finish()).toMatchObject({ model: "gpt-4o", usage: { promptTokens: p, completionTokens: c } });
      }),
      PROPERTY_RUNS,
    );
  });

  it("merges Anthropic's usage across message_start and message_delta however the stream splits", () => {
    fc.assert(
      fc.property(fc.nat(10_000), fc.nat(10_000), chunking, (input, output, cuts) => {
        const stream = [
          `event: message_start\ndata: ${JSON.stringify({ type: "message_start", message: { model: "claude", usage: { input_tokens: input, output_tokens: 1 } } })}\n\n`,
          `event: message_delta\ndata: ${JSON.stringify({ type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: output } })}\n\n`,
          `event: message_stop\ndata: {"type":"message_stop"}\n\n`,
        ].join("");
        const observer = anthropicAdapter.observeResponse({
          path: "/v1/messages",
          status: 200,
          contentType: "text/event-stream",
        });
        for (const chunk of split(Buffer.from(stream), cuts)) observer.push(chunk);
        expect(observer.finish()).toMatchObject({
          usage: { promptTokens: input, completionTokens: Math.max(output, 0) },
        });
      }),
      PROPERTY_RUNS,
    );
  });

  it("the usage filter leaves a stream that never had a usage chunk byte for byte as sent", () => {
    fc.assert(
      fc.property(sseStream, chunking, (text, cuts) => {
        fc.pre(!text.includes("usage"));
        const bytes = Buffer.from(text);
        const filter = new UsageChunkFilter();
        const out = split(bytes, cuts).flatMap((chunk) => {
          const passed = filter.transform(chunk);
          return passed ? [passed] : [];
        });
        const rest = filter.flush();
        expect(Buffer.concat([...out, ...(rest ? [rest] : [])]).equals(bytes)).toBe(true);
      }),
      PROPERTY_RUNS,
    );
  });

  it("never throws when reading a request body, whatever it is", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
        const body = Buffer.from(raw);
        expect(() => openAiAdapter.readRequest("/v1/chat/completions", body)).not.toThrow();
        expect(() => openAiAdapter.rewriteRequest("/v1/chat/completions", body)).not.toThrow();
      }),
      PROPERTY_RUNS,
    );
  });
});
