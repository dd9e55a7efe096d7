// The benchmark's provider: a fixed-JSON chat completion (shared/anchor-proxy/upstream.mjs),
// and, for requests with `"stream":true`, an event stream of CHUNKS chunks CHUNK_MS apart.
// Usage: node upstream.mjs PORT [CHUNKS] [CHUNK_MS]
import http from "node:http";
const [port, chunks = "20", chunkMs = "5"] = process.argv.slice(2);
const body = JSON.stringify({
  id: "chatcmpl-x",
  object: "chat.completion",
  created: 1,
  model: "gpt-4",
  choices: [{ index: 0, message: { role: "assistant", content: "hello world" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 },
});
const chunk = (i) =>
  `data: ${JSON.stringify({ id: "chatcmpl-s", object: "chat.completion.chunk", created: 1, model: "gpt-4", choices: [{ index: 0, delta: { content: `t${i} ` }, finish_reason: null }] })}\n\n`;
const usage = `data: ${JSON.stringify({ id: "chatcmpl-s", object: "chat.completion.chunk", created: 1, model: "gpt-4", choices: [], usage: { prompt_tokens: 11, completion_tokens: Number(chunks), total_tokens: 11 + Number(chunks) } })}\n\ndata: [DONE]\n\n`;
http
  .createServer((req, res) => {
    const parts = [];
    req.on("data", (c) => parts.push(c));
    req.on("end", () => {
      if (!Buffer.concat(parts).includes('"stream":true')) {
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      let i = 0;
      const next = () => {
        if (res.destroyed) return;
        if (i === Number(chunks)) return res.end(usage);
        res.write(chunk(i++));
        setTimeout(next, Number(chunkMs));
      };
      next();
    });
  })
  .listen(Number(port), "127.0.0.1", () => process.stdout.write("ready\n"));
