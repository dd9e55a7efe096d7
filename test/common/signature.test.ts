import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { parseSecret, sign, SigningKeyRing, SigningSecretError } from "../../common/signature.js";

// Standard Webhooks reference test vector (DESIGN.md "Webhook request").
const KAT = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

describe("signing", () => {
  it("matches the Standard Webhooks known-answer vector", () => {
    expect(sign([KAT.secret], KAT.id, KAT.timestamp, KAT.body)).toBe(KAT.signature);
  });

  it("signs once per key, space-separated, newest key first", () => {
    const other = "whsec_" + Buffer.from("another key of 24 bytes!").toString("base64");
    const header = sign([other, KAT.secret], KAT.id, KAT.timestamp, KAT.body);
    const parts = header.split(" ");
    expect(parts).toHaveLength(2);
    expect(parts[1]).toBe(KAT.signature);
    expect(parts[0]).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(parts[0]).not.toBe(KAT.signature);
  });

  it("uses whsec_ secrets as base64 and other secrets as raw UTF-8 bytes", () => {
    expect(parseSecret("whsec_aGVsbG8=").toString("utf8")).toBe("hello");
    expect(parseSecret("plain-secret é").equals(Buffer.from("plain-secret é", "utf8"))).toBe(true);
  });

  it("refuses secrets that cannot be keys, saying why", () => {
    expect(() => parseSecret("")).toThrow(SigningSecretError);
    expect(() => parseSecret("whsec_not base64!")).toThrow(/not base64/);
    expect(() => new SigningKeyRing([])).toThrow(/no signing key/);
    expect(() => new SigningKeyRing([KAT.secret]).sign(KAT.id, 1.5, "{}")).toThrow(/whole unix seconds/);
  });

  it("produces headers that standardwebhooks verifies, for one key and for either key of a rotation", () => {
    const oldSecret = "whsec_" + Buffer.from("old-key-material-0123456789abcdef").toString("base64");
    const newSecret = "whsec_" + Buffer.from("new-key-material-0123456789abcdef").toString("base64");
    const body = JSON.stringify({ event: "completion", id: "evt_1", tokens_used: 150 });
    const ts = Math.floor(Date.now() / 1000);
    const headers = (sig: string) => ({
      "webhook-id": "evt_1",
      "webhook-timestamp": String(ts),
      "webhook-signature": sig,
    });

    expect(new Webhook(newSecret).verify(body, headers(sign([newSecret], "evt_1", ts, body)))).toEqual(
      JSON.parse(body),
    );

    const rotated = sign([newSecret, oldSecret], "evt_1", ts, body);
    expect(new Webhook(oldSecret).verify(body, headers(rotated))).toEqual(JSON.parse(body));
    expect(new Webhook(newSecret).verify(body, headers(rotated))).toEqual(JSON.parse(body));
    const stranger = "whsec_" + Buffer.from("some-unrelated-key-material-xyz").toString("base64");
    expect(() => new Webhook(stranger).verify(body, headers(rotated))).toThrow(/No matching signature/);
    // A changed body no longer verifies.
    expect(() => new Webhook(newSecret).verify(body + " ", headers(rotated))).toThrow(/No matching signature/);
  });

  it("raw secrets verify with standardwebhooks' raw format", () => {
    const body = '{"event":"error"}';
    const ts = Math.floor(Date.now() / 1000);
    const sig = sign(["my-raw-secret"], "evt_2", ts, body);
    const verifier = new Webhook(new Uint8Array(Buffer.from("my-raw-secret")), { format: "raw" });
    expect(
      verifier.verify(body, { "webhook-id": "evt_2", "webhook-timestamp": String(ts), "webhook-signature": sig }),
    ).toEqual({ event: "error" });
  });
});
