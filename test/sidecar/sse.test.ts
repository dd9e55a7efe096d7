import { describe, expect, it } from "vitest";
import { parseSseBlock, SseFramer, SseParser, type SseEvent } from "../../sidecar/providers/sse.js";

/** Feeds `text` split at every pair of positions and checks the result never depends on where. */
function everySplit(text: string, run: (chunks: Buffer[]) => unknown): void {
  const bytes = Buffer.from(text);
  const whole = run([bytes]);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j += 7) {
      const got = run([bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)]);
      expect(got, `split at ${i}/${j}`).toEqual(whole);
    }
  }
}

function parseAll(chunks: Buffer[]): SseEvent[] {
  const parser = new SseParser();
  return chunks.flatMap((c) => parser.push(c));
}

describe("SSE parser", () => {
  const stream =
    ": keep-alive comment\r\n\r\n" +
    'event: response.created\r\ndata: {"a":1}\r\n\r\n' +
    "data: line one\ndata:line two\nid: 7\n\n" +
    "data: ümlaut ✓\r\r" +
    "garbage without colon\nretry: 10\n\n" +
    "data: [DONE]\n\n" +
    "data: unterminated";

  it("reads fields across LF, CRLF and CR line ends, skipping comments and unknown fields", () => {
    expect(parseAll([Buffer.from(stream)])).toEqual([
      { event: "response.created", data: '{"a":1}' },
      { event: "message", data: "line one\nline two", id: "7" },
      { event: "message", data: "ümlaut ✓" },
      { event: "message", data: "[DONE]" },
    ]);
  });

  it("gives the same events wherever chunks split (inside lines, CRLF pairs and UTF-8 characters)", () => {
    everySplit(stream, parseAll);
  });

  it("frames raw blocks whose bytes add up to the input, minus an unfinished tail", () => {
    everySplit(stream, (chunks) => {
      const framer = new SseFramer();
      const blocks = chunks.flatMap((c) => framer.push(c));
      const rest = framer.flush();
      expect(Buffer.concat([...blocks, rest ?? Buffer.alloc(0)]).toString()).toBe(stream);
      return blocks.map((b) => b.toString());
    });
  });

  it("never throws on binary garbage", () => {
    const parser = new SseParser();
    for (let i = 0; i < 50; i++)
      parser.push(Buffer.from(Array.from({ length: 64 }, (_, k) => (i * 31 + k * 17) % 256)));
    expect(parseSseBlock("no data here\n\n")).toBeUndefined();
  });
});
