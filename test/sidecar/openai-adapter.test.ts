import { describe, expect, it } from "vitest";
import {
  askForStreamUsage,
  JsonBodyObserver,
  OpenAiStreamObserver,
  openAiAdapter,
  UsageChunkFilter,
  usageFrom,
} from "../../sidecar/providers/openai.js";

const chunk = (choices: string, usage = ',"usage":null') =>
  `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":${choices}${usage}}\n\n`;

describe("OpenAI adapter", () => {
  it("observes the four API paths, POST only", () => {
    for (const path of ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]) {
      expect(openAiAdapter.observes("POST", path)).toBe(true);
    }
    expect(openAiAdapter.observes("GET", "/v1/chat/completions")).toBe(false);
    expect(openAiAdapter.observes("POST", "/v1/files")).toBe(false);
  });

  it("asks for stream usage only for chat streams that did not ask, keeping the other bytes", () => {
    const body = Buffer.from(' {"model":"m","stream":true,"seed":12345678901234567890,"temperature":1.0}');
    const rewrite = askForStreamUsage(body)!;
    expect(rewrite.body.toString()).toBe(
      ' {"stream_options":{"include_usage":true},"model":"m","stream":true,"seed":12345678901234567890,"temperature":1.0}',
    );
    expect(rewrite.identityEncoding).toBe(true);
    expect(askForStreamUsage(Buffer.from('{"stream":false}'))).toBeUndefined();
    expect(askForStreamUsage(Buffer.from('{"stream":true,"stream_options":{"include_usage":true}}'))).toBeUndefined();
    expect(askForStreamUsage(Buffer.from("{not json"))).toBeUndefined();
    const merged = askForStreamUsage(Buffer.from('{"stream":true,"stream_options":{"include_obfuscation":false}}'))!;
    expect(JSON.parse(merged.body.toString())).toEqual({
      stream: true,
      stream_options: { include_obfuscation: false, include_usage: true },
    });
    expect(openAiAdapter.rewriteRequest("/v1/completions", Buffer.from('{"stream":true}'))).toBeUndefined();
  });

  it("strips the usage-only chunk and the added null usage, wherever the stream splits", () => {
    const upstream =
      chunk('[{"index":0,"delta":{"content":"Hi"}}]') +
      chunk('[{"index":0,"delta":{},"finish_reason":"stop"}]') +
      chunk("[]", ',"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}') +
      "data: [DONE]\n\n";
    const expected =
      chunk('[{"index":0,"delta":{"content":"Hi"}}]', "") +
      chunk('[{"index":0,"delta":{},"finish_reason":"stop"}]', "") +
      "data: [DONE]\n\n";
    const bytes = Buffer.from(upstream);
    for (let i = 0; i <= bytes.length; i++) {
      const filter = new UsageChunkFilter();
      const out = [filter.transform(bytes.subarray(0, i)), filter.transform(bytes.subarray(i)), filter.flush()];
      expect(Buffer.concat(out.filter((b) => b !== undefined)).toString(), `split at ${i}`).toBe(expected);
    }
  });

  it("leaves a nested null usage alone", () => {
    const nested = 'data: {"choices":[{"x":{"a":1,"usage":null}}],"k":1}\n\n';
    const filter = new UsageChunkFilter();
    expect(filter.transform(Buffer.from(nested))?.toString()).toBe(nested);
  });

  it("reads usage, model and stream errors from event streams", () => {
    const observer = new OpenAiStreamObserver();
    observer.push(Buffer.from(chunk('[{"index":0,"delta":{"content":"Hi"}}]')));
    observer.push(Buffer.from("data: {broken json\n\n"));
    observer.push(Buffer.from(chunk("[]", ',"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}')));
    expect(observer.finish()).toEqual({
      model: "gpt-4o",
      usage: { promptTokens: 4, completionTokens: 6, totalTokens: 10 },
      contentDeltas: 1,
    });

    const responses = new OpenAiStreamObserver();
    responses.push(
      Buffer.from(
        'event: response.created\ndata: {"type":"response.created","response":{"model":"gpt-4.1","usage":null}}\n\n',
      ),
    );
    responses.push(
      Buffer.from(
        'event: response.completed\ndata: {"type":"response.completed","response":{"model":"gpt-4.1","usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}}\n\n',
      ),
    );
    expect(responses.finish()).toEqual({
      model: "gpt-4.1",
      usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 },
    });

    const failing = new OpenAiStreamObserver();
    failing.push(Buffer.from('data: {"error":{"message":"overloaded"}}\n\n'));
    expect(failing.finish().errorMessage).toBe("overloaded");
  });

  it("reads JSON bodies, error bodies, garbage, and usage at the tail of oversized bodies", () => {
    const ok = new JsonBodyObserver();
    ok.push(Buffer.from('{"model":"gpt-4o","usage":{"prompt_tokens":1,'));
    ok.push(Buffer.from('"completion_tokens":2,"total_tokens":3}}'));
    expect(ok.finish()).toEqual({ model: "gpt-4o", usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 } });

    const error = new JsonBodyObserver();
    error.push(Buffer.from('{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}'));
    expect(error.finish()).toEqual({ errorMessage: "Rate limit reached" });

    const garbage = new JsonBodyObserver();
    garbage.push(Buffer.from("<html>502 Bad Gateway</html>"));
    expect(garbage.finish()).toEqual({});

    const big = new JsonBodyObserver(1024);
    big.push(Buffer.from('{"object":"list","model":"text-embedding-3-small","data":['));
    for (let i = 0; i < 100; i++) big.push(Buffer.from('{"embedding":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]},'));
    big.push(Buffer.from('{}],"usage":{"prompt_tokens":99,"total_tokens":99}}'));
    expect(big.finish()).toEqual({
      model: "text-embedding-3-small",
      usage: { promptTokens: 99, completionTokens: 0, totalTokens: 99 },
    });
  });

  it("reads usage in both naming schemes and ignores nonsense counts", () => {
    expect(usageFrom({ input_tokens: 5, output_tokens: 7 })).toEqual({
      promptTokens: 5,
      completionTokens: 7,
      totalTokens: 12,
    });
    expect(usageFrom({ prompt_tokens: -1, completion_tokens: "x" })).toBeUndefined();
    expect(usageFrom(null)).toBeUndefined();
  });
});
