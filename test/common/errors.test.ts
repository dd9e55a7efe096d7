import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AigwError, ERROR_CATALOGUE, errorCodeOf, isErrorCode } from "../../common/errors.js";

const README = readFileSync(join(import.meta.dirname, "..", "..", "README.md"), "utf8");

describe("error catalogue", () => {
  it("names every code AIGW_ + capitals, each with a meaning and what to do", () => {
    for (const [code, entry] of Object.entries(ERROR_CATALOGUE)) {
      expect(code).toMatch(/^AIGW_[A-Z0-9]+(?:_[A-Z0-9]+)*$/);
      expect(entry.meaning.length, code).toBeGreaterThan(10);
      expect(entry.fix.length, code).toBeGreaterThan(5);
    }
  });

  it("is the README's Errors table, row for row", () => {
    const section = README.slice(README.indexOf("## Errors"));
    const rows = [...section.matchAll(/^\| `(AIGW_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    expect(rows).toEqual(Object.keys(ERROR_CATALOGUE));
  });

  it("has no code that nothing uses", () => {
    const root = join(import.meta.dirname, "..", "..");
    const sources = ["common", "control-plane", "cli", "sidecar", "examples"]
      .flatMap((dir) =>
        readdirSync(join(root, dir), { recursive: true, encoding: "utf8" }).map((f) => join(root, dir, f)),
      )
      .filter((f) => f.endsWith(".ts") && !f.endsWith("common/errors.ts"))
      .map((f) => readFileSync(f, "utf8"))
      .join("\n");
    for (const code of Object.keys(ERROR_CATALOGUE)) expect(sources, code).toContain(`"${code}"`);
  });

  it("finds a code on an error or its causes", () => {
    const inner = new AigwError("AIGW_DESTINATION_REFUSED", "destination 10.0.0.5 is a private address");
    expect(errorCodeOf(inner)).toBe("AIGW_DESTINATION_REFUSED");
    expect(errorCodeOf(new Error("connect failed", { cause: inner }))).toBe("AIGW_DESTINATION_REFUSED");
    expect(errorCodeOf(Object.assign(new Error("x"), { code: "ECONNREFUSED" }))).toBeUndefined();
    expect(isErrorCode("AIGW_NOT_A_CODE")).toBe(false);
  });
});
