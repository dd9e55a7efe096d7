import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyWebhook } from "../../common/verify.js";
import {
  completion,
  type ControlPlaneFixture,
  openSidecarStream,
  startControlPlane,
} from "../support/control-plane.js";
import { runAigw } from "../support/processes.js";
import { TEST_SECRET } from "../support/stack.js";
import { waitFor } from "../support/wait.js";

interface Captured {
  file: string;
  timestamp: number;
  receivedAt: number;
  raw: Buffer;
}

/**
 * A receiver that saves each request exactly as it arrived (request line, headers, blank
 * line, body), as someone debugging a receiver would, and answers 500 to the first attempt.
 */
async function startCapture(dir: string): Promise<{ server: Server; url: string; captured: Captured[] }> {
  const captured: Captured[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const head = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) head.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      const raw = Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`), ...chunks]);
      const file = join(dir, `request-${captured.length + 1}.http`);
      writeFileSync(file, raw);
      captured.push({ file, raw, timestamp: Number(req.headers["webhook-timestamp"]), receivedAt: Date.now() });
      res.writeHead(captured.length === 1 ? 500 : 200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, captured };
}

async function aigw(args: string[], env: Record<string, string> = {}) {
  const p = runAigw(["verify", ...args], { WEBHOOK_SECRET: "", ...env });
  const code = await p.exited;
  return { code, out: p.lines.join("\n"), err: p.stderr() };
}

// Every attempt is signed when it is sent, and a saved request checks out with `aigw verify`
// (the built CLI, as a user runs it) exactly as aigw/verify checks it in a receiver.
describe("signed at send time; aigw verify", () => {
  let dir: string;
  let fx: ControlPlaneFixture;
  let capture: Awaited<ReturnType<typeof startCapture>>;
  let configFile: string;
  let eventId: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-verify-"));
    capture = await startCapture(dir);
    const yaml = `
webhooks:
  primary:
    url: "${capture.url}"
    secret: "${TEST_SECRET}"
events:
  subscribe: ["completion"]
retry:
  max_attempts: 3
  initial_delay_ms: 1500
  jitter: 0
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
  timestamp_tolerance_ms: 60000
`;
    configFile = join(dir, "aigw.yaml");
    writeFileSync(configFile, yaml);
    fx = await startControlPlane(yaml);
    const stream = openSidecarStream(fx.cp, { sidecarId: "sc_v", orgId: "org_v", app: "a" });
    try {
      const event = completion("gpt-4", 100, { orgId: "org_v" });
      // An event that happened two hours ago (a sidecar that spooled while the control
      // plane was away): the webhook is still signed with the time of each attempt.
      event.time = timestampFromMs(Date.now() - 2 * 3_600_000);
      eventId = event.id;
      await stream.sendBatch([event]);
    } finally {
      stream.close();
    }
    await waitFor("the first attempt (500) and the retry (200)", () => capture.captured.length >= 2);
  });
  afterAll(async () => {
    await fx?.close();
    await new Promise<void>((resolve) => capture?.server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("signs every attempt with the time it is sent, not the event's or the first attempt's", () => {
    const [first, retry] = capture.captured as [Captured, Captured];
    for (const attempt of [first, retry]) {
      expect(Math.abs(attempt.timestamp * 1000 - attempt.receivedAt)).toBeLessThan(5_000);
      const sep = attempt.raw.indexOf("\r\n\r\n");
      const headers = Object.fromEntries(
        attempt.raw
          .subarray(0, sep)
          .toString()
          .split("\r\n")
          .slice(1)
          .map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]),
      );
      // Within a 5 s tolerance of when it arrived: a stale timestamp from the queue would fail.
      const event = verifyWebhook(attempt.raw.subarray(sep + 4), headers, {
        secret: TEST_SECRET,
        toleranceMs: 5_000,
        now: attempt.receivedAt,
      });
      expect(event).toMatchObject({ event: "completion", id: eventId });
    }
    // The retry came at least 1.5 s later, so its whole-second timestamp is later too.
    expect(retry.timestamp).toBeGreaterThan(first.timestamp);
    expect(retry.raw.subarray(retry.raw.indexOf("\r\n\r\n"))).toEqual(
      first.raw.subarray(first.raw.indexOf("\r\n\r\n")),
    );
  });

  it("aigw verify says valid for a saved request, and which secret of a rotation matched", async () => {
    const { file } = capture.captured[1]!;
    const ok = await aigw(["--request", file, "--secret", TEST_SECRET]);
    expect(ok).toMatchObject({ code: 0, err: "" });
    expect(ok.out).toMatch(
      new RegExp(
        `^valid: webhook-id ${eventId}, completion event, signed \\d+ s before the check \\(tolerance 300 s\\) with the secret$`,
      ),
    );
    const old = `whsec_${Buffer.from("an-older-key-of-this-endpoint-012").toString("base64")}`;
    const rotated = await aigw(["--request", file, "--secret", old, "--secret", TEST_SECRET]);
    expect(rotated.out).toMatch(/with secret 2 of 2$/);
    const env = await aigw(["--request", file, "--json"], { WEBHOOK_SECRET: TEST_SECRET });
    expect(JSON.parse(env.out)).toMatchObject({ event: "completion", id: eventId, org_id: "org_v" });
  });

  it("aigw verify says invalid and why, with the code, exit 1", async () => {
    const { file, raw, timestamp } = capture.captured[1]!;
    const tampered = join(dir, "tampered.http");
    writeFileSync(tampered, Buffer.from(raw.toString("utf8").replace('"gpt-4"', '"gpt-5"')));
    const forged = await aigw(["--request", tampered, "--secret", TEST_SECRET]);
    expect(forged.code).toBe(1);
    expect(forged.err).toMatch(
      /^aigw verify: invalid: AIGW_WEBHOOK_SIGNATURE_MISMATCH: no signature matches under the secret/,
    );
    const later = await aigw(["--request", file, "--secret", TEST_SECRET, "--at", String(timestamp + 3600)]);
    expect(later.code).toBe(1);
    expect(later.err).toMatch(
      /^aigw verify: invalid: AIGW_WEBHOOK_TIMESTAMP_EXPIRED: the signature matches, but webhook-timestamp \d+ is 3600 s old, more than the tolerance of 300 s/,
    );
  });

  it("takes the secret and security.timestamp_tolerance_ms from the control plane's config", async () => {
    const { file, timestamp } = capture.captured[1]!;
    const asOf = (seconds: number) => [
      "--request",
      file,
      "--config",
      configFile,
      "--endpoint",
      "primary",
      "--at",
      String(timestamp + seconds),
    ];
    expect((await aigw(asOf(30))).out).toMatch(/\(tolerance 60 s\) with the secret$/);
    const expired = await aigw(asOf(90));
    expect(expired.code).toBe(1);
    expect(expired.err).toMatch(/is 90 s old, more than the tolerance of 60 s/);
  });

  it("takes the body and headers as separate files, headers as lines or JSON", async () => {
    const { raw } = capture.captured[1]!;
    const sep = raw.indexOf("\r\n\r\n");
    const body = join(dir, "body.json");
    writeFileSync(body, raw.subarray(sep + 4));
    const lines = join(dir, "headers.txt");
    writeFileSync(lines, raw.subarray(0, sep));
    expect((await aigw(["--body", body, "--headers", lines, "--secret", TEST_SECRET])).code).toBe(0);
    const headerLines = raw.subarray(0, sep).toString().split("\r\n").slice(1);
    const json = join(dir, "headers.json");
    writeFileSync(
      json,
      JSON.stringify(
        Object.fromEntries(headerLines.map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 2)])),
      ),
    );
    expect((await aigw(["--body", body, "--headers", json, "--secret", TEST_SECRET])).code).toBe(0);
    const flags = await aigw(["--body", body, "--headers", json, "--secret", TEST_SECRET, "--id", "evt_other"]);
    expect(flags.code).toBe(1);
    expect(readFileSync(body, "utf8")).toContain(eventId);
  });

  it("answers usage mistakes with exit 2 and the verb's usage", async () => {
    const noSecret = await aigw(["--request", capture.captured[0]!.file]);
    expect(noSecret.code).toBe(2);
    expect(noSecret.err).toMatch(
      /^aigw verify: --secret S \(or WEBHOOK_SECRET, or --config with --endpoint\) is required\nUsage:\n {2}aigw verify/,
    );
    const missing = await aigw(["--request", join(dir, "nope.http"), "--secret", TEST_SECRET]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/--request: cannot read .*nope\.http \(no such file\)/);
    expect((await aigw(["--frobnicate"])).code).toBe(2);
    // A secret aigw would refuse is no endpoint's: named, not "no signature matches".
    const short = await aigw(["--request", capture.captured[0]!.file, "--secret", "x"]);
    expect(short.code).toBe(2);
    expect(short.err).toMatch(/^aigw verify: --secret: AIGW_SECRET_INVALID: is 1 bytes of text; /);
    const shortEnv = await aigw(["--request", capture.captured[0]!.file], { WEBHOOK_SECRET: "x" });
    expect(shortEnv.code).toBe(2);
    expect(shortEnv.err).toMatch(/^aigw verify: WEBHOOK_SECRET: AIGW_SECRET_INVALID: /);
    // A tolerance has the range of security.timestamp_tolerance_ms: 1e308 would accept any timestamp.
    for (const tolerance of ["1e308", "86400001", "999", "-5", "abc"]) {
      const r = await aigw([
        "--request",
        capture.captured[0]!.file,
        "--secret",
        TEST_SECRET,
        "--tolerance-ms",
        tolerance,
      ]);
      expect(r.code, tolerance).toBe(2);
      expect(r.err, tolerance).toMatch(
        /^aigw verify: --tolerance-ms: must be a whole number of milliseconds from 1000 to 86400000/,
      );
    }
  });
});
