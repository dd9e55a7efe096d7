import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { verifyWebhookDetails } from "../../common/verify.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";

// The wall clock of a real control plane stepped back and forward an hour while it delivers
// (test/support/clock-shift.mjs shifts Date in that process; monotonic time runs on, as on a
// real machine when NTP or an operator steps the clock). Retries keep their delays, a lease
// keeps its length (no second request while the first is in flight), and the watchdog does
// not take the step for a blocked main thread.

const HOUR = 3_600_000;
const CLOCK_SHIFT = pathToFileURL(fileURLToPath(new URL("../support/clock-shift.mjs", import.meta.url))).href;

interface Request {
  id: string;
  at: number;
}

describe("wall clock steps of an hour (real control plane)", () => {
  let dir: string;
  let shiftFile: string;
  let cp: AigwProcess | undefined;
  let server: http.Server;
  let url: string;
  const requests: Request[] = [];
  /** webhook-timestamp less the receiver's clock, per request (ms). */
  const skews: number[] = [];
  /** webhook-ids answered only after this long (a request in flight across a clock step). */
  const holdMs = new Map<string, number>();
  /** The next new webhook-id is held this long. */
  let holdNext: number | undefined;
  const attempts = new Map<string, number>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-clock-"));
    shiftFile = join(dir, "shift");
    writeFileSync(shiftFile, "0");
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const headers = {
          "webhook-id": String(req.headers["webhook-id"]),
          "webhook-timestamp": String(req.headers["webhook-timestamp"]),
          "webhook-signature": String(req.headers["webhook-signature"]),
        };
        // The receiver's clock is not stepped, the sender's is: the signature is checked as of
        // the sender's webhook-timestamp, and how far that is from the receiver's clock kept.
        const signedAt = Number(headers["webhook-timestamp"]) * 1000;
        try {
          verifyWebhookDetails(Buffer.concat(chunks).toString("utf8"), headers, { secret: TEST_SECRET, now: signedAt });
        } catch {
          res.writeHead(401).end();
          return;
        }
        skews.push(signedAt - Date.now());
        const id = headers["webhook-id"];
        requests.push({ id, at: performance.now() });
        const attempt = (attempts.get(id) ?? 0) + 1;
        attempts.set(id, attempt);
        if (attempt === 1 && holdNext !== undefined) {
          holdMs.set(id, holdNext);
          holdNext = undefined;
        }
        const hold = holdMs.get(id);
        if (hold !== undefined) setTimeout(() => res.writeHead(200).end(), hold);
        // Every other event fails its first attempt: its retry is due initial_delay_ms later.
        else res.writeHead(attempt === 1 ? 503 : 200).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
  });

  afterAll(async () => {
    cp?.child.kill("SIGKILL");
    await cp?.exited;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps retry delays and leases across a step back and a step forward", async () => {
    const configPath = join(dir, "config.yaml");
    writeFileSync(configPath, testConfigYaml({ primaryUrl: url, initialDelayMs: 1_000 }));
    cp = runAigw(
      [
        "control-plane",
        "--config",
        configPath,
        "--store",
        `sqlite:${join(dir, "cp.db")}`,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
      ],
      {
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import=${CLOCK_SHIFT}`.trim(),
        AIGW_TEST_CLOCK_SHIFT_FILE: shiftFile,
      },
    );
    const ready = await cp.waitForLog("control plane ready");
    const admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: String(ready.http), httpVersion: "1.1" }),
    );
    const send = async () => (await admin.sendTestEvent({ endpoint: "primary" })).event?.id as string;
    const seen = (id: string, n: number) => requests.filter((r) => r.id === id).length >= n;
    const gap = (id: string) => {
      const at = requests.filter((r) => r.id === id).map((r) => r.at);
      return (at[1] ?? Number.NaN) - (at[0] ?? Number.NaN);
    };

    // A step back of an hour between an attempt and its retry.
    const before = await send();
    await waitFor("the first attempt (answered 503)", () => seen(before, 1));
    writeFileSync(shiftFile, String(-HOUR));
    const skewsBefore = skews.length;
    await waitFor("the retry, about initial_delay_ms later, not an hour", () => seen(before, 2), 20_000);
    expect(gap(before)).toBeGreaterThanOrEqual(700);
    // webhook-timestamp is the sender's wall clock, stepped back with it (receivers compare it with theirs).
    expect(skews.slice(skewsBefore).every((ms) => Math.abs(ms + HOUR) < 10_000)).toBe(true);
    // An event after the step: its retry too.
    const after = await send();
    await waitFor("the first attempt after the step back", () => seen(after, 1));
    await waitFor("its retry", () => seen(after, 2), 20_000);
    expect(gap(after)).toBeGreaterThanOrEqual(700);

    // A step forward of an hour while a request is in flight: its lease does not run out.
    holdNext = 3_000;
    const held = await send();
    await waitFor("the held request in flight", () => seen(held, 1));
    expect(holdMs.get(held)).toBe(3_000);
    writeFileSync(shiftFile, "0");
    // New work for the same endpoint makes the scheduler claim that lane again at once.
    const woken = await send();
    await waitFor("the new event delivered", () => seen(woken, 2), 20_000);
    const heldAt = requests.find((r) => r.id === held)?.at ?? 0;
    await new Promise((r) => setTimeout(r, Math.max(0, heldAt + 3_500 - performance.now())));
    // Retry delays stay as they were after the step forward, too.
    expect(gap(woken)).toBeGreaterThanOrEqual(700);

    const lines = cp.lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
    expect(lines.filter((l) => String(l.msg).startsWith("control plane main thread"))).toEqual([]);
    // One request for the held event: no second claim of a lease that only looked expired.
    expect(requests.filter((r) => r.id === held).length).toBe(1);
  });
});
