import { describe, expect, it } from "vitest";
import { TokenRegistry, tokenDigest } from "../../control-plane/auth/token-registry.js";
import type { TokenRecord } from "../../control-plane/store/tokens.js";

// Who a bearer token is: the operator's tokens, the file's org tokens and those made at
// runtime; a revoked token is refused even where no operator token is set.

const stored = (over: Partial<TokenRecord> & { secret: string }): TokenRecord => ({
  id: over.id ?? "tok_1",
  digest: tokenDigest(over.secret),
  orgId: over.orgId ?? "acme",
  kind: over.kind ?? "admin",
  name: over.name ?? "",
  createdAt: 1,
  revokedAt: over.revokedAt ?? null,
});

function registry(operatorAdmin: string[], rows: TokenRecord[]) {
  const store = { listTokens: async () => rows };
  return new TokenRegistry({
    operatorAdminTokens: operatorAdmin,
    operatorSidecarTokens: ["op-side"],
    orgTokens: { globex: { adminTokens: ["globex-file"], sidecarTokens: [] } },
    store,
  });
}

describe("TokenRegistry", () => {
  it("tells the operator, an org's file token and a made token apart, by kind", async () => {
    const r = registry(
      ["op"],
      [stored({ secret: "made-acme", name: "ci" }), stored({ id: "tok_2", secret: "side", kind: "sidecar" })],
    );
    await r.refresh();
    expect(r.resolve("Bearer op", "admin")).toEqual({ principal: { scope: "operator" } });
    expect(r.resolve("Bearer globex-file", "admin")).toMatchObject({
      principal: { scope: "org", orgId: "globex", tokenId: "" },
    });
    expect(r.resolve("Bearer made-acme", "admin")).toMatchObject({
      principal: { scope: "org", orgId: "acme", tokenId: "tok_1", tokenName: "ci" },
    });
    expect(r.resolve("Bearer made-acme", "sidecar")).toEqual({
      refused: "token not accepted (an org admin token; sidecar tokens are asked for here)",
    });
    expect(r.resolve("Bearer side", "sidecar")).toMatchObject({ principal: { scope: "org", orgId: "acme" } });
    expect(r.resolve("Bearer op", "sidecar")).toEqual({ refused: "token not accepted" });
    expect(r.resolve("Bearer nobody", "admin")).toEqual({ refused: "token not accepted" });
    expect(r.resolve(undefined, "admin")).toEqual({ refused: "bearer token required" });
  });

  it("without operator tokens: no token is the operator, an org token still its org, a revoked one refused", async () => {
    const rows = [stored({ secret: "made-acme" })];
    const r = registry([], rows);
    await r.refresh();
    expect(r.resolve(undefined, "admin")).toEqual({ principal: { scope: "operator" } });
    expect(r.resolve("Bearer anything", "admin")).toEqual({ principal: { scope: "operator" } });
    expect(r.resolve("Bearer made-acme", "admin")).toMatchObject({ principal: { scope: "org", orgId: "acme" } });
    rows[0] = { ...(rows[0] as TokenRecord), revokedAt: 2 };
    await r.refresh();
    expect(r.resolve("Bearer made-acme", "admin")).toEqual({ refused: "token revoked" });
  });

  it("tells the streams of a token when it is revoked, and only those", async () => {
    const rows = [stored({ secret: "a" }), stored({ id: "tok_2", secret: "b" })];
    const r = registry(["op"], rows);
    await r.refresh();
    const a = r.resolve("Bearer a", "admin");
    const b = r.resolve("Bearer b", "admin");
    if (!("principal" in a) || !("principal" in b)) throw new Error("not resolved");
    const ended: string[] = [];
    r.watch(a.principal, () => ended.push("a"));
    const stopB = r.watch(b.principal, () => ended.push("b"));
    r.watch({ scope: "operator" }, () => ended.push("operator"));
    stopB();
    rows[0] = { ...(rows[0] as TokenRecord), revokedAt: 5 };
    rows[1] = { ...(rows[1] as TokenRecord), revokedAt: 5 };
    await r.refresh();
    expect(ended).toEqual(["a"]);
    expect(r.isValid(a.principal)).toBe(false);
  });

  it("keeps the last known tokens when the store cannot be read", async () => {
    let fail = false;
    const r = new TokenRegistry({
      operatorAdminTokens: ["op"],
      operatorSidecarTokens: [],
      orgTokens: {},
      store: {
        listTokens: async () => {
          if (fail) throw new Error("store away");
          return [stored({ secret: "made" })];
        },
      },
    });
    await r.refresh();
    fail = true;
    await r.refresh();
    expect(r.resolve("Bearer made", "admin")).toMatchObject({ principal: { orgId: "acme" } });
  });
});
