import { Writable } from "node:stream";
import { type Client, type ConnectRouter, createClient, createRouterTransport } from "@connectrpc/connect";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import type { Event } from "../../gen/aigw/v1/events_pb.js";
import { createLogger } from "../../common/logger.js";
import { AdminServiceImpl } from "../../control-plane/admin/admin-service.js";
import { defaultConfig } from "../../control-plane/config/load.js";
import type { GatewayConfig } from "../../control-plane/config/types.js";
import type { Store } from "../../control-plane/store/store.js";
import { openTestStore } from "../support/store.js";

export interface AdminFixture {
  store: Store;
  service: AdminServiceImpl;
  client: Client<typeof AdminService>;
  routes: (router: ConnectRouter) => void;
  config: GatewayConfig;
  /** Endpoints whose circuit the fake breaker reports open. */
  openCircuits: Set<string>;
  counters: { notified: number; endpointsChanged: number; delivered: number };
  /** Every line the service logged. */
  logs: () => string;
  /** The clock the service sees; tests move it. */
  clock: { now: number };
  /** Closes the store under the service (to see how it fails). */
  closeStore(): Promise<void>;
  close(): Promise<void>;
}

/** An AdminService over a real store (the backend under test), reached in memory. */
export async function openAdminFixture(configure?: (config: GatewayConfig) => void): Promise<AdminFixture> {
  const opened = await openTestStore();
  const store = opened.store;
  let storeOpen = true;
  const config = defaultConfig();
  configure?.(config);
  const openCircuits = new Set<string>();
  const counters = { notified: 0, endpointsChanged: 0, delivered: 0 };
  const logLines: string[] = [];
  const logger = createLogger({
    level: "debug",
    name: "admin-test",
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(chunk.toString());
        done();
      },
    }),
  });
  const clock = { now: Date.now() };
  const service = new AdminServiceImpl({
    store,
    config: () => config,
    // The real thing: store the events and route them to the given endpoints or every
    // enabled one.
    async deliverEvents(events: Event[], endpoints?: string[]) {
      const targets = endpoints ?? (await store.listEndpoints()).filter((e) => e.enabled).map((e) => e.name);
      const result = await store.ingest(events, () => targets);
      counters.delivered += result.deliveries;
      return result;
    },
    notifyDeliveries: () => {
      counters.notified++;
    },
    isCircuitOpen: (endpoint) => openCircuits.has(endpoint),
    onEndpointsChanged: () => {
      counters.endpointsChanged++;
    },
    logger,
    now: () => clock.now,
  });
  const routes = (router: ConnectRouter) => {
    router.service(AdminService, service);
  };
  const client = createClient(AdminService, createRouterTransport(routes));
  return {
    store,
    service,
    client,
    routes,
    config,
    openCircuits,
    counters,
    logs: () => logLines.join(""),
    clock,
    async closeStore() {
      storeOpen = false;
      await store.close();
    },
    async close() {
      if (storeOpen) await store.close();
      await opened.location.cleanup();
    },
  };
}

export const SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
export const SECRET_B = "whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHMtMTIzNDU2";
