import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../cli/main.js";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { type RunningControlPlane, runControlPlane } from "../../control-plane/run.js";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { EventSchema } from "../../gen/aigw/v1/events_pb.js";

const YAML = `
budgets:
  - { org_id: org_file, limit_type: daily, budget_limit: 20 }
pricing:
  file-model:
    input: 4
    output: 8
`;

describe("budget and pricing Admin RPCs and CLI verbs", () => {
  let location: TestStoreLocation;
  let cp: RunningControlPlane;
  const now = { ms: Date.parse("2026-07-04T10:00:00Z") };

  const start = () =>
    runControlPlane({
      config: parseConfig(withStorageKey(YAML, location), { file: "admin.yaml", env: {} }),
      store: location.url,
      grpc: "127.0.0.1:0",
      http: "127.0.0.1:0",
      now: () => now.ms,
      logger: createLogger({ level: "silent" }),
    });
  // Connect JSON over HTTP/1.1, as a browser or curl would call it.
  const client = () =>
    createClient(
      AdminService,
      createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1", nodeOptions: { agent: false } }),
    );
  const aigw = async (...argv: string[]) => {
    let out = "";
    let err = "";
    const code = await main([...argv, "--admin", cp.httpUrl], {
      out: (s) => {
        out += s;
      },
      err: (s) => {
        err += s;
      },
      env: {},
    });
    return { code, out, err };
  };
  const rejection = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      const ce = ConnectError.from(err);
      return { code: ce.code, message: ce.rawMessage };
    }
    throw new Error("expected the call to fail");
  };

  beforeEach(async () => {
    location = await testStoreLocation();
    cp = await start();
  });
  afterEach(async () => {
    await cp.close();
    await location.cleanup();
  });

  it("SetBudget answers INVALID_ARGUMENT naming the field", async () => {
    const ok = { orgId: "org_x", limitType: "monthly", budgetLimit: 10, thresholds: [50, 80], enforce: false };
    const cases: [Record<string, unknown> | undefined, RegExp][] = [
      [undefined, /^budget: required/],
      [{ ...ok, orgId: "" }, /^budget\.org_id: required/],
      [{ ...ok, limitType: "" }, /^budget\.limit_type: required/],
      [{ ...ok, limitType: "weekly" }, /^budget\.limit_type: "weekly" is not daily or monthly/],
      [
        { ...ok, budgetLimit: 0 },
        /^budget\.budget_limit: must be a spend limit in USD above 0, at most 1000000000, got 0/,
      ],
      [{ ...ok, budgetLimit: -3 }, /^budget\.budget_limit:/],
      // The same ranges as the config file's budgets[].budget_limit.
      [
        { ...ok, budgetLimit: 1e15 },
        /^budget\.budget_limit: must be a spend limit in USD above 0, at most 1000000000, got 1000000000000000/,
      ],
      [{ ...ok, thresholds: [50, 80, 80] }, /^budget\.thresholds\[2\]: \(80\) must be above the threshold before it/],
      [{ ...ok, thresholds: [0, 50] }, /^budget\.thresholds\[0\]: must be a percentage from 1 to 100, got 0/],
      [{ ...ok, thresholds: [50, 101] }, /^budget\.thresholds\[1\]:/],
    ];
    for (const [budget, message] of cases) {
      const r = await rejection(client().setBudget(budget === undefined ? {} : { budget }));
      expect(r.code, JSON.stringify(budget)).toBe(Code.InvalidArgument);
      expect(r.message).toMatch(message);
    }
    // NaN and Infinity cannot be written in JSON; over gRPC they arrive as doubles.
    const grpc = createClient(
      AdminService,
      createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1", useBinaryFormat: true }),
    );
    const nan = await rejection(grpc.setBudget({ budget: { ...ok, budgetLimit: Number.NaN } }));
    expect(nan).toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(/^budget\.budget_limit:/) });

    const set = await client().setBudget({ budget: { orgId: "org_x", limitType: "monthly", budgetLimit: 10 } });
    expect(set.budget).toMatchObject({ thresholds: [50, 80, 90, 100], period: "2026-07", currentSpend: 0 });
  });

  it("DeleteBudget: NOT_FOUND when absent, INVALID_ARGUMENT on bad fields", async () => {
    expect(await rejection(client().deleteBudget({ orgId: "org_none", limitType: "daily" }))).toMatchObject({
      code: Code.NotFound,
      message: 'no daily budget for org "org_none"',
    });
    expect(await rejection(client().deleteBudget({ orgId: "", limitType: "daily" }))).toMatchObject({
      code: Code.InvalidArgument,
      message: expect.stringMatching(/^org_id: required/),
    });
    expect(await rejection(client().deleteBudget({ orgId: "org_file", limitType: "yearly" }))).toMatchObject({
      code: Code.InvalidArgument,
      message: expect.stringMatching(/^limit_type:/),
    });
    await client().deleteBudget({ orgId: "org_file", limitType: "daily" });
    expect((await client().listBudgets({})).budgets).toEqual([]);
  });

  it("SetModelPrice validates, prices the next event, and survives a restart under the file's entries", async () => {
    const bad: [Record<string, unknown> | undefined, RegExp][] = [
      [undefined, /^price: required/],
      [{ model: "", inputPerMillion: 1, outputPerMillion: 1 }, /^price\.model: required/],
      [
        { model: "m", inputPerMillion: -1, outputPerMillion: 1 },
        /^price\.input_per_million: must be USD per million tokens from 0 to 100000, got -1/,
      ],
      [{ model: "m", inputPerMillion: 1e308, outputPerMillion: 1 }, /^price\.input_per_million: .* got 1e\+308/],
      [{ model: "m", inputPerMillion: 1, outputPerMillion: -0.5 }, /^price\.output_per_million:/],
      [
        { model: "m", inputPerMillion: 1, outputPerMillion: 1, cachedInputPerMillion: -0.1 },
        /^price\.cached_input_per_million: must be USD per million tokens from 0 to 100000, got -0\.1/,
      ],
      [
        { model: "m", inputPerMillion: 1, outputPerMillion: 1, cacheWritePerMillion: 200_000 },
        /^price\.cache_write_per_million: .* got 200000/,
      ],
      [
        { model: "m", inputPerMillion: 1, outputPerMillion: 1, cacheWrite1hPerMillion: Number.NaN },
        /^price\.cache_write_1h_per_million:/,
      ],
    ];
    for (const [price, message] of bad) {
      const r = await rejection(client().setModelPrice(price === undefined ? {} : { price }));
      expect(r).toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(message) });
    }
    await client().setModelPrice({
      price: { model: "new-model", inputPerMillion: 10, outputPerMillion: 20, cachedInputPerMillion: 1 },
    });
    // A runtime change of a model the file prices lasts until the next start.
    await client().setModelPrice({ price: { model: "file-model", inputPerMillion: 1, outputPerMillion: 1 } });
    const event = create(EventSchema, {
      id: newEventId(),
      orgId: "org_file",
      time: timestampFromMs(now.ms),
      payload: {
        case: "completion",
        value: {
          requestId: newRequestId(),
          model: "new-model",
          promptTokens: 2000,
          cacheReadTokens: 1000,
          completionTokens: 1000,
        },
      },
    });
    await cp.deliverEvents([event]);
    const p = (await cp.store.readFeed(undefined, 10))[0]?.event.payload;
    // 1,000 uncached input at $10, 1,000 cached at $1, 1,000 output at $20 (per million).
    expect(p?.case === "completion" && p.value).toMatchObject({ costUsd: 0.031, pricingUnknown: false });
    expect((await client().listBudgets({})).budgets[0]).toMatchObject({ orgId: "org_file", currentSpend: 0.031 });

    await cp.close();
    cp = await start();
    const prices = new Map((await client().listPricing({})).prices.map((x) => [x.model, x]));
    expect(prices.get("new-model")).toMatchObject({
      inputPerMillion: 10,
      outputPerMillion: 20,
      cachedInputPerMillion: 1,
    });
    expect(prices.get("new-model")?.cacheWritePerMillion).toBeUndefined();
    expect(prices.get("file-model")).toMatchObject({ inputPerMillion: 4, outputPerMillion: 8 });
    expect(prices.get("gpt-4o")).toMatchObject({ inputPerMillion: 2.5, outputPerMillion: 10 });
  });

  it("aigw budgets and pricing verbs print tables and report errors", async () => {
    const set = await aigw(
      "budgets",
      "set",
      "org_cli",
      "--limit-type",
      "monthly",
      "--limit",
      "100",
      "--thresholds",
      "25,75",
      "--enforce",
    );
    expect(set.err).toBe("");
    expect(set.code).toBe(0);
    expect(set.out).toMatch(/^set monthly budget of org org_cli\n/);
    expect(set.out).toMatch(/^org_cli +monthly +2026-07 +\$0\.00 +\$100\.00 +0\.0% +25,75 +yes$/m);

    const list = await aigw("budgets", "list");
    expect(list.code).toBe(0);
    const lines = list.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ORG +TYPE +PERIOD +SPEND +LIMIT +USED +THRESHOLDS +ENFORCE$/);
    expect(lines.slice(1).map((l) => l.split(/ +/).slice(0, 2).join(" "))).toEqual([
      "org_cli monthly",
      "org_file daily",
    ]);
    expect(list.out).toMatch(/^org_file +daily +2026-07-04 +\$0\.00 +\$20\.00 +0\.0% +50,80,90,100 +no$/m);

    const json = await aigw("budgets", "list", "--json");
    expect(JSON.parse(json.out).budgets).toHaveLength(2);

    expect(await aigw("budgets", "delete", "org_cli", "--limit-type", "monthly")).toEqual({
      code: 0,
      out: "deleted monthly budget of org org_cli\n",
      err: "",
    });
    const missing = await aigw("budgets", "delete", "org_cli", "--limit-type", "monthly");
    expect(missing).toMatchObject({ code: 1, err: 'aigw: not_found: no monthly budget for org "org_cli"\n' });
    const badType = await aigw("budgets", "set", "org_cli", "--limit-type", "weekly", "--limit", "5");
    // Refused before the call, as a usage error naming the flag.
    expect(badType.code).toBe(2);
    expect(badType.err).toMatch(/--limit-type: must be daily or monthly, got "weekly"/);
    const badLimit = await aigw("budgets", "set", "org_cli", "--limit-type", "daily", "--limit", "lots");
    expect(badLimit.code).toBe(2);
    expect(badLimit.err).toMatch(/--limit: must be an amount in USD/);
    expect((await aigw("budgets", "set", "org_cli", "--limit", "5")).err).toMatch(/--limit-type is required/);

    const price = await aigw("pricing", "set", "my-model", "--input", "0.15", "--output", "0.6");
    expect(price).toEqual({
      code: 0,
      out: "set price of my-model: input $0.15, output $0.60 per million tokens\n",
      err: "",
    });
    const cached = await aigw(
      "pricing",
      "set",
      "my-claude",
      "--input",
      "3",
      "--output",
      "15",
      "--cached-input",
      "0.3",
      "--cache-write",
      "3.75",
      "--cache-write-1h",
      "6",
    );
    expect(cached).toEqual({
      code: 0,
      out: "set price of my-claude: input $3.00, cached input $0.30, cache write $3.75, 1-hour cache write $6.00, output $15.00 per million tokens\n",
      err: "",
    });
    const prices = await aigw("pricing", "list");
    expect(prices.out).toMatch(/^MODEL +INPUT \$\/1M +CACHED INPUT +CACHE WRITE +CACHE WRITE 1H +OUTPUT \$\/1M$/m);
    expect(prices.out).toMatch(/^my-model +0\.15 +- +- +- +0\.60$/m);
    expect(prices.out).toMatch(/^my-claude +3\.00 +0\.30 +3\.75 +6\.00 +15\.00$/m);
    expect(prices.out).toMatch(/^file-model +4\.00 +- +- +- +8\.00$/m);
    expect(prices.out).toMatch(/^gpt-4o +2\.50 +1\.25 +- +- +10\.00$/m);
    expect((await aigw("pricing", "set", "m", "--input", "-1", "--output", "1")).code).toBe(2);
    const badCached = await aigw("pricing", "set", "m", "--input", "1", "--output", "1", "--cached-input", "cheap");
    expect(badCached).toMatchObject({ code: 2 });
    expect(badCached.err).toMatch(/--cached-input: must be an amount in USD/);
  });
});
