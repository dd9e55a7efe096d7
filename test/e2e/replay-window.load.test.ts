import { monitorEventLoopDelay } from "node:perf_hooks";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { type RunningControlPlane, runControlPlane } from "../../control-plane/run.js";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { makeDeadLetters } from "../support/dead-letters.js";
import { TEST_SECRET } from "../support/stack.js";
import { openLocation, type TestStoreLocation, testStoreLocation } from "../support/store.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";
import { type Child, node, port, RECEIVER_SOURCE } from "../bench/bench-processes.js";

const DEAD_LETTERS = 10_000;

// A window of 10k dead letters replayed in one call while the control plane keeps
// delivering (in this process, so its event loop is measured directly): the replay goes in
// bounded transactions with the event loop free between them, so other endpoints'
// deliveries and the Admin API keep their pace; every dead letter goes out once.
describe("replaying a big window keeps the control plane responsive", () => {
  let location: TestStoreLocation;
  // The bulk receiver in its own process: the event loop measured is the control plane's.
  let bulk: Child;
  let bulkUrl: string;
  let live: TestReceiver;
  let cp: RunningControlPlane;
  let admin: Client<typeof AdminService>;

  beforeAll(async () => {
    location = await testStoreLocation();
    bulk = node(RECEIVER_SOURCE);
    bulkUrl = `http://127.0.0.1:${await port(bulk)}/hooks`;
    live = await startTestReceiver({ secret: TEST_SECRET });
    const yaml = `
webhooks:
  bulk:
    url: "${bulkUrl}"
    secret: "${TEST_SECRET}"
  live:
    url: "${live.url}"
    secret: "${TEST_SECRET}"
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
delivery:
  concurrent_deliveries: 64
  per_endpoint_concurrency: 32
${location.encryptionKey ? `storage:\n  encryption_key: "${location.encryptionKey}"\n` : ""}`;
    const config = parseConfig(yaml, { file: "test.yaml", env: {} });
    // The dead letters exist before the control plane starts (its config makes the endpoints).
    const seed = await openLocation(location);
    try {
      for (const name of ["bulk", "live"]) {
        await seed.upsertEndpoint(
          { name, url: name === "bulk" ? bulkUrl : live.url, enabled: true, eventTypes: [], failoverTo: "" },
          TEST_SECRET,
        );
      }
      await makeDeadLetters(seed, "bulk", DEAD_LETTERS);
    } finally {
      await seed.close();
    }
    cp = await runControlPlane({
      config,
      store: location.url,
      grpc: "127.0.0.1:0",
      http: "127.0.0.1:0",
      logger: createLogger({ level: process.env.AIGW_TEST_LOG ?? "silent" }),
    });
    admin = createClient(AdminService, createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1" }));
  }, 240_000);

  afterAll(async () => {
    await cp?.close();
    await bulk?.stop();
    await live?.close();
    await location?.cleanup();
  });

  it("replays 10k dead letters in one call with the event loop free and other deliveries on time", async () => {
    const delay = monitorEventLoopDelay({ resolution: 10 });
    // Live traffic meanwhile: a test event to another endpoint every 50 ms, each timed to its arrival.
    const sentAt = new Map<string, number>();
    let sending = true;
    const sender = (async () => {
      while (sending) {
        const started = Date.now();
        const res = await admin.sendTestEvent({ endpoint: "live", eventType: EventType.COMPLETION });
        sentAt.set(res.event?.id ?? "", started);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    delay.enable();
    const started = performance.now();
    const res = await admin.replayDeliveries({ since: timestampFromMs(Date.now() - 3_600_000) });
    const replayMs = performance.now() - started;
    // Measured while the replay runs (the replays are being delivered meanwhile too).
    delay.disable();
    sending = false;
    await sender;
    expect(res).toMatchObject({ replayed: DEAD_LETTERS, total: DEAD_LETTERS });
    await waitFor("the live events delivered", () => live.accepted().length >= sentAt.size);
    const bulkCount = async () =>
      ((await (await fetch(`${bulkUrl.replace("/hooks", "")}/`)).json()) as { count: number }).count;
    await waitFor("every replay delivered", async () => (await bulkCount()) >= DEAD_LETTERS, 180_000);

    const p99 = delay.percentile(99) / 1e6;
    const max = delay.max / 1e6;
    const lags = live
      .accepted()
      .filter((w) => sentAt.has(w.id))
      .map((w) => w.receivedAt - (sentAt.get(w.id) ?? w.receivedAt));
    lags.sort((a, b) => a - b);
    const lagP95 = lags[Math.floor(lags.length * 0.95)] ?? 0;
    console.log(
      `replay of ${DEAD_LETTERS}: ${Math.round(replayMs)} ms (${Math.round(DEAD_LETTERS / (replayMs / 1000))}/s); ` +
        `event loop delay p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms; live deliveries ${lags.length}, p95 ${lagP95} ms`,
    );
    // Generous bounds for a busy 2-core machine (the replays are being delivered at full
    // speed meanwhile); a replay of the whole window in one transaction would hold the loop
    // for as long as it took, and no live event would be stored until it ended.
    expect(p99).toBeLessThan(1_000);
    expect(max).toBeLessThan(3_000);
    expect(lagP95).toBeLessThan(10_000);
    // Each dead letter went out once: as many requests as distinct request ids.
    const arrivals = (await (await fetch(`${bulkUrl.replace("/hooks", "")}/arrivals`)).json()) as Record<
      string,
      number
    >;
    expect(Object.keys(arrivals)).toHaveLength(DEAD_LETTERS);
    expect(await bulkCount()).toBe(DEAD_LETTERS);

    // Run again: nothing more to replay.
    const again = await admin.replayDeliveries({ since: timestampFromMs(Date.now() - 3_600_000) });
    expect(again).toMatchObject({ replayed: 0, skipped: DEAD_LETTERS });
  }, 300_000);
});
