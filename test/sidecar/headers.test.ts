import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  clientResponseHead,
  HEADER_CONTROL,
  HEADER_TOKEN,
  headerLinesValid,
  REQUEST_ID_HEADER,
  type RequestHeaderFacts,
  upstreamRequestHeaders,
} from "../../sidecar/proxy/headers.js";

// RFC 9110 7.6.1's connection-level headers, and the ones HTTP/1.1 proxies have always dropped.
const HOP_BY_HOP = [
  "Connection",
  "Keep-Alive",
  "Proxy-Connection",
  "Proxy-Authenticate",
  "Proxy-Authorization",
  "TE",
  "Trailer",
  "Transfer-Encoding",
  "Upgrade",
];

/** Every case a peer might send a name in. */
function spellings(name: string): string[] {
  const mixed = [...name].map((c, i) => (i % 2 === 0 ? c.toUpperCase() : c.toLowerCase())).join("");
  return [name, name.toLowerCase(), name.toUpperCase(), mixed];
}

function names(headers: readonly (string | Buffer)[]): string[] {
  return headers.filter((_, i) => i % 2 === 0).map(String);
}

const requestFacts = (): RequestHeaderFacts => ({ hasBody: false, contentLength: -1 });
const PASS = { dropContentLength: false, identityEncoding: false };

describe("header edges", () => {
  it("drops each hop-by-hop header, in any case, from requests and from responses", () => {
    for (const hop of HOP_BY_HOP) {
      for (const name of spellings(hop)) {
        const raw = ["X-Before", "1", name, "close", "X-After", "2"];
        const up = upstreamRequestHeaders(raw, PASS, requestFacts());
        expect(names(up), `request ${name}`).toEqual(["X-Before", "X-After"]);
        const down = clientResponseHead(raw, "req_1", false).headers;
        expect(names(down), `response ${name}`).toEqual(["X-Before", "X-After", REQUEST_ID_HEADER]);
      }
    }
  });

  it("keeps end-to-end headers whose names look like hop-by-hop ones (same length, a prefix, a suffix)", () => {
    const lookalikes = [
      "tf",
      "teX",
      "Connectioo",
      "keep_alive",
      "Upgrader",
      "trailers",
      "x-transfer-encoding",
      "Proxy-Authorizatiom",
      "Authorization",
      "Content-Lengthy",
    ];
    for (const name of lookalikes) {
      const raw = [name, "v"];
      expect(names(upstreamRequestHeaders(raw, PASS, requestFacts())), name).toEqual([name]);
      expect(names(clientResponseHead(raw, "req_1", false).headers), name).toEqual([name, REQUEST_ID_HEADER]);
    }
  });

  it("removes the headers a Connection header names, and passes a plain keep-alive or close without tokens", () => {
    for (const value of ["keep-alive", "Keep-Alive", "close", "CLOSE"]) {
      const raw = ["Connection", value, "X-Keep", "1"];
      expect(names(upstreamRequestHeaders(raw, PASS, requestFacts())), value).toEqual(["X-Keep"]);
    }
    const raw = ["connection", "Keep-Alive, X-Hop ,x-other", "X-Hop", "1", "X-OTHER", "2", "X-Keep", "3"];
    expect(names(upstreamRequestHeaders(raw, PASS, requestFacts()))).toEqual(["X-Keep"]);
    expect(names(clientResponseHead(raw, "req_1", false).headers)).toEqual(["X-Keep", REQUEST_ID_HEADER]);
  });

  it("reads the request's body facts and drops host and expect, in any case", () => {
    const facts = requestFacts();
    const up = upstreamRequestHeaders(
      ["HOST", "a", "Expect", "100-continue", "CONTENT-LENGTH", "12", "Accept-Encoding", "gzip"],
      { dropContentLength: false, identityEncoding: true },
      facts,
    );
    expect(up).toEqual(["CONTENT-LENGTH", "12", "accept-encoding", "identity"]);
    expect(facts).toEqual({ hasBody: true, contentLength: 12 });
    const chunked = requestFacts();
    expect(upstreamRequestHeaders(["transfer-ENCODING", "chunked"], PASS, chunked)).toEqual([]);
    expect(chunked.hasBody).toBe(true);
    expect(chunked.contentLength).toBeNaN();
  });

  it("reads the response's content type and encoding in any case, and replaces an upstream request id", () => {
    const head = clientResponseHead(
      [
        "CONTENT-TYPE",
        "Text/Event-Stream",
        "Content-Encoding",
        " GZip ",
        "X-AIGW-Request-Id",
        "req_up",
        "Content-Length",
        "5",
      ],
      "req_here",
      true,
    );
    expect(head.contentType).toBe("text/event-stream");
    expect(head.contentEncoding).toBe("gzip");
    expect(head.headers).toEqual([
      "CONTENT-TYPE",
      "Text/Event-Stream",
      "Content-Encoding",
      " GZip ",
      REQUEST_ID_HEADER,
      "req_here",
    ]);
  });
});

/** What the parsers checked line by line before the one-pass check: a token name before the first colon, a value without controls. */
function eachLineValid(text: string, from: number): boolean {
  let eol = from;
  while (eol < text.length) {
    const start = eol + 2;
    eol = text.indexOf("\r\n", start);
    if (eol === -1) eol = text.length;
    const colon = text.indexOf(":", start);
    if (colon <= start || colon >= eol) return false;
    if (!HEADER_TOKEN.test(text.slice(start, colon))) return false;
    if (HEADER_CONTROL.test(text.slice(colon + 1, eol))) return false;
  }
  return true;
}

describe("headerLinesValid: every header line of a head in one pass", () => {
  const START = "HTTP/1.1 200 OK";

  it("takes what the per-line checks take", () => {
    for (const lines of [
      [],
      ["content-type: application/json"],
      ["Content-Length:12", "X-Empty:", "x-tab:\tvalue\t", "x-colon: a:b:c", "x-latin1: caf\u00e9 \u00ff"],
      ["!#$%&'*+-.^_`|~09AZaz: token characters, all of them"],
    ]) {
      const text = [START, ...lines].join("\r\n");
      expect(headerLinesValid(text, START.length), JSON.stringify(lines)).toBe(true);
      expect(eachLineValid(text, START.length)).toBe(true);
    }
  });

  it("refuses what the per-line checks refuse: bad names, controls, bare CR or LF, lines without a colon", () => {
    for (const lines of [
      ["no colon here"],
      [": no name"],
      ["bad name: x"],
      ["bad(name): x"],
      ["x-nul: a\u0000b"],
      ["x-bare-lf: a\nb"],
      ["x-bare-cr: a\rb"],
      ["x-del: a\u007fb"],
      ["x-esc: \u001b[31m"],
      ["good: one", ""],
      ["good: one", "bad\u0001: two"],
      ["x-unicode-name\u00e9: x"],
    ]) {
      const text = [START, ...lines].join("\r\n");
      expect(eachLineValid(text, START.length), JSON.stringify(lines)).toBe(false);
      expect(headerLinesValid(text, START.length), JSON.stringify(lines)).toBe(false);
    }
  });

  it("agrees with the per-line checks on any head", () => {
    const char = fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(..."abcXYZ09-_:; \t.,!~") },
      { weight: 1, arbitrary: fc.constantFrom("\r", "\n", "\r\n", "\u0000", "\u007f", "\u0085", "\u00e9", "(", "@") },
    );
    const line = fc.array(char, { maxLength: 24 }).map((chars) => chars.join(""));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 6 }), (lines) => {
        const text = [START, ...lines].join("\r\n");
        expect(headerLinesValid(text, START.length)).toBe(eachLineValid(text, START.length));
      }),
      { numRuns: 2_000 },
    );
  });

  it("starts where it is told, so the start line is not read as a header", () => {
    const text = "GET / HTTP/1.1\r\nhost: a";
    expect(headerLinesValid(text, text.indexOf("\r\n"))).toBe(true);
    expect(headerLinesValid(text, 0)).toBe(false);
    // A head that is only its start line has no header lines to refuse.
    expect(headerLinesValid(START, START.length)).toBe(true);
  });
});
