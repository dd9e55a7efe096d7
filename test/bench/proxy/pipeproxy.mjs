// A 30-line Node pipe proxy (shared/anchor-proxy/pipeproxy.mjs): the floor any Node proxy should beat.
// Usage: node pipeproxy.mjs PORT UPSTREAM_PORT
import http from "node:http";
const [port, upstreamPort] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
http
  .createServer((req, res) => {
    const up = http.request(
      { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent },
      (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      },
    );
    req.pipe(up);
  })
  .listen(port, "127.0.0.1", () => process.stdout.write("ready\n"));
