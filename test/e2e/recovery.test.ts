import { Code, ConnectError, type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, DeliveryStatus } from "../../gen/aigw/v1/admin_pb.js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET } from "../support/stack.js";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

// Recovery through real processes: a control plane (restarted once) and the CLI, on the
// store under test (AIGW_TEST_STORE=postgres for PostgreSQL).
describe("endpoint states and replay by window, through the CLI", () => {
  let dir: string;
  let config: string;
  let location: TestStoreLocation;
  let cp: AigwProcess;
  let httpUrl: string;
  let admin: Client<typeof AdminService>;
  let held: TestReceiver;
  let other: TestReceiver;
  let down: TestReceiver;
  let downAnswers = 500;

  const start = async () => {
    cp = runAigw([
      "control-plane",
      "--config",
      config,
      "--store",
      location.url,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    const ready = await cp.waitForLog("control plane ready");
    httpUrl = String(ready.http);
    admin = createClient(AdminService, createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" }));
  };
  const stop = async () => {
    cp.child.kill("SIGTERM");
    await cp.exited;
  };
  /** The CLI as a process: exit code, stdout, stderr. */
  const cli = async (...args: string[]) => {
    const p = runAigw([...args, "--admin", httpUrl]);
    const code = await p.exited;
    return { code, out: `${p.lines.join("\n")}\n`, err: p.stderr() };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-recovery-"));
    location = await testStoreLocation();
    held = await startTestReceiver({ secret: TEST_SECRET });
    other = await startTestReceiver({ secret: TEST_SECRET });
    down = await startTestReceiver({ secret: TEST_SECRET, script: () => downAnswers });
    const hook = (name: string, r: TestReceiver) => `  ${name}:\n    url: "${r.url}"\n    secret: "${TEST_SECRET}"\n`;
    config = join(dir, "config.yaml");
    writeFileSync(
      config,
      withStorageKey(
        `
webhooks:
${hook("held", held)}${hook("other", other)}${hook("down", down)}
retry:
  max_attempts: 2
  initial_delay_ms: 20
  max_delay_ms: 50
delivery:
  per_endpoint_concurrency: 1
  circuit_breaker_threshold: 1000
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
`,
        location,
      ),
    );
    await start();
  });

  afterAll(async () => {
    if (cp) await stop();
    for (const r of [held, other, down]) await r?.close();
    await location?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("pause holds deliveries (no attempt, across a restart); resume sends them in order of due time", async () => {
    const paused = await cli("endpoints", "pause", "held");
    expect(paused).toMatchObject({ code: 0, err: "" });
    expect(paused.out).toContain("paused endpoint held: 0 pending deliveries held");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await admin.sendTestEvent({ endpoint: "held", eventType: EventType.COMPLETION })).event?.id ?? "");
      // Something else flows meanwhile, and is delivered: the scheduler had every chance to send held's too.
      await admin.sendTestEvent({ endpoint: "other", eventType: EventType.COMPLETION });
    }
    await waitFor("other's five deliveries", () => other.accepted().length === 5);
    expect(held.received).toEqual([]);
    const pending = await admin.listDeliveries({ endpoint: "held", status: DeliveryStatus.PENDING });
    expect(pending.deliveries).toHaveLength(5);
    expect(pending.deliveries.every((d) => d.attemptCount === 0 && d.lastError === "")).toBe(true);
    expect((await cli("endpoints", "list")).out).toMatch(/^held +- \(operator\) +\S+ +paused /m);

    // Kept in the store: a restarted control plane keeps holding them.
    await stop();
    await start();
    expect((await admin.getEndpoint({ name: "held" })).endpoint).toMatchObject({ paused: true, enabled: true });
    await admin.sendTestEvent({ endpoint: "other", eventType: EventType.COMPLETION });
    await waitFor("other's sixth delivery", () => other.accepted().length === 6);
    expect(held.received).toEqual([]);

    const resumed = await cli("endpoints", "resume", "held");
    expect(resumed.out).toContain("resumed endpoint held: 5 held deliveries go out");
    await waitFor("held's five deliveries", () => held.accepted().length === 5);
    expect(held.accepted().map((w) => w.id)).toEqual(ids);
    expect(held.received.every((w) => w.attempt === 1)).toBe(true);
  });

  it("disabling says how many pending deliveries it fails", async () => {
    await cli("endpoints", "pause", "held");
    for (let i = 0; i < 2; i++) await admin.sendTestEvent({ endpoint: "held", eventType: EventType.COMPLETION });
    const disabled = await cli("endpoints", "disable", "held", "--reason", "receiver moving");
    expect(disabled.code).toBe(0);
    expect(disabled.out).toContain("disabled endpoint held: 2 pending deliveries fail without an attempt");
    await waitFor("held's pending deliveries failed", async () => {
      const left = await admin.listDeliveries({ endpoint: "held", status: DeliveryStatus.PENDING });
      return left.deliveries.length === 0;
    });
    expect((await cli("endpoints", "get", "held")).out).toMatch(/^state: +disabled \(receiver moving\)$/m);
    expect(held.accepted()).toHaveLength(5);
    const enabled = await cli("endpoints", "enable", "held");
    expect(enabled.out).toContain("enabled endpoint held");
    expect((await admin.getEndpoint({ name: "held" })).endpoint).toMatchObject({ enabled: true, paused: false });
  });

  it("replays a window's dead letters once however often it runs, with a count at the end", async () => {
    const sent: string[] = [];
    for (let i = 0; i < 3; i++) {
      sent.push((await admin.sendTestEvent({ endpoint: "down", eventType: EventType.COMPLETION })).event?.id ?? "");
    }
    await waitFor("three dead letters", async () => {
      const dead = await admin.listDeliveries({ endpoint: "down", status: DeliveryStatus.DEAD_LETTERED });
      return dead.deliveries.length === 3;
    });
    downAnswers = 200;
    const first = await cli("deliveries", "replay", "--since", "1h", "--endpoint", "down");
    expect(first).toMatchObject({ code: 0, err: "" });
    expect(first.out).toMatch(/^replayed 3 deliveries of down that finished since \S+Z\n$/);
    await waitFor("the replays delivered", () => down.accepted().length === 3);
    expect(
      down
        .accepted()
        .map((w) => w.id)
        .sort(),
    ).toEqual([...sent].sort());

    const second = await cli("deliveries", "replay", "--since", "1h", "--endpoint", "down");
    expect(second.out).toMatch(/^replayed 0 deliveries of down that finished since \S+ \(3 skipped: /);
    // Every endpoint, an absolute window: down's again nothing, but the two deliveries that
    // disabling held failed go out now that it is enabled. --json prints the totals.
    const since = new Date(Date.now() - 3_600_000).toISOString();
    const json = await cli("deliveries", "replay", "--since", since, "--status", "dead_lettered,failed", "--json");
    expect(JSON.parse(json.out)).toMatchObject({ replayed: 2, skipped: 3, total: 5 });
    await waitFor("held's two failed deliveries, replayed", () => held.accepted().length === 7);
    expect(down.received.filter((w) => w.status === 200)).toHaveLength(3);
  });

  it("refuses bad windows: a usage error naming the flag (exit 2), INVALID_ARGUMENT naming the field", async () => {
    for (const [args, message] of [
      [["--since", "yesterday"], '--since: "yesterday" is neither a duration'],
      [["--since", "2h", "--until", "3h"], "--until: must be after --since"],
      [["--since", "2h", "--status", "pending"], "--status: must be failed, dead_lettered or both"],
      [["--since", "2999-01-01T00:00:00Z"], '--since: "2999-01-01T00:00:00Z" is in the future'],
      [["--until", "1h"], "--until goes with --since"],
    ] as const) {
      const run = await cli("deliveries", "replay", ...args);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.err, args.join(" ")).toContain(message);
    }
    const now = Date.now();
    for (const [req, field] of [
      [{ since: timestampFromMs(now + 3_600_000) }, "since"],
      [{ since: timestampFromMs(now - 1_000), until: timestampFromMs(now - 2_000) }, "until"],
      [{ since: timestampFromMs(now - 1_000), statuses: [DeliveryStatus.PENDING] as DeliveryStatus[] }, "statuses"],
      [{ pageSize: 1_000_000 }, "page_size"],
      [{ since: timestampFromMs(now - 1_000), pageToken: "garbage" }, "page_token"],
    ] as const) {
      const err = await admin.replayDeliveries(req).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code, field).toBe(Code.InvalidArgument);
      expect(err?.rawMessage, field).toContain(field);
    }
  });
});
