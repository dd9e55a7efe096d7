import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { LoopDelayMonitor } from "../../common/loop-delay.js";
import { type MetricFamily, renderMetrics, single } from "../../common/prometheus.js";
import type { ProxyMetrics } from "../proxy/proxy-metrics.js";
import type { Uplink } from "../uplink/uplink.js";

/** A spool this full (of its --spool bound) no longer counts as "room" for readiness. */
const SPOOL_FULL_SHARE = 0.9;

export interface Readiness {
  ready: boolean;
  /** Why, in words, for the probe's log and for people. */
  reason: string;
}

/**
 * Ready when the proxy has upstreams (it cannot start without) and its events have somewhere
 * to go: a connected control plane, or a spool with room that is being written.
 */
export function sidecarReadiness(uplink: Uplink): Readiness {
  const stats = uplink.stats();
  if (stats.connected) return { ready: true, reason: `connected to control plane ${stats.target}` };
  if (stats.spoolMaxBytes > 0 && stats.spoolUsedBytes >= stats.spoolMaxBytes * SPOOL_FULL_SHARE) {
    return {
      ready: false,
      reason: `no control plane connected and the spool is full (${stats.spoolUsedBytes} of ${stats.spoolMaxBytes} bytes)`,
    };
  }
  if (uplink.spoolFailing()) {
    return { ready: false, reason: "no control plane connected and the spool cannot be written (see the log)" };
  }
  return { ready: true, reason: "no control plane connected; events wait in the spool, which has room" };
}

export interface AdminServerOptions {
  host: string;
  port: number;
  uplink: Uplink;
  proxy: ProxyMetrics;
}

export interface RunningAdminServer {
  /** http://host:port */
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * The sidecar's own HTTP port (--admin-listen, default 127.0.0.1:8081): /healthz (the process
 * serves), /readyz (see sidecarReadiness) and /metrics (Prometheus text). Kept apart from the
 * proxy's port so that no provider path is ever shadowed.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<RunningAdminServer> {
  const delay = new LoopDelayMonitor(20);
  delay.enable();
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("only GET\n");
      return;
    }
    switch (path) {
      case "/healthz":
        res.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" }).end("ok\n");
        return;
      case "/readyz": {
        const readiness = sidecarReadiness(options.uplink);
        res
          .writeHead(readiness.ready ? 200 : 503, { "content-type": "text/plain", "cache-control": "no-store" })
          .end(`${readiness.ready ? "ready" : "not ready"}: ${readiness.reason}\n`);
        return;
      }
      case "/metrics":
        res
          .writeHead(200, { "content-type": "text/plain; version=0.0.4", "cache-control": "no-store" })
          .end(
            renderMetrics([...options.proxy.families(), ...uplinkFamilies(options.uplink), ...processFamilies(delay)]),
          );
        return;
      default:
        res
          .writeHead(404, { "content-type": "text/plain" })
          .end(`no such path ${path}: this is the sidecar's admin port (/healthz, /readyz, /metrics)\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) =>
      reject(new Error(`sidecar admin: cannot listen on ${options.host}:${options.port}: ${err.message}`));
    server.once("error", onError);
    server.listen(options.port, options.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = options.host.includes(":") ? `[${options.host}]` : options.host;
  return {
    url: `http://${shownHost}:${port}`,
    port,
    async close() {
      delay.disable();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

function uplinkFamilies(uplink: Uplink): MetricFamily[] {
  const s = uplink.stats();
  return [
    single(
      "aigw_sidecar_uplink_connected",
      "1 while a stream to a control plane is open.",
      "gauge",
      s.connected ? 1 : 0,
    ),
    single(
      "aigw_sidecar_events_queued",
      "Events waiting for the control plane's ack (in memory or spooled).",
      "gauge",
      s.queuedEvents,
    ),
    single(
      "aigw_sidecar_events_spooled",
      "Of the queued events, those whose batch is on disk.",
      "gauge",
      s.spooledEvents,
    ),
    single("aigw_sidecar_events_sent_total", "Events acked by the control plane.", "counter", s.sentEvents),
    single(
      "aigw_sidecar_events_dropped_total",
      "Events dropped (spool full, or published after close).",
      "counter",
      s.dropped,
    ),
    single(
      "aigw_sidecar_batches_sent_total",
      "Batches written to the control plane stream, re-sends included.",
      "counter",
      s.sentBatches,
    ),
    single("aigw_sidecar_spool_bytes", "Bytes of spool segment files on disk.", "gauge", s.spooledBytes),
    single("aigw_sidecar_spool_memory_bytes", "Bytes of unacked batches held in memory.", "gauge", s.memoryBytes),
    single(
      "aigw_sidecar_spool_limit_bytes",
      "The spool's bound on unacked batches (memory and disk).",
      "gauge",
      s.spoolMaxBytes,
    ),
    single(
      "aigw_sidecar_spool_writes_total",
      "Spool disk writes (one append and one fdatasync each: while acks are late, one per 50 ms).",
      "counter",
      s.spoolWrites,
    ),
    single(
      "aigw_sidecar_spool_write_failures_total",
      "Spool writes that failed (disk full, I/O error).",
      "counter",
      s.spoolWriteFailures,
    ),
    single("aigw_sidecar_uplink_connects_total", "Streams opened to control planes.", "counter", s.connectAttempts),
  ];
}

function processFamilies(delay: LoopDelayMonitor): MetricFamily[] {
  const memory = process.memoryUsage();
  const late = delay.read();
  const families = [
    single("process_resident_memory_bytes", "Resident set size.", "gauge", memory.rss),
    single("nodejs_heap_used_bytes", "V8 heap in use.", "gauge", memory.heapUsed),
    single("nodejs_heap_size_total_bytes", "V8 heap reserved (in use and free).", "gauge", memory.heapTotal),
    single(
      "nodejs_external_memory_bytes",
      "Memory V8 objects hold outside the heap (buffers, HTTP/2 sessions).",
      "gauge",
      memory.external,
    ),
    single(
      "nodejs_eventloop_delay_p99_seconds",
      "99th percentile of event-loop delay since the last scrape (20 ms sampling).",
      "gauge",
      late.p99 / 1000,
    ),
    single(
      "nodejs_eventloop_delay_max_seconds",
      "Largest event-loop delay since the last scrape.",
      "gauge",
      late.max / 1000,
    ),
  ];
  delay.reset();
  return families;
}
