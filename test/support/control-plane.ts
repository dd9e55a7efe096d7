import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import {
  type Ack,
  type ConfigSnapshot,
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  EventBatchSchema,
  HelloSchema,
  IngestService,
} from "../../gen/aigw/v1/ingest_pb.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { AsyncQueue } from "../../control-plane/ingest/async-queue.js";
import { testStoreLocation, withStorageKey } from "./store.js";
import { type RunningControlPlane, runControlPlane } from "../../control-plane/run.js";

// Shared by the tests that need a control plane: a real one on port 0 with
// a SQLite file in a temp dir, its Admin API client, and hand-driven sidecar streams.

export interface ControlPlaneFixture {
  cp: RunningControlPlane;
  admin: Client<typeof AdminService>;
  dir: string;
  /** Stops the control plane and starts it again on the same store with `yaml` (default: the same). */
  restart(yaml?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startControlPlane(yaml: string): Promise<ControlPlaneFixture> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-i3-"));
  const location = await testStoreLocation();
  const logger = createLogger({ level: process.env.AIGW_TEST_LOG ?? "silent" });
  const start = (text: string) =>
    runControlPlane({
      config: parseConfig(withStorageKey(text, location), { file: "test.yaml", env: {} }),
      store: location.url,
      grpc: "127.0.0.1:0",
      http: "127.0.0.1:0",
      logger,
    });
  const fixture: ControlPlaneFixture = {
    cp: await start(yaml),
    admin: undefined as unknown as Client<typeof AdminService>,
    dir,
    async restart(next = yaml) {
      await fixture.cp.close();
      fixture.cp = await start(next);
      fixture.admin = adminClient(fixture.cp);
    },
    async close() {
      await fixture.cp.close();
      await location.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  fixture.admin = adminClient(fixture.cp);
  return fixture;
}

function adminClient(cp: RunningControlPlane): Client<typeof AdminService> {
  return createClient(AdminService, createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1" }));
}

/** Envelope fields a test sets on an event. */
export interface EventExtra {
  orgId?: string;
  app?: string;
  webhookUrl?: string;
}

export function completion(model: string, tokensUsed: number, extra: EventExtra = {}): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_t",
    app: "t",
    provider: "openai",
    time: timestampNow(),
    ...extra,
    payload: { case: "completion", value: { requestId: newRequestId(), model, tokensUsed } },
  });
}

export function errorEvent(severity: string, extra: EventExtra = {}): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_t",
    app: "t",
    provider: "openai",
    time: timestampNow(),
    ...extra,
    payload: { case: "error", value: { requestId: newRequestId(), errorType: "upstream_error", severity } },
  });
}

export interface SidecarStream {
  sendBatch(events: Event[]): Promise<Ack>;
  /** Reports spool depth (SidecarStatus), as a sidecar does while it changes. */
  sendStatus(spoolBatches: number, spoolBytes: number): void;
  /** The next config snapshot (acks in between are kept for sendBatch). */
  nextConfig(): Promise<ConfigSnapshot>;
  close(): void;
}

/** A hand-driven sidecar: hello at once, then batches; responses sorted into acks and snapshots. */
export function openSidecarStream(
  cp: RunningControlPlane,
  hello: {
    sidecarId: string;
    orgId: string;
    app: string;
    configVersion?: bigint;
    version?: string;
    spoolBatches?: bigint;
    spoolBytes?: bigint;
  },
  token?: string,
): SidecarStream {
  const interceptors: Interceptor[] = token
    ? [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ]
    : [];
  const client = createClient(IngestService, createGrpcTransport({ baseUrl: cp.grpcUrl, interceptors }));
  const requests = new AsyncQueue<ConnectRequest>();
  const abort = new AbortController();
  const acks = new AsyncQueue<Ack>();
  const configs = new AsyncQueue<ConfigSnapshot>();
  const ackIt = acks[Symbol.asyncIterator]();
  const configIt = configs[Symbol.asyncIterator]();
  const pump = (async () => {
    for await (const res of client.connect(requests, { signal: abort.signal }) as AsyncIterable<ConnectResponse>) {
      if (res.message.case === "ack") acks.push(res.message.value);
      else if (res.message.case === "config") configs.push(res.message.value);
    }
  })();
  pump.then(
    () => {
      acks.end();
      configs.end();
    },
    (err: unknown) => {
      acks.fail(err);
      configs.fail(err);
    },
  );
  requests.push(
    create(ConnectRequestSchema, {
      message: { case: "hello", value: create(HelloSchema, { version: "test", ...hello }) },
    }),
  );
  let seq = 0n;
  return {
    async sendBatch(events) {
      seq++;
      requests.push(
        create(ConnectRequestSchema, { message: { case: "batch", value: create(EventBatchSchema, { seq, events }) } }),
      );
      const r = await ackIt.next();
      if (r.done) throw new Error("stream ended before the ack");
      return r.value;
    },
    sendStatus(spoolBatches, spoolBytes) {
      requests.push(
        create(ConnectRequestSchema, {
          message: { case: "status", value: { spoolBatches: BigInt(spoolBatches), spoolBytes: BigInt(spoolBytes) } },
        }),
      );
    },
    async nextConfig() {
      const r = await configIt.next();
      if (r.done) throw new Error("stream ended before a config snapshot");
      return r.value;
    },
    close() {
      requests.end();
      abort.abort();
    },
  };
}

/** Endpoint names that got a delivery of the event (decided in the ingest transaction). */
export async function deliveryTargets(cp: RunningControlPlane, eventId: string): Promise<string[]> {
  const { deliveries } = await cp.store.listDeliveries({ eventId, pageSize: 100 });
  return deliveries.map((d) => d.endpoint).sort();
}
