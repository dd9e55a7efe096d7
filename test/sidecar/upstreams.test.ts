import { afterEach, describe, expect, it } from "vitest";
import { UpstreamTable } from "../../sidecar/proxy/upstreams.js";

// Routing keeps the request path and picks the upstream by it (DESIGN.md "CLI").
describe("UpstreamTable", () => {
  let table: UpstreamTable | undefined;
  afterEach(async () => {
    await table?.close();
    table = undefined;
  });

  it("sends /v1/messages and the paths below it to anthropic, everything else to openai", () => {
    table = new UpstreamTable(
      { openai: "https://api.openai.com", anthropic: "https://api.anthropic.com" },
      { timeoutMs: 1000 },
    );
    expect(table.route("/v1/messages").name).toBe("anthropic");
    expect(table.route("/v1/messages/count_tokens").name).toBe("anthropic");
    expect(table.route("/v1/messages/batches/msgbatch_1").name).toBe("anthropic");
    expect(table.route("/v1/messagesx").name).toBe("openai");
    expect(table.route("/v1/chat/completions").name).toBe("openai");
  });

  it("sends every path to a single upstream, and keeps its path prefix", () => {
    table = new UpstreamTable({ groq: "https://api.groq.com/openai" }, { timeoutMs: 1000 });
    const u = table.route("/v1/messages");
    expect(u.name).toBe("groq");
    expect(u.pathPrefix).toBe("/openai");
  });

  it("refuses bad upstreams with a message naming them", () => {
    expect(() => new UpstreamTable({}, { timeoutMs: 1000 })).toThrow(/at least one upstream/);
    expect(() => new UpstreamTable({ openai: "ftp://x" }, { timeoutMs: 1000 })).toThrow(/upstreams\.openai/);
    expect(() => new UpstreamTable({ a: "https://a.example", b: "https://b.example" }, { timeoutMs: 1000 })).toThrow(
      /must be named "openai"/,
    );
  });
});
