import { describe, expect, it } from "vitest";
import {
  GENERATED_SECRET_BYTES,
  generateSigningSecret,
  MIN_SECRET_BYTES,
  signingSecretProblem,
} from "../../control-plane/security/signing-secret.js";

const b64 = (text: string) => Buffer.from(text).toString("base64");

describe("signing secrets: one check", () => {
  it.each([
    ["", /is empty/],
    ["   ", /is empty/],
    ["s", /is 1 bytes of text; expected "whsec_" \+ base64 of at least 16 random bytes/],
    ["a".repeat(MIN_SECRET_BYTES - 1), /is 15 bytes of text/],
    ["whsec_", /not valid base64/],
    ["whsec_not*base64!", /not valid base64/],
    [`whsec_${b64("x".repeat(MIN_SECRET_BYTES + 1)).replace(/=+$/, "")}`, /not valid base64/], // unpadded
    ["whsec_b2xk", /decodes to 3 bytes after "whsec_"/],
    [`whsec_${b64("x".repeat(MIN_SECRET_BYTES - 1))}`, /decodes to 15 bytes/],
    [` whsec_${b64("x".repeat(32))}`, /whitespace/],
    ["x".repeat(1025), /at most 1024/],
  ])("refuses %j", (secret, says) => {
    const problem = signingSecretProblem(secret);
    expect(problem?.code).toBe("AIGW_SECRET_INVALID");
    expect(problem?.message).toMatch(says);
    // Never echoed: problems are logged and printed.
    if (secret.trim().length >= 16) expect(problem?.message).not.toContain(secret.trim().slice(6, 18));
  });

  it.each([
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // Standard Webhooks' own example: 24 bytes
    `whsec_${b64("k".repeat(64))}`,
    "a raw secret of exactly 24",
    "é".repeat(8), // 16 bytes of UTF-8
  ])("accepts %j", (secret) => {
    expect(signingSecretProblem(secret)).toBeUndefined();
  });
});

describe("signing secrets: one generator", () => {
  it("makes whsec_ + 32 random bytes that pass the check", () => {
    const made = new Set(Array.from({ length: 200 }, generateSigningSecret));
    expect(made.size).toBe(200);
    for (const secret of made) {
      expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(Buffer.from(secret.slice(6), "base64")).toHaveLength(GENERATED_SECRET_BYTES);
      expect(signingSecretProblem(secret)).toBeUndefined();
    }
  });
});
