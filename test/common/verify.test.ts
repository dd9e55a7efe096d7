import fc from "fast-check";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { sign } from "../../common/signature.js";
import { verifyWebhook, verifyWebhookDetails, WebhookVerificationError } from "../../common/verify.js";

// Standard Webhooks reference vector (DESIGN.md "Webhook request").
const KAT = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};
const OLD = `whsec_${Buffer.from("the-old-key-of-this-endpoint-0123").toString("base64")}`;
const NEW = `whsec_${Buffer.from("the-new-key-of-this-endpoint-4567").toString("base64")}`;

const headersOf = (id: string, timestamp: number, signature: string) => ({
  "webhook-id": id,
  "webhook-timestamp": String(timestamp),
  "webhook-signature": signature,
});

function failure(fn: () => unknown): WebhookVerificationError {
  try {
    fn();
  } catch (err) {
    if (err instanceof WebhookVerificationError) return err;
    throw err;
  }
  throw new Error("expected verification to fail");
}

describe("verifyWebhook", () => {
  it("verifies the Standard Webhooks known-answer vector at its own time", () => {
    const now = KAT.timestamp * 1000;
    expect(
      verifyWebhook(KAT.body, headersOf(KAT.id, KAT.timestamp, KAT.signature), { secret: KAT.secret, now }),
    ).toEqual({
      test: 2432232314,
    });
  });

  it("takes the body as bytes or text and headers as a record (any case) or a Headers object", () => {
    const ts = Math.floor(Date.now() / 1000);
    const signature = sign([NEW], "evt_1", ts, '{"event":"completion"}');
    const record = { "Webhook-Id": "evt_1", "WEBHOOK-TIMESTAMP": String(ts), "webhook-signature": [signature] };
    expect(verifyWebhook(Buffer.from('{"event":"completion"}'), record, { secret: NEW })).toEqual({
      event: "completion",
    });
    const headers = new Headers(headersOf("evt_1", ts, signature));
    expect(verifyWebhook('{"event":"completion"}', headers, { secret: NEW })).toEqual({ event: "completion" });
  });

  it("accepts either key during a rotation, saying which matched", () => {
    const ts = Math.floor(Date.now() / 1000);
    const body = '{"event":"error"}';
    // During the overlap aigw signs with both keys; a receiver may hold either, or both.
    const both = headersOf("evt_2", ts, sign([NEW, OLD], "evt_2", ts, body));
    expect(verifyWebhookDetails(body, both, { secret: OLD }).secretIndex).toBe(0);
    expect(verifyWebhookDetails(body, both, { secret: [NEW, OLD] }).secretIndex).toBe(0);
    // After the overlap only the new key signs; a receiver given both still verifies.
    const onlyNew = headersOf("evt_2", ts, sign([NEW], "evt_2", ts, body));
    expect(verifyWebhookDetails(body, onlyNew, { secret: [OLD, NEW] }).secretIndex).toBe(1);
    expect(failure(() => verifyWebhook(body, onlyNew, { secret: OLD })).code).toBe("AIGW_WEBHOOK_SIGNATURE_MISMATCH");
  });

  it("says why a request fails, with a code for each reason", () => {
    const now = 1_700_000_000_000;
    const ts = now / 1000;
    const body = '{"event":"completion"}';
    const good = headersOf("evt_3", ts, sign([NEW], "evt_3", ts, body));
    const cases: [string, () => unknown, string, RegExp][] = [
      [
        "no headers",
        () => verifyWebhook(body, {}, { secret: NEW, now }),
        "AIGW_WEBHOOK_HEADERS_MISSING",
        /missing webhook-id, webhook-timestamp, webhook-signature/,
      ],
      [
        "no signature",
        () => verifyWebhook(body, { ...good, "webhook-signature": "" }, { secret: NEW, now }),
        "AIGW_WEBHOOK_HEADERS_MISSING",
        /missing webhook-signature/,
      ],
      [
        "timestamp in ms",
        () => verifyWebhook(body, { ...good, "webhook-timestamp": "1700000000000.5" }, { secret: NEW, now }),
        "AIGW_WEBHOOK_TIMESTAMP_INVALID",
        /not whole unix seconds/,
      ],
      [
        "altered body",
        () => verifyWebhook(body.replace("completion", "error"), good, { secret: NEW, now }),
        "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
        /no signature matches under the secret/,
      ],
      [
        "another id",
        () => verifyWebhook(body, { ...good, "webhook-id": "evt_4" }, { secret: NEW, now }),
        "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
        /no signature matches/,
      ],
      [
        "wrong secret",
        () => verifyWebhook(body, good, { secret: [OLD, KAT.secret], now }),
        "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
        /any of the 2 secrets/,
      ],
      [
        "v2 only",
        () => verifyWebhook(body, { ...good, "webhook-signature": "v2,abc" }, { secret: NEW, now }),
        "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
        /no v1 signature/,
      ],
      [
        "replayed later",
        () => verifyWebhook(body, good, { secret: NEW, now: now + 301_000 }),
        "AIGW_WEBHOOK_TIMESTAMP_EXPIRED",
        /the signature matches, but webhook-timestamp 1700000000 is 301 s old, more than the tolerance of 300 s/,
      ],
      [
        "clock ahead",
        () => verifyWebhook(body, good, { secret: NEW, now: now - 301_000 }),
        "AIGW_WEBHOOK_TIMESTAMP_FUTURE",
        /301 s ahead/,
      ],
      [
        "tight tolerance",
        () => verifyWebhook(body, good, { secret: NEW, now: now + 3000, toleranceMs: 2000 }),
        "AIGW_WEBHOOK_TIMESTAMP_EXPIRED",
        /tolerance of 2 s/,
      ],
      [
        "not JSON",
        () =>
          verifyWebhook("not json", headersOf("evt_3", ts, sign([NEW], "evt_3", ts, "not json")), { secret: NEW, now }),
        "AIGW_WEBHOOK_BODY_NOT_JSON",
        /not JSON/,
      ],
    ];
    for (const [what, call, code, says] of cases) {
      const err = failure(call);
      expect(err.code, what).toBe(code);
      expect(err.message, what).toMatch(says);
    }
    expect(verifyWebhook(body, good, { secret: NEW, now: now + 299_000 })).toEqual({ event: "completion" });
  });
});

describe("signature properties", () => {
  const secrets = fc
    .uint8Array({ minLength: 24, maxLength: 64 })
    .map((b) => `whsec_${Buffer.from(b).toString("base64")}`);
  const ids = fc.stringMatching(/^[A-Za-z0-9_]{1,40}$/);
  const bodies = fc.jsonValue().map((v) => JSON.stringify({ event: "completion", value: v }));
  const timestamps = fc.integer({ min: 1_000_000_000, max: 4_000_000_000 });

  it("sign → verify round-trips, and standardwebhooks agrees", () => {
    fc.assert(
      fc.property(secrets, ids, timestamps, bodies, (secret, id, ts, body) => {
        const headers = headersOf(id, ts, sign([secret], id, ts, body));
        const now = ts * 1000;
        expect(verifyWebhook(body, headers, { secret, now })).toEqual(JSON.parse(body));
        expect(verifyWebhook(Buffer.from(body), headers, { secret, now })).toEqual(JSON.parse(body));
        // The reference library, at the same instant (it reads the clock itself).
        const original = Date.now;
        Date.now = () => now;
        try {
          expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
        } finally {
          Date.now = original;
        }
      }),
      { numRuns: 300 },
    );
  });

  it("fails when any single byte of the body, id, timestamp or signature changes", () => {
    fc.assert(
      fc.property(
        secrets,
        ids,
        timestamps,
        bodies,
        fc.constantFrom("body", "id", "timestamp", "signature"),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (secret, id, ts, body, part, at, flip) => {
          const signature = sign([secret], id, ts, body);
          const bytes = {
            body: Buffer.from(body),
            id: Buffer.from(id),
            timestamp: Buffer.from(String(ts)),
            signature: Buffer.from(signature.slice(3), "base64"),
          };
          const target = bytes[part];
          const i = at % target.length;
          target[i] = target[i]! ^ flip;
          const headers = headersOf(bytes.id.toString("latin1"), ts, `v1,${bytes.signature.toString("base64")}`);
          headers["webhook-timestamp"] = bytes.timestamp.toString("latin1");
          const err = failure(() => verifyWebhook(bytes.body, headers, { secret, now: ts * 1000, toleranceMs: 1e15 }));
          expect([
            "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
            "AIGW_WEBHOOK_TIMESTAMP_INVALID",
            "AIGW_WEBHOOK_HEADERS_MISSING",
          ]).toContain(err.code);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("during a rotation, a header signed by both keys verifies under each, and under neither stranger", () => {
    fc.assert(
      fc.property(secrets, secrets, secrets, ids, timestamps, bodies, (oldKey, newKey, stranger, id, ts, body) => {
        fc.pre(new Set([oldKey, newKey, stranger]).size === 3);
        const headers = headersOf(id, ts, sign([newKey, oldKey], id, ts, body));
        const now = ts * 1000;
        expect(verifyWebhookDetails(body, headers, { secret: oldKey, now }).secretIndex).toBe(0);
        expect(verifyWebhookDetails(body, headers, { secret: newKey, now }).secretIndex).toBe(0);
        expect(verifyWebhookDetails(body, headers, { secret: [stranger, newKey], now }).secretIndex).toBe(1);
        expect(failure(() => verifyWebhook(body, headers, { secret: stranger, now })).code).toBe(
          "AIGW_WEBHOOK_SIGNATURE_MISMATCH",
        );
      }),
      { numRuns: 300 },
    );
  });
});

describe("the package export", () => {
  it("is importable as aigw/verify, from the build", async () => {
    const specifier = "aigw/verify";
    const mod = (await import(specifier)) as typeof import("../../common/verify.js");
    const ts = Math.floor(Date.now() / 1000);
    const body = '{"event":"budget"}';
    expect(mod.verifyWebhook(body, headersOf("evt_p", ts, sign([NEW], "evt_p", ts, body)), { secret: NEW })).toEqual({
      event: "budget",
    });
    expect(mod.DEFAULT_TIMESTAMP_TOLERANCE_MS).toBe(300_000);
  });
});
