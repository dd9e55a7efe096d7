import http from "node:http";
import { hostname } from "node:os";
import http2 from "node:http2";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AdminService } from "../gen/aigw/v1/admin_pb.js";
import type { Event } from "../gen/aigw/v1/events_pb.js";
import { FeedService } from "../gen/aigw/v1/feed_pb.js";
import { IngestService } from "../gen/aigw/v1/ingest_pb.js";
import { AigwError } from "../common/errors.js";
import { eventTypeFromName } from "../common/event-types.js";
import { ulid } from "../common/ids.js";
import { createLogger, type Logger } from "../common/logger.js";
import { VERSION } from "../common/version.js";
import { AdminServiceImpl } from "./admin/admin-service.js";
import { BudgetAdminRpcs } from "./budgets/admin-rpcs.js";
import { Budgets } from "./budgets/budgets.js";
import { loadConfigFile } from "./config/load.js";
import { ConfigError, type ConfigProblem, type GatewayConfig } from "./config/types.js";
import { DeliveryScheduler } from "./delivery/scheduler.js";
import { EventBus } from "./feed/event-bus.js";
import { FeedServiceImpl } from "./feed/feed-service.js";
import { authInterceptor, HttpPageAuth, isLoopbackHost } from "./http/auth.js";
import { TokenRegistry } from "./auth/token-registry.js";
import { dashboardHtml, dashboardLoginHtml } from "./http/dashboard.js";
import { closeHttp, type HostPort, listen, parseHostPort, trackSessions, urlOf } from "./http/listen.js";
import { grpcMessagesAsSpecified } from "./http/grpc-message.js";
import { histogram, renderMetrics, single } from "./http/metrics.js";
import { TrafficMetrics } from "./http/labelled-metrics.js";
import { Watchdog } from "./http/watchdog.js";
import { HeldDeliveries, IngestBackpressure } from "./ingest/backpressure.js";
import { IngestServiceImpl } from "./ingest/ingest-service.js";
import { IngestPipeline, newIngestMetrics } from "./ingest/pipeline.js";
import { SnapshotPublisher } from "./ingest/snapshots.js";
import { FeedTail } from "./cluster/feed-tail.js";
import { SidecarPresenceTracker } from "./cluster/presence.js";
import { EventRouter } from "./routing/event-router.js";
import { GatewayLimitShares } from "./ingest/gateway-limits.js";
import { filtersFromConfig } from "./routing/filters.js";
import { newOneOffMetrics, OneOffEndpoints } from "./routing/one-off.js";
import { RuntimeSubscription } from "./routing/subscription.js";
import { warnIfKeyBesideDatabase, warnRefusedEndpoints } from "./security/startup-warnings.js";
import { RetentionPurger, type RetentionOptions } from "./retention/retention.js";
import { openStore } from "./store/open.js";
import { qualifiedKey } from "./store/endpoints.js";
import { compactionTarget } from "./store/rollups.js";
import type { IngestResult, Store } from "./store/store.js";

export interface ControlPlaneOptions {
  /** A config file (webhook_config.yaml); or pass `config`. */
  configPath?: string;
  config?: GatewayConfig;
  /** Overrides storage.url: "sqlite:PATH" or "postgres://…". */
  store?: string;
  /** gRPC + Connect over h2c; default 127.0.0.1:7070 (port 0: any free port). */
  grpc?: string;
  /** HTTP/1.1: dashboard, /metrics, /healthz, /readyz, Admin API as Connect JSON and gRPC-Web; default 127.0.0.1:7080. */
  http?: string;
  env?: Record<string, string | undefined>;
  logger?: Logger;
  /** The clock of budget periods and budget events (tests move it); default Date.now. */
  now?: () => number;
  /** How long close() waits for webhook requests in flight before handing them back; default 10 s. */
  drainTimeoutMs?: number;
  /** Retention's timing (tests): first run, interval, step budget. */
  retention?: Pick<RetentionOptions, "firstRunMs" | "everyMs" | "stepBudgetMs">;
}

export interface RunningControlPlane {
  /** http://HOST:PORT of the h2c listener (gRPC, Connect). */
  grpcUrl: string;
  grpcAddress: string;
  /** http://HOST:PORT of the HTTP/1.1 listener. */
  httpUrl: string;
  store: Store;
  scheduler: DeliveryScheduler;
  retention: RetentionPurger;
  /** Stores events and creates their deliveries (the ingest path, for tests and tools). */
  deliverEvents(events: Event[], endpoints?: string[]): Promise<IngestResult>;
  close(): Promise<void>;
}

/**
 * The largest request message accepted (RESOURCE_EXHAUSTED beyond): a sidecar's batch is at
 * most 64 MiB (its spool refuses larger records, sidecar/uplink/segment-format.ts), plus the
 * ConnectRequest around it. Without a bound, a frame header claiming 4 GiB was taken at its
 * word and that much memory set aside for it before a byte of it arrived.
 */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 64 * 1024;

/** How often the analytics rollups' 10 s rows are summed into the coarser ones. */
const COMPACTION_EVERY_MS = 30_000;

/** Starts the control plane; resolves when both listeners accept connections. */
export async function runControlPlane(options: ControlPlaneOptions): Promise<RunningControlPlane> {
  const env = options.env ?? process.env;
  const logger = options.logger ?? createLogger({ name: "control-plane" });
  const config = options.config ?? (options.configPath ? loadConfigFile(options.configPath, env) : undefined);
  if (!config) throw new Error("control-plane: a config is required (--config FILE)");
  const grpcAt = parseHostPort(options.grpc ?? "127.0.0.1:7070", "--grpc");
  const httpAt = parseHostPort(options.http ?? "127.0.0.1:7080", "--http");
  refuseOpenListeners(config, [grpcAt, httpAt]);
  // The key may come from the environment instead of the file (a mounted secret, a
  // container's env): every replica on PostgreSQL needs the same one.
  const storage = { ...config.storage, encryptionKey: config.storage.encryptionKey || env.AIGW_ENCRYPTION_KEY || "" };
  warnIfKeyBesideDatabase(logger, storage, options.store ?? storage.url, [grpcAt, httpAt]);

  const store = await openStore(options.store ?? storage.url, {
    ...(storage.encryptionKey ? { encryptionKey: storage.encryptionKey } : {}),
    logger,
  });
  try {
    await applyConfigEndpoints(store, config, options.configPath ?? "config");
  } catch (err) {
    await store.close();
    throw err;
  }

  // This process among those sharing the store: its leases, its sidecars.
  const processId = `${hostname()}/${process.pid}/${ulid().slice(-8)}`;
  // The global subscription: the config file's at start, changed at runtime by the Admin API
  // (kept in the store for every replica).
  const subscription = new RuntimeSubscription(config.events, () => refreshRouting(), store);
  await subscription.load();
  const stored = await store.listEndpoints();
  warnRefusedEndpoints(logger, config.security, stored);
  const router = new EventRouter(subscription.get(), stored);
  // With replicas the live feed is read back from the store (every replica's events, in order),
  // while anyone watches.
  let feedTail: FeedTail | undefined;
  const bus = new EventBus((active) => feedTail?.setActive(active));
  if (store.shared) feedTail = new FeedTail(store, bus, logger.child({ component: "feed" }));
  const traffic = new TrafficMetrics();
  // Operator events (endpoint.disabled, endpoint.recovered, delivery.exhausted) are made by
  // the store and routed like any event: events.subscribe and each endpoint's event types.
  store.routeOperatorEvents((event) => router.route(event));
  const scheduler = new DeliveryScheduler({
    store,
    traffic,
    config,
    logger: logger.child({ component: "delivery" }),
    leaseOwner: processId,
    ...(options.drainTimeoutMs !== undefined ? { stopTimeoutMs: options.drainTimeoutMs } : {}),
    // With replicas the feed reads them back from the store, like every event.
    onOperatorEvents: (effects) => {
      if (!feedTail) bus.publish(effects.generated);
    },
    onEndpointDisabled: () => {
      held.invalidate();
      refreshRouting().catch((err: unknown) => logger.error({ err }, "refreshing routing failed"));
    },
  });
  const ingestMetrics = newIngestMetrics();
  const retention = new RetentionPurger({
    store,
    retentionHours: config.delivery.retentionHours,
    logger: logger.child({ component: "retention" }),
    ...(options.retention ?? {}),
  });
  // Paused and disabled endpoints' pending deliveries are held, not moving: they do not
  // count toward delivery.queue_size, so one paused endpoint's backlog never stops ingest.
  const held = new HeldDeliveries(() => store.countHeld());
  const backpressure = new IngestBackpressure({
    queueSize: config.delivery.queueSize,
    countPending: async () => {
      const [pending, heldNow] = await Promise.all([store.countPending(), held.get()]);
      return Math.max(0, pending - heldNow);
    },
    logger: logger.child({ component: "ingest" }),
  });
  const watchdog = new Watchdog({
    logger: logger.child({ component: "watchdog" }),
    activity: () => ({ delivery: scheduler.activity(), sidecars: ingestMetrics.connectedSidecars }),
  });

  // Snapshot versions come from the store: every replica hands out newer ones than any before.
  const nextVersion = () => store.nextConfigVersion(Date.now());
  const snapshots = new SnapshotPublisher(
    {
      wantedEventTypes: router.wantedEventTypes(),
      streamingCoalesceMs: config.events.streaming.coalesceMs,
      rateLimitWarningShare: config.events.rateLimit.warningShare,
    },
    await nextVersion(),
    nextVersion,
  );
  // Budgets: config budgets upserted, runtime prices loaded, enforcement state published.
  let budgets: Budgets;
  try {
    budgets = await Budgets.start({
      store,
      config,
      logger: logger.child({ component: "budgets" }),
      ...(options.now ? { now: options.now } : {}),
      publish: (states) => snapshots.update({ budgets: states }),
      // Other replicas add spend too: the enforcement state is read again more often.
      ...(store.shared ? { refreshEveryMs: 5_000 } : {}),
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  // Who tokens are: the file's (operator and org) and those made at runtime, read again
  // every half second so a revocation on any replica ends streams within a second.
  const tokens = new TokenRegistry({
    operatorAdminTokens: config.auth.adminTokens,
    operatorSidecarTokens: config.auth.sidecarTokens,
    orgTokens: config.auth.orgs,
    store,
    logger: logger.child({ component: "auth" }),
  });
  try {
    await tokens.start();
  } catch (err) {
    budgets.close();
    await store.close();
    throw err;
  }
  if (!tokens.required("admin") && Object.keys(config.auth.orgs).length > 0) {
    logger.warn(
      "auth.orgs has org tokens but auth.admin_tokens is empty: requests without a token act as the operator (loopback only); set auth.admin_tokens to make org tokens a boundary",
    );
  }
  const refreshRouting = async (): Promise<void> => {
    router.update(subscription.get(), await store.listEndpoints());
    snapshots.update({ wantedEventTypes: router.wantedEventTypes() });
  };
  // Gateway limits: each sidecar's snapshot carries its share of its org's (and app's) limits,
  // divided among the sidecars connected to every replica.
  const limitShares = new GatewayLimitShares(config.limits, () => snapshots.bump());
  snapshots.personalize((hello) => ({ limits: limitShares.limitsFor(hello) }));
  const presence = new SidecarPresenceTracker(
    store,
    processId,
    (sidecars) => limitShares.setSidecars(sidecars),
    logger.child({ component: "presence" }),
  );
  // One-off endpoints (x-aigw-webhook-url), signed with their org's key.
  const oneOffMetrics = newOneOffMetrics();
  const oneOff = new OneOffEndpoints({
    store,
    security: () => config.security,
    logger: logger.child({ component: "one-off" }),
    metrics: oneOffMetrics,
  });

  const pipeline = new IngestPipeline({
    store,
    prices: budgets.prices,
    ledger: budgets.ledger,
    router,
    oneOff,
    publish: feedTail ? undefined : (events) => bus.publish(events),
    wake: (endpoints) => scheduler.notify(endpoints),
    metrics: ingestMetrics,
    traffic,
    logger: logger.child({ component: "ingest" }),
  });
  // Events sent to given endpoints are test events: priced, but no one's spend.
  const deliverEvents = (events: Event[], endpoints?: string[]): Promise<IngestResult> =>
    endpoints ? pipeline.ingestTo(events, endpoints) : pipeline.ingest(events);

  const routes = (r: ConnectRouter): void => {
    r.service(
      IngestService,
      new IngestServiceImpl({
        ingest: (events, source) => pipeline.ingest(events, source),
        tokens,
        snapshot: (hello) => snapshots.snapshotFor(hello),
        presence,
        backpressure,
        onSnapshot: (l) => snapshots.subscribe(l),
        logger: logger.child({ component: "ingest" }),
        metrics: ingestMetrics,
      }),
    );
    r.service(
      AdminService,
      new AdminServiceImpl({
        store,
        config: () => config,
        deliverEvents,
        notifyDeliveries: (endpoints) => scheduler.notify(endpoints),
        isCircuitOpen: (name) => scheduler.isCircuitOpen(name),
        onEndpointsChanged: () => {
          held.invalidate();
          // Key rotations and endpoint changes apply to the next attempt, not after the scheduler's cache expires.
          scheduler.updateConfig(config);
          refreshRouting().catch((err: unknown) => logger.error({ err }, "refreshing routing failed"));
        },
        logger: logger.child({ component: "admin" }),
        budgets: new BudgetAdminRpcs(budgets),
        subscription,
        tokens,
      }),
    );
    r.service(FeedService, new FeedServiceImpl({ store, bus, tokens, logger: logger.child({ component: "feed" }) }));
  };
  const interceptors = [authInterceptor(tokens)];

  const metricsText = async (): Promise<string> => {
    const m = scheduler.metrics();
    const bp = backpressure.metrics();
    return renderMetrics([
      single("aigw_events_ingested_total", "Events stored.", "counter", ingestMetrics.eventsStored),
      single("aigw_events_duplicate_total", "Re-sent events skipped.", "counter", ingestMetrics.eventsDuplicate),
      single(
        "aigw_events_rejected_total",
        "Invalid events dropped at ingest.",
        "counter",
        ingestMetrics.eventsRejected,
      ),
      single("aigw_ingest_batches_total", "Batches received.", "counter", ingestMetrics.batches),
      single("aigw_sidecars_connected", "Sidecar streams open.", "gauge", ingestMetrics.connectedSidecars),
      single("aigw_feed_watchers", "Live feed watchers.", "gauge", bus.size),
      single("aigw_deliveries_pending", "Deliveries waiting for an attempt.", "gauge", await store.countPending()),
      single(
        "aigw_deliveries_held",
        "Pending deliveries of paused or disabled endpoints (not counted toward delivery.queue_size).",
        "gauge",
        await held.get(),
      ),
      single(
        "aigw_delivery_queue_size",
        "delivery.queue_size: ingest pauses when this many deliveries are pending.",
        "gauge",
        backpressure.queueSize,
      ),
      single(
        "aigw_ingest_paused",
        "1 while ingest holds sidecars' batches unacked because the delivery queue is full.",
        "gauge",
        bp.paused ? 1 : 0,
      ),
      single("aigw_ingest_pauses_total", "Times ingest paused for a full delivery queue.", "counter", bp.pauses),
      single(
        "aigw_ingest_paused_seconds_total",
        "Time ingest spent paused for a full delivery queue.",
        "counter",
        bp.pausedMs / 1000,
      ),
      single(
        "aigw_ingest_batches_waiting",
        "Sidecar batches waiting (unacked) for the delivery queue to drain.",
        "gauge",
        bp.waitingBatches,
      ),
      single("aigw_deliveries_in_flight", "Webhook requests in flight.", "gauge", m.inFlight),
      {
        name: "aigw_delivery_lanes",
        help: "Endpoints with pending work, by where their lane is: ready to claim, waiting for a time, parked at its cap.",
        type: "gauge",
        samples: [
          { labels: { state: "ready" }, value: m.lanes.ready },
          { labels: { state: "timed" }, value: m.lanes.timed },
          { labels: { state: "parked" }, value: m.lanes.parked },
        ],
      },
      single("aigw_delivery_claims_total", "Claim rounds (one store transaction each).", "counter", m.claims.rounds),
      single("aigw_delivery_claimed_total", "Deliveries claimed.", "counter", m.claims.rows),
      {
        name: "aigw_delivery_attempts_total",
        help: "Delivery attempts by outcome.",
        type: "counter",
        samples: Object.entries(m.attempts).map(([outcome, value]) => ({ labels: { outcome }, value })),
      },
      histogram("aigw_delivery_attempt_duration_ms", "Webhook request latency per attempt, in ms.", m.latency),
      {
        name: "aigw_endpoint_circuit_open",
        help: "1 while an endpoint's circuit is open or half-open.",
        type: "gauge",
        samples: m.openCircuits.map((endpoint) => ({ labels: { endpoint }, value: 1 })),
      },
      ...traffic.families(),
      ...budgets.metrics(),
      ...retention.metrics(),
      ...watchdog.metrics(),
      {
        name: "aigw_oneoff_events_total",
        help: "Events with x-aigw-webhook-url, by outcome (routed to the one-off endpoint, or refused).",
        type: "counter",
        samples: [
          { labels: { outcome: "routed" }, value: oneOffMetrics.routed },
          { labels: { outcome: "refused" }, value: oneOffMetrics.refused },
        ],
      },
      single(
        "aigw_org_signing_keys_generated_total",
        "Org signing keys generated for one-off endpoints (get a secret with aigw keys rotate --org).",
        "counter",
        oneOffMetrics.orgKeysGenerated,
      ),
    ]);
  };

  let ready = false;
  const pageAuth = new HttpPageAuth({ ...config.auth, required: !isLoopbackHost(httpAt.host), tokens });
  const fallback = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/healthz")
      return void res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    if (req.method === "GET" && path === "/readyz") {
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "starting\n");
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      if (!pageAuth.allowMetrics(req, res)) return;
      metricsText().then(
        (text) => res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(text),
        (err: unknown) => {
          logger.error({ err }, "metrics failed");
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (req.method === "GET" && (path === "/" || path === "/index.html")) {
      if (pageAuth.dashboardPrincipal(req, res, dashboardLoginHtml) === undefined) return;
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(dashboardHtml());
      return;
    }
    res
      .writeHead(404, { "content-type": "application/json" })
      .end(JSON.stringify({ code: "not_found", message: `no route for ${req.method} ${path}` }));
  };

  const grpcServer = http2.createServer(
    grpcMessagesAsSpecified(connectNodeAdapter({ routes, interceptors, readMaxBytes: MAX_MESSAGE_BYTES })),
  );
  const closeGrpc = trackSessions(grpcServer);
  // The fallback serves only the HTTP/1.1 listener, so its request is an http.IncomingMessage.
  const httpServer = http.createServer(
    connectNodeAdapter({
      routes,
      interceptors,
      readMaxBytes: MAX_MESSAGE_BYTES,
      fallback: (req, res) => fallback(req as http.IncomingMessage, res as unknown as http.ServerResponse),
    }),
  );
  let grpcBound: HostPort;
  let httpBound: HostPort;
  try {
    grpcBound = await listen(grpcServer, grpcAt);
    httpBound = await listen(httpServer, httpAt);
  } catch (err) {
    await Promise.allSettled([closeGrpc(), closeHttp(httpServer)]);
    budgets.close();
    tokens.stop();
    await store.close();
    throw new Error(`control-plane: cannot listen: ${(err as Error).message}`, { cause: err });
  }
  await scheduler.syncCircuits().catch((err: unknown) => logger.error({ err }, "reading circuit states failed"));
  scheduler.start();
  presence.start();
  // Analytics rollups: the 10 s rows summed into 5 min and 1 h rows, off the delivery path.
  const compaction = setInterval(() => {
    store
      .compactRollups(compactionTarget(Date.now()))
      .catch((err: unknown) => logger.error({ err }, "compacting analytics rollups failed; tried again later"));
  }, COMPACTION_EVERY_MS);
  compaction.unref();
  // What other replicas on the store do (PostgreSQL; a SQLite store has no one else).
  const failed = (what: string) => (err: unknown) => logger.error({ err }, `${what} failed`);
  const unwatch = store.watch({
    lanes: (endpoints) => scheduler.notify(endpoints === "all" ? undefined : endpoints),
    events: () => feedTail?.poke(),
    changed: (kinds) => {
      const has = (kind: string) => kinds === "all" || kinds.includes(kind);
      if (has("endpoints") || has("keys")) {
        held.invalidate();
        scheduler.updateConfig(config);
        refreshRouting().catch(failed("refreshing routing"));
      }
      if (has("settings")) {
        subscription
          .load()
          .then((changed) => (changed ? refreshRouting() : undefined))
          .catch(failed("reloading the subscription"));
      }
      if (has("budgets")) budgets.ledger.reload({ publish: true }).catch(failed("reloading budgets"));
      if (has("prices")) budgets.reloadPrices().catch(failed("reloading prices"));
      if (has("circuits")) scheduler.syncCircuits().catch(failed("reading circuit states"));
      if (has("presence")) presence.refresh();
    },
  });
  watchdog.start();
  ready = true;

  retention.start();
  const grpcUrl = urlOf(grpcBound);
  const httpUrl = urlOf(httpBound);
  logger.info({ grpc: grpcUrl, http: httpUrl, store: store.kind, version: VERSION }, "control plane ready");

  let closing: Promise<void> | undefined;
  return {
    grpcUrl,
    grpcAddress: grpcUrl.replace("http://", ""),
    httpUrl,
    store,
    scheduler,
    retention,
    deliverEvents,
    close: () => {
      closing ??= (async () => {
        logger.info("control plane stopping");
        ready = false;
        await retention.stop();
        backpressure.close();
        unwatch();
        presence.stop();
        clearInterval(compaction);
        feedTail?.stop();
        budgets.close();
        tokens.stop();
        bus.closeAll();
        await Promise.allSettled([closeGrpc(), closeHttp(httpServer)]);
        await scheduler.stop();
        await watchdog.stop();
        await store.close();
        logger.info("control plane stopped");
      })();
      return closing;
    },
  };
}

/** DESIGN.md "Security": no listening beyond loopback without tokens. */
function refuseOpenListeners(config: GatewayConfig, at: HostPort[]): void {
  const open = at.filter((a) => !isLoopbackHost(a.host));
  if (open.length === 0) return;
  const missing: string[] = [];
  if (config.auth.adminTokens.length === 0) missing.push("auth.admin_tokens");
  if (config.auth.sidecarTokens.length === 0) missing.push("auth.sidecar_tokens");
  if (missing.length > 0) {
    throw new AigwError(
      "AIGW_LISTEN_UNPROTECTED",
      `control-plane: refusing to listen on ${open.map((a) => `${a.host}:${a.port}`).join(", ")} (beyond loopback) without ${missing.join(" and ")} in the config`,
    );
  }
}

async function applyConfigEndpoints(store: Store, config: GatewayConfig, file: string): Promise<void> {
  // The file's names are the operator's, one namespace: each is its endpoint's key, unless
  // the org already has that endpoint under ORG/NAME, or another org made an endpoint of
  // that name with the Admin API (admin/endpoint-names.ts): an org's entry then is (or
  // becomes) ORG/NAME, and an operator entry is refused, since taking that endpoint over
  // would send every org's events to the other org's receiver.
  const keys = new Map<string, string>();
  const problems: ConfigProblem[] = [];
  for (const [name, ep] of Object.entries(config.webhooks)) {
    const qualified = ep.orgId !== "" ? await store.getEndpoint(qualifiedKey(ep.orgId, name)) : undefined;
    const held = qualified === undefined ? await store.getEndpoint(name) : undefined;
    const othersApiEndpoint =
      held !== undefined && !held.fromConfig && !held.oneOff && held.orgId !== "" && held.orgId !== ep.orgId;
    if (qualified !== undefined) keys.set(name, qualified.name);
    else if (!othersApiEndpoint) keys.set(name, name);
    else if (ep.orgId !== "") keys.set(name, qualifiedKey(ep.orgId, name));
    else {
      problems.push({
        path: `webhooks.${name}`,
        line: 0,
        message: `org "${held.orgId}" made an endpoint named "${name}" with the Admin API; an operator endpoint of that name would take it over and send every org's events to its receiver: rename this entry (or delete that endpoint: aigw endpoints delete ${name})`,
      });
    }
  }
  if (problems.length > 0) throw new ConfigError(file, problems);
  for (const [name, ep] of Object.entries(config.webhooks)) {
    await store.upsertEndpoint(
      {
        name: keys.get(name) ?? name,
        url: ep.url,
        enabled: ep.enabled,
        eventTypes: ep.events.flatMap((n) => {
          const t = eventTypeFromName(n);
          return t === undefined ? [] : [t];
        }),
        failoverTo: keys.get(ep.failoverTo) ?? ep.failoverTo,
        filters: filtersFromConfig(ep.filters),
        orgId: ep.orgId,
        apps: ep.apps,
      },
      ep.secret,
    );
  }
}
