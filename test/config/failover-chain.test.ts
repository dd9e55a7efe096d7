import { describe, expect, it } from "vitest";
import { failoverChainProblem } from "../../control-plane/config/failover-chain.js";

describe("failoverChainProblem (one rule for config and Admin API)", () => {
  const of = (pairs: Record<string, string>) => new Map(Object.entries(pairs));

  it("accepts chains that end", () => {
    expect(failoverChainProblem("a", "", of({}))).toBeUndefined();
    expect(failoverChainProblem("a", "b", of({ a: "b", b: "" }))).toBeUndefined();
    expect(failoverChainProblem("a", "b", of({ a: "b", b: "c", c: "" }))).toBeUndefined();
    // The endpoint being created is not in the map yet.
    expect(failoverChainProblem("new", "b", of({ b: "c", c: "" }))).toBeUndefined();
  });

  it("names the chain of a cycle, of a chain into a cycle, and of a chain to a missing endpoint", () => {
    expect(failoverChainProblem("a", "a", of({ a: "a" }))).toBe("an endpoint cannot fail over to itself");
    expect(failoverChainProblem("a", "b", of({ a: "b", b: "a" }))).toBe("failover chain a → b → a is a cycle");
    expect(failoverChainProblem("new", "b", of({ b: "c", c: "new" }))).toBe(
      "failover chain new → b → c → new is a cycle",
    );
    expect(failoverChainProblem("x", "a", of({ a: "b", b: "a", x: "a" }))).toBe(
      "failover chain x → a → b → a is a cycle",
    );
    expect(failoverChainProblem("a", "zz", of({ a: "zz" }))).toBe('no endpoint named "zz"');
    expect(failoverChainProblem("a", "b", of({ a: "b", b: "gone" }))).toBe(
      'failover chain a → b → gone ends at "gone", which is not an endpoint',
    );
  });

  it("terminates on any map, in at most size + 2 steps", () => {
    // A long ring: every endpoint's chain is a cycle through all of them.
    const ring = new Map(Array.from({ length: 1000 }, (_, i) => [`e${i}`, `e${(i + 1) % 1000}`]));
    expect(failoverChainProblem("e0", "e1", ring)).toMatch(/^failover chain e0 → e1 → .* → e999 → e0 is a cycle$/);
  });
});
