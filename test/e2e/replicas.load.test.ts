import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockProvider } from "../../examples/mock-provider.js";
import { FeedService } from "../../gen/aigw/v1/feed_pb.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET } from "../support/stack.js";
import { createTestDatabase, skipWithoutPostgres, TEST_ENCRYPTION_KEY } from "../support/store.js";
import { waitFor } from "../support/wait.js";

// Several control-plane replicas on one PostgreSQL, sidecars spread over them.
// Every event is delivered; no delivery is in flight twice at once; the caps hold over
// both replicas; a replica SIGKILLed mid-run has its leases taken over; a watcher on one
// replica sees the other's events in order; replicas ride out killed connections and a
// PostgreSQL restart by themselves, saying so in their logs.
const skip = await skipWithoutPostgres("the replica tests");

const PER_ENDPOINT = 6;

/** A receiver that verifies each webhook and records when each request for an id started and ended. */
async function startRecordingReceiver() {
  const verifier = new Webhook(TEST_SECRET);
  const spans = new Map<string, [number, number][]>();
  const requestIds = new Set<string>();
  let inFlight = 0;
  let maxInFlight = 0;
  let rejected = 0;
  const server = http.createServer((req, res) => {
    const started = performance.now();
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body: Record<string, unknown>;
      try {
        body = verifier.verify(raw, req.headers as Record<string, string>) as Record<string, unknown>;
      } catch {
        rejected++;
        inFlight--;
        res.writeHead(401).end();
        return;
      }
      // A few ms of work, so attempts overlap and the caps are exercised.
      setTimeout(() => {
        const id = String(req.headers["webhook-id"]);
        spans.set(id, [...(spans.get(id) ?? []), [started, performance.now()]]);
        requestIds.add(String(body.request_id));
        inFlight--;
        res.writeHead(204).end();
      }, 3);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    spans,
    requestIds,
    get maxInFlight() {
      return maxInFlight;
    },
    get rejected() {
      return rejected;
    },
    /** Webhook ids that had two requests in flight at the same time. */
    overlapping(): string[] {
      const out: string[] = [];
      for (const [id, list] of spans) {
        const sorted = [...list].sort((a, b) => a[0] - b[0]);
        for (let i = 1; i < sorted.length; i++)
          if ((sorted[i] as [number, number])[0] < (sorted[i - 1] as [number, number])[1]) out.push(id);
      }
      return out;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

describe.skipIf(skip)("control-plane replicas on one PostgreSQL (real processes)", () => {
  let dir: string;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let receiver: Awaited<ReturnType<typeof startRecordingReceiver>>;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  const processes: AigwProcess[] = [];
  let configPath: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-replicas-"));
    db = await createTestDatabase();
    receiver = await startRecordingReceiver();
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
    configPath = join(dir, "config.yaml");
    writeFileSync(
      configPath,
      `
webhooks:
  primary:
    url: "${receiver.url}"
    secret: "${TEST_SECRET}"
events:
  subscribe: ["completion"]
retry:
  initial_delay_ms: 100
  max_delay_ms: 1000
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
delivery:
  timeout_ms: 2000
  concurrent_deliveries: ${PER_ENDPOINT}
  per_endpoint_concurrency: ${PER_ENDPOINT}
storage:
  encryption_key: "${TEST_ENCRYPTION_KEY}"
`,
    );
  });

  afterAll(async () => {
    for (const p of processes) {
      p.child.kill("SIGKILL");
      await p.exited;
    }
    await provider?.close();
    await receiver?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function replica(): Promise<{ process: AigwProcess; grpc: string; http: string }> {
    const process = runAigw(
      ["control-plane", "--config", configPath, "--store", db.url, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
      { AIGW_LOG_LEVEL: "info" },
    );
    processes.push(process);
    const ready = await process.waitForLog("control plane ready", 60_000);
    return { process, grpc: String(ready.grpc), http: String(ready.http) };
  }

  async function sidecar(controlPlanes: string[], app: string): Promise<string> {
    const process = runAigw([
      "sidecar",
      "--control-plane",
      controlPlanes.join(","),
      "--listen",
      "127.0.0.1:0",
      "--admin-listen",
      "127.0.0.1:0",
      "--upstream",
      provider.url,
      "--org",
      "org_replicas",
      "--app",
      app,
      "--spool",
      join(dir, `spool-${app}`),
    ]);
    processes.push(process);
    return String((await process.waitForLog("sidecar ready")).url);
  }

  const call = async (sidecarUrl: string): Promise<string> => {
    const res = await fetch(`${sidecarUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
      body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(200);
    await res.json();
    return res.headers.get("x-aigw-request-id") as string;
  };

  /** `count` calls, `parallel` at a time, alternating between the sidecars. */
  async function traffic(sidecars: string[], count: number, parallel = 16): Promise<string[]> {
    const ids: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < count) {
          const i = next++;
          ids.push(await call(sidecars[i % sidecars.length] as string));
        }
      }),
    );
    return ids;
  }

  it("delivers everything once at a time within the caps, a watcher on A sees B's events in order, and a SIGKILLed replica's leases are taken over", async () => {
    const a = await replica();
    const b = await replica();
    const sidecarA = await sidecar([a.grpc, b.grpc], "app-a");
    const sidecarB = await sidecar([b.grpc, a.grpc], "app-b");

    // A watcher on replica A; events come in through replica B's sidecar only.
    const feed = createClient(FeedService, createConnectTransport({ baseUrl: a.http, httpVersion: "1.1" }));
    const watched: { requestId: string; cursor: string }[] = [];
    const abort = new AbortController();
    const watching = (async () => {
      for await (const r of feed.watch({}, { signal: abort.signal })) {
        const p = r.event?.payload;
        if (p?.case === "completion") watched.push({ requestId: p.value.requestId, cursor: r.cursor });
      }
    })().catch(() => {});
    // The watch may not be subscribed yet when the first calls land: call until one shows up.
    const probes: string[] = [];
    await waitFor("the watcher to be live", async () => {
      probes.push(await call(sidecarB));
      return watched.some((w) => probes.includes(w.requestId));
    });
    const throughB = await traffic([sidecarB], 200);
    await waitFor("B's events on A's feed", () => throughB.every((id) => watched.some((w) => w.requestId === id)));
    const cursors = watched.map((w) => Number(w.cursor));
    expect(cursors).toEqual([...cursors].sort((x, y) => x - y));
    expect(new Set(cursors).size).toBe(cursors.length);
    abort.abort();
    await watching;

    // Thousands of calls over both sidecars; replica A killed partway.
    const before = new Set([...probes, ...throughB]);
    const first = await traffic([sidecarA, sidecarB], 1_000);
    a.process.child.kill("SIGKILL");
    await a.process.exited;
    const second = await traffic([sidecarA, sidecarB], 1_000);
    const all = [...before, ...first, ...second];
    await waitFor(
      "every call delivered (replica A's leases taken over by B)",
      () => all.every((id) => receiver.requestIds.has(id)),
      120_000,
    );
    expect(receiver.rejected).toBe(0);
    expect(receiver.overlapping()).toEqual([]);
    // Requests in flight at the receiver never passed the cap, over both replicas.
    expect(receiver.maxInFlight).toBeLessThanOrEqual(PER_ENDPOINT);
    // Redeliveries of what A had in flight when it died (the receiver saw them; A never
    // recorded the answer) finish too, and nothing is left pending.
    await waitFor("nothing pending", async () =>
      /^aigw_deliveries_pending 0$/m.test(await (await fetch(`${b.http}/metrics`)).text()),
    );
  }, 300_000);

  it("rides out killed connections and a PostgreSQL restart, and says so", async () => {
    const c = await replica();
    const sc = await sidecar([c.grpc], "app-c");
    const before = await traffic([sc], 50);
    await waitFor("the first calls delivered", () => before.every((id) => receiver.requestIds.has(id)));

    // Every connection of the aigw processes, cut from the server side.
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    const killed = await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    await admin.end();
    expect(killed.rowCount).toBeGreaterThan(0);
    await c.process.waitForLog("PostgreSQL notifications lost; reconnecting", 30_000);
    await c.process.waitForLog("PostgreSQL notifications back; reloading what may have changed meanwhile", 30_000);
    const afterKill = await traffic([sc], 50);
    await waitFor("calls after the kill delivered", () => afterKill.every((id) => receiver.requestIds.has(id)), 60_000);

    // The whole server restarted (calls go on meanwhile: the app never notices). Needs the
    // server's own cluster tools (Debian's pg_ctlcluster), as on the CI machines.
    const cluster = existsSync("/etc/postgresql") ? readdirSync("/etc/postgresql")[0] : undefined;
    if (cluster === undefined) {
      console.warn("skipping the PostgreSQL restart: no /etc/postgresql cluster to restart here");
      return;
    }
    const during = traffic([sc], 100, 4);
    execFileSync("pg_ctlcluster", ["--skip-systemctl-redirect", cluster, "main", "restart"], { stdio: "ignore" });
    const ids = await during;
    const after = await traffic([sc], 50);
    await waitFor(
      "every call around the restart delivered",
      () => [...ids, ...after].every((id) => receiver.requestIds.has(id)),
      120_000,
    );
    expect(c.process.child.exitCode).toBeNull();
    expect(receiver.rejected).toBe(0);
  }, 300_000);
});
