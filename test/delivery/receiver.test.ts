import { request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { sign } from "../../common/signature.js";
import { type ReceivedEvent, type Receiver, startReceiver } from "../../examples/receiver.js";

const SECRET = "whsec_" + Buffer.from("receiver-test-secret-0123456789ab").toString("base64");
let receiver: Receiver | undefined;

afterEach(async () => {
  await receiver?.close();
  receiver = undefined;
});

async function post(url: string, body: string, headers: Record<string, string>) {
  const res = await request(url, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });
  return { status: res.statusCode, text: await res.body.text() };
}

describe("example receiver", () => {
  it("accepts signed webhooks, rejects bad signatures with 401, and dedupes by webhook-id", async () => {
    const events: ReceivedEvent[] = [];
    const lines: string[] = [];
    receiver = await startReceiver({
      port: 0,
      secret: SECRET,
      onEvent: (e) => events.push(e),
      print: (l) => lines.push(l),
    });
    const body = JSON.stringify({ event: "completion", id: "evt_r1", model: "gpt-4" });
    const ts = String(Math.floor(Date.now() / 1000));
    const headers = {
      "webhook-id": "evt_r1",
      "webhook-timestamp": ts,
      "webhook-signature": sign([SECRET], "evt_r1", Number(ts), body),
    };

    expect((await post(receiver.url, body, headers)).status).toBe(200);
    expect((await post(receiver.url, body, headers)).status).toBe(200); // a retry of the same event
    const forged = await post(receiver.url, body.replace("gpt-4", "gpt-5"), headers);
    expect(forged.status).toBe(401);
    expect(forged.text).toMatch(/signature verification failed/);
    expect((await post(receiver.url, body, { "webhook-id": "evt_r1" })).status).toBe(401);

    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ webhookId: "evt_r1", body: { event: "completion", model: "gpt-4" } });
    expect(receiver.counts).toEqual({ received: 1, duplicates: 1, rejected: 2 });
    expect(lines.filter((l) => l.startsWith("completion evt_r1 "))).toHaveLength(1);
    expect(lines.every((l) => !l.includes("\n"))).toBe(true);
  });

  it("verifies raw (non-whsec) secrets as UTF-8 bytes", async () => {
    receiver = await startReceiver({ port: 0, secret: "plain text secret" });
    const body = '{"event":"error"}';
    const ts = Math.floor(Date.now() / 1000);
    const res = await post(receiver.url, body, {
      "webhook-id": "evt_r2",
      "webhook-timestamp": String(ts),
      "webhook-signature": sign(["plain text secret"], "evt_r2", ts, body),
    });
    expect(res.status).toBe(200);
  });

  it("rejects a replayed (stale) webhook and accepts either key during a rotation", async () => {
    const OLD = "whsec_" + Buffer.from("receiver-old-secret-0123456789abc").toString("base64");
    const lines: string[] = [];
    receiver = await startReceiver({
      port: 0,
      secret: [SECRET, OLD],
      toleranceMs: 60_000,
      print: (l) => lines.push(l),
    });
    const body = '{"event":"completion"}';
    const now = Math.floor(Date.now() / 1000);
    const headers = (id: string, ts: number, secrets: string[]) => ({
      "webhook-id": id,
      "webhook-timestamp": String(ts),
      "webhook-signature": sign(secrets, id, ts, body),
    });
    expect((await post(receiver.url, body, headers("evt_old_key", now, [OLD]))).status).toBe(200);
    expect((await post(receiver.url, body, headers("evt_new_key", now, [SECRET]))).status).toBe(200);
    const stale = await post(receiver.url, body, headers("evt_stale", now - 120, [SECRET]));
    expect(stale.status).toBe(401);
    expect(stale.text).toMatch(
      /AIGW_WEBHOOK_TIMESTAMP_EXPIRED: the signature matches, but webhook-timestamp \d+ is 12\d s old/,
    );
    expect(lines.some((l) => l.startsWith("x rejected evt_stale: AIGW_WEBHOOK_TIMESTAMP_EXPIRED"))).toBe(true);
    expect(receiver.counts).toEqual({ received: 2, duplicates: 0, rejected: 1 });
  });

  it("refuses a secret that cannot be a key at start", async () => {
    await expect(startReceiver({ port: 0, secret: "whsec_not base64!" })).rejects.toThrow(/not base64/);
  });

  it("needs a secret", async () => {
    await expect(startReceiver({ port: 0, secret: "" })).rejects.toThrow(/secret is required/);
  });
});
