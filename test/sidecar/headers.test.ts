import { describe, expect, it } from "vitest";
import {
  clientResponseHead,
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
