import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../cli/main.js";
import { type AdminFixture, openAdminFixture, SECRET_A } from "./fixture.js";
import { claimDue } from "../support/claims.js";

const TOKEN = "admin-token-for-tests";

interface Run {
  code: number;
  out: string;
  err: string;
}

describe("aigw admin verbs against a real Admin API server", () => {
  let f: AdminFixture;
  let server: http.Server;
  let url: string;

  async function serve(interceptors: Interceptor[] = []): Promise<void> {
    server = http.createServer(connectNodeAdapter({ routes: f.routes, interceptors }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async function aigw(argv: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
    let out = "";
    let err = "";
    const code = await main(argv, {
      out: (s) => {
        out += s;
      },
      err: (s) => {
        err += s;
      },
      env: { AIGW_ADMIN_URL: url, ...env },
    });
    return { code, out, err };
  }

  beforeEach(async () => {
    f = await openAdminFixture();
  });
  afterEach(async () => {
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
    }
    await f.close();
  });

  it("creates, lists, updates and deletes an endpoint", async () => {
    await serve();
    const empty = await aigw(["endpoints", "list", "--admin", url], { AIGW_ADMIN_URL: undefined });
    expect(empty).toEqual({ code: 0, out: "no endpoints\n", err: "" });

    const created = await aigw([
      "endpoints",
      "create",
      "primary",
      "--url",
      "https://api.example.com/webhooks/ai",
      "--secret",
      SECRET_A,
      "--events",
      "completion,error",
    ]);
    expect(created.err).toBe("");
    expect(created.code).toBe(0);
    expect(created.out).toMatch(/^created endpoint primary\n/);
    expect(created.out).toMatch(/^url: +https:\/\/api\.example\.com\/webhooks\/ai$/m);
    expect(created.out).toMatch(/^events: +completion,error$/m);
    expect(created.out).not.toContain(SECRET_A);

    const list = await aigw(["endpoints", "list"]);
    expect(list.code).toBe(0);
    const lines = list.out.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^NAME +ORG +URL +STATE +EVENTS +FAILOVER +KEYS$/);
    expect(lines[1]).toMatch(
      /^primary +- \(operator\) +https:\/\/api\.example\.com\/webhooks\/ai +enabled +completion,error +- +1$/,
    );
    // Columns line up: each header starts where its cells start.
    expect(lines[1]!.indexOf("https://")).toBe(lines[0]!.indexOf("URL"));
    expect(lines[1]!.indexOf("completion")).toBe(lines[0]!.indexOf("EVENTS"));

    const json = await aigw(["endpoints", "list", "--json"]);
    const parsed = JSON.parse(json.out) as { endpoints: Record<string, unknown>[] };
    expect(parsed.endpoints).toHaveLength(1);
    expect(parsed.endpoints[0]).toMatchObject({
      name: "primary",
      enabled: true,
      eventTypes: ["EVENT_TYPE_COMPLETION", "EVENT_TYPE_ERROR"],
      signingKeyCount: 1,
      // Zero values are printed too, not left out as proto3 JSON would.
      paused: false,
      failoverTo: "",
      orgId: "",
      apps: [],
    });
    // A listed endpoint never carries its secret (the field is there, empty).
    expect(parsed.endpoints[0]?.secret ?? "").toBe("");

    const updated = await aigw(["endpoints", "update", "primary", "--enabled", "false", "--events", "streaming"]);
    expect(updated.code).toBe(0);
    expect(updated.out).toMatch(/^updated endpoint primary \(enabled, event_types\)\n/);
    expect(updated.out).toMatch(/^state: +disabled$/m);
    expect(updated.out).toMatch(/^url: +https:\/\/api\.example\.com\/webhooks\/ai$/m);
    const got = await aigw(["endpoints", "get", "primary"]);
    expect(got.out).toMatch(/^events: +streaming$/m);

    const deleted = await aigw(["endpoints", "delete", "primary"]);
    expect(deleted).toEqual({ code: 0, out: "deleted endpoint primary\n", err: "" });
    expect((await aigw(["endpoints", "list"])).out).toBe("no endpoints\n");
  });

  it("names per org: the operator's second endpoint of a name is ORG/NAME, and ORG/NAME finds either", async () => {
    await serve();
    const make = (org: string) =>
      aigw([
        "endpoints",
        "create",
        "billing",
        "--url",
        `https://${org}.example.com/h`,
        "--secret",
        SECRET_A,
        "--org",
        org,
      ]);
    expect((await make("acme")).out).toMatch(/^created endpoint billing\n/);
    const second = await make("globex");
    expect(second.err).toBe("");
    expect(second.out).toMatch(/^created endpoint globex\/billing\n/);
    expect((await make("globex")).err).toContain('endpoint "billing" already exists');
    const listed = (await aigw(["endpoints", "list", "--org", "globex"])).out.trimEnd().split("\n");
    expect(listed[1]).toMatch(/^globex\/billing +globex +https:\/\/globex\.example\.com\/h /);
    expect((await aigw(["endpoints", "get", "acme/billing"])).out).toMatch(/^url: +https:\/\/acme\.example\.com\/h$/m);
    expect((await aigw(["endpoints", "get", "globex/billing"])).out).toMatch(
      /^url: +https:\/\/globex\.example\.com\/h$/m,
    );
    expect(await aigw(["endpoints", "delete", "globex/billing"])).toEqual({
      code: 0,
      out: "deleted endpoint globex/billing\n",
      err: "",
    });
    expect((await aigw(["endpoints", "get", "billing"])).out).toMatch(/^org: +acme$/m);
  });

  it("prints API errors as aigw: [AIGW_CODE (]<code>[)]: <message> and exits 1", async () => {
    await serve();
    const missing = await aigw(["endpoints", "get", "nope"]);
    expect(missing).toEqual({ code: 1, out: "", err: 'aigw: not_found: endpoint "nope" not found\n' });
    const bad = await aigw(["endpoints", "create", "x", "--url", "http://hooks.example.com/", "--secret", "s"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(
      /^aigw: AIGW_DESTINATION_HTTPS_REQUIRED \(invalid_argument\): endpoint\.url: uses http:\/\/ but security\.require_https is true; /,
    );
    const down = await aigw(["stats", "--admin", "http://127.0.0.1:1"]);
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/^aigw: unavailable: /);
  });

  it("exits 2 for unknown verbs, flags and bad values, naming the flag, with only that verb's usage", async () => {
    await serve();
    const cases: [string[], string, string][] = [
      // argv, the error line, the first usage line printed after it
      [
        ["endpoints", "frobnicate"],
        'aigw endpoints: unknown verb "frobnicate", expected one of list, get, create, update, pause, resume, disable, enable, delete',
        "aigw endpoints list",
      ],
      [["endpoints", "lsit"], 'aigw endpoints: unknown verb "lsit" (did you mean list?)', "aigw endpoints list"],
      [
        ["endpoints"],
        "aigw endpoints: missing verb, one of list, get, create, update, pause, resume, disable, enable, delete",
        "aigw endpoints list",
      ],
      [["endpoints", "list", "--colour"], "aigw endpoints list: unknown flag --colour", "aigw endpoints list"],
      [["endpoints", "get"], "aigw endpoints get: missing NAME", "aigw endpoints get NAME"],
      [["endpoints", "get", "a", "b"], 'aigw endpoints get: unexpected argument "b"', "aigw endpoints get NAME"],
      [
        ["endpoints", "create", "x", "--url", "https://a.example.com/"],
        "aigw endpoints create: --secret is required",
        "aigw endpoints create NAME --url URL --secret S",
      ],
      [
        ["endpoints", "create", "x", "--url", "--secret", "s"],
        "aigw endpoints create: --url needs a value (URL)",
        "aigw endpoints create NAME",
      ],
      [
        ["endpoints", "create", "x", "--scret", "s"],
        "aigw endpoints create: unknown flag --scret (did you mean --secret?)",
        "aigw endpoints create NAME",
      ],
      [
        ["endpoints", "create", "x", "--url", "https://a/", "--url", "https://b/", "--secret", "s"],
        "aigw endpoints create: --url given twice",
        "aigw endpoints create NAME",
      ],
      [["endpoints", "update", "x"], "aigw endpoints update: nothing to change", "aigw endpoints update NAME"],
      [
        ["endpoints", "update", "x", "--enabled", "maybe"],
        'aigw endpoints update: --enabled: must be true or false, got "maybe"',
        "aigw endpoints update NAME",
      ],
      [
        ["endpoints", "create", "x", "--url", "https://a/", "--secret", "s", "--events", "completion,typo"],
        'aigw endpoints create: --events: unknown event type "typo"',
        "aigw endpoints create NAME",
      ],
      [
        ["deliveries", "list", "--status", "lost"],
        'aigw deliveries list: --status: must be one of pending, delivered, failed, dead_lettered, got "lost"',
        "aigw deliveries list [--endpoint E]",
      ],
      [
        ["deliveries", "list", "--limit", "ten"],
        'aigw deliveries list: --limit: must be a whole number from 1 to 1000, got "ten"',
        "aigw deliveries list",
      ],
      [
        ["deliveries", "replay"],
        "aigw deliveries replay: missing ID (or --since D, or --dead-lettered)",
        "aigw deliveries replay ID",
      ],
      [
        ["deliveries", "list", "--limit", "100000"],
        'aigw deliveries list: --limit: must be a whole number from 1 to 1000, got "100000"',
        "aigw deliveries list",
      ],
      [
        ["deliveries", "list", "--limit", "-1"],
        'aigw deliveries list: --limit: must be a whole number from 1 to 1000, got "-1"',
        "aigw deliveries list",
      ],
      [
        ["deliveries", "replay", "--since", "1h", "--dead-lettered"],
        "aigw deliveries replay: --dead-lettered replays every dead letter",
        "aigw deliveries replay ID",
      ],
      [
        ["budgets", "set", "acme", "--limit-type", "weekly", "--limit", "5"],
        'aigw budgets set: --limit-type: must be daily or monthly, got "weekly"',
        "aigw budgets set ORG",
      ],
      [
        ["budgets", "delete", "acme", "--limit-type", "yearly"],
        'aigw budgets delete: --limit-type: must be daily or monthly, got "yearly"',
        "aigw budgets delete ORG",
      ],
      [
        ["endpoints", "create", "x", "--url", "https://a/", "--secret", "s", "--severity", "loud"],
        'aigw endpoints create: --severity: must be warning, error or critical, got "loud"',
        "aigw endpoints create NAME",
      ],
      [
        ["pricing", "set", "m", "--input", "-1", "--output", "1"],
        'aigw pricing set: --input: must be an amount in USD such as 100 or 0.15, got "-1"',
        "aigw pricing set MODEL",
      ],
      [["stats", "--window-seconds"], "aigw stats: --window-seconds needs a value (N)", "aigw stats"],
      [["stats", "--json=yes"], "aigw stats: --json takes no value", "aigw stats"],
      [["stats", "--admin", "ftp://x"], 'aigw stats: --admin: "ftp://x" is not an http(s) URL', "aigw stats"],
      [["watch", "--events", "bogus"], 'aigw watch: --events: unknown event type "bogus"', "aigw watch"],
      [
        ["sidecar", "--control-plane", "http://127.0.0.1:1", "--app", "aigw-test"],
        'aigw sidecar: --app: "aigw-test" is the app of test events',
        "aigw sidecar",
      ],
      [
        ["watch", "--since", "yesterday"],
        'aigw watch: --since: "yesterday" is not a duration (for example 500ms, 10s, 2m, 1h, 7d), nor a cursor',
        "aigw watch",
      ],
    ];
    for (const [argv, message, usageLine] of cases) {
      const r = await aigw(argv);
      const what = argv.join(" ");
      expect(r.code, what).toBe(2);
      expect(r.out, what).toBe("");
      const lines = r.err.split("\n");
      expect(lines[0], what).toContain(message);
      expect(lines[1], what).toBe("Usage:");
      expect(lines[2]?.trimStart(), what).toMatch(new RegExp(`^${usageLine.replace(/[[\]]/g, "\\$&")}`));
      // Only that verb's usage (or its group's): never the whole command list.
      expect(r.err, what).not.toContain("aigw control-plane");
      expect(r.err.trimEnd().split("\n").at(-1), what).toMatch(/^Run "aigw [a-z -]+--help" for details\.$/);
    }
    const unknown = await aigw(["nonsense"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/^aigw: unknown command "nonsense"\nCommands: control-plane, sidecar, /);
  });

  it("prints help per verb and per group", async () => {
    await serve();
    const create = await aigw(["endpoints", "create", "--help"]);
    expect(create.code).toBe(0);
    expect(create.err).toBe("");
    expect(create.out).toMatch(/^aigw endpoints create — /);
    expect(create.out).toMatch(/^ {2}aigw endpoints create NAME --url URL --secret S \[--org ORG\] \[--app APP …\]/m);
    expect(create.out).toMatch(/^ {2}--url URL +where webhooks are POSTed \(required\)$/m);
    expect(create.out).toMatch(/^Admin API flags:\n {2}--admin URL /m);
    expect(create.out).toMatch(/^ {2}-h, --help +this help$/m);
    // -h anywhere, even after a mistake, is help.
    expect((await aigw(["endpoints", "create", "--bogus", "-h"])).out).toBe(create.out);

    const group = await aigw(["endpoints", "--help"]);
    expect(group.code).toBe(0);
    for (const verb of [
      "list",
      "get NAME",
      "create NAME",
      "update NAME",
      "pause NAME",
      "resume NAME",
      "disable NAME [--reason TEXT]",
      "enable NAME",
      "delete NAME",
    ]) {
      expect(group.out).toContain(`  aigw endpoints ${verb}`);
    }
    expect(group.out).toContain('Run "aigw endpoints VERB --help"');

    const replay = await aigw(["deliveries", "replay", "--help"]);
    expect(replay.out).toContain(
      "  aigw deliveries replay ID\n  aigw deliveries replay --since D|TIME [--until D|TIME] [--endpoint E]\n",
    );
    const stats = await aigw(["stats", "--help"]);
    expect(stats.out).toMatch(/^ {2}--window-seconds N +the window/m);
  });

  it("sends the admin token from --token or AIGW_ADMIN_TOKEN", async () => {
    const requireToken: Interceptor = (next) => async (req) => {
      if (req.header.get("authorization") !== `Bearer ${TOKEN}`) {
        throw new ConnectError("admin token required", Code.Unauthenticated);
      }
      return next(req);
    };
    await serve([requireToken]);
    const none = await aigw(["endpoints", "list"]);
    expect(none).toEqual({ code: 1, out: "", err: "aigw: unauthenticated: admin token required\n" });
    expect((await aigw(["endpoints", "list", "--token", TOKEN])).code).toBe(0);
    expect((await aigw(["endpoints", "list"], { AIGW_ADMIN_TOKEN: TOKEN })).out).toBe("no endpoints\n");
  });

  it("sends a test event, lists, shows and replays deliveries, rotates keys and shows stats", async () => {
    await serve();
    for (const name of ["alpha", "beta"]) {
      const r = await aigw([
        "endpoints",
        "create",
        name,
        "--url",
        `https://${name}.example.com/h`,
        "--secret",
        SECRET_A,
      ]);
      expect(r.code).toBe(0);
    }
    const sent = await aigw(["send-test", "--endpoint", "beta", "--event", "error"]);
    expect(sent.code).toBe(0);
    const [, eventId, deliveryId] = /^sent test error event (evt_\w+)\ndeliveries: (dlv_\w+)\n$/.exec(sent.out) ?? [];
    expect(eventId).toBeDefined();

    // Fail the delivery for good through the store, as a worker would.
    const [claimed] = await claimDue(f.store, { now: Date.now() + 1000, leaseOwner: "w", leaseMs: 60_000 });
    expect(claimed?.id).toBe(deliveryId);
    await f.store.completeAttempt(
      claimed!,
      { startedAt: Date.now(), statusCode: 503, latencyMs: 12, error: "HTTP 503", responseBody: "busy" },
      { status: "dead_lettered" },
    );

    const list = await aigw(["deliveries", "list", "--endpoint", "beta"]);
    expect(list.code).toBe(0);
    const rows = list.out.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^ID +ENDPOINT +EVENT +TYPE +STATUS +ATTEMPTS +LAST ERROR$/);
    expect(rows[1]).toMatch(new RegExp(`^${deliveryId} +beta +${eventId} +error +dead_lettered +1 +HTTP 503$`));

    const show = await aigw(["deliveries", "show", deliveryId!]);
    expect(show.code).toBe(0);
    expect(show.out).toMatch(/^status: +dead_lettered$/m);
    expect(show.out).toMatch(
      /^attempts:\n {2}# +STARTED +STATUS +LATENCY +ERROR +RESPONSE\n {2}1 +\S+ +503 +12 ms +HTTP 503 +busy$/m,
    );
    const body = JSON.parse(show.out.slice(show.out.indexOf("body:\n") + 6)) as Record<string, unknown>;
    expect(body).toMatchObject({ event: "error", id: eventId, org_id: "test", app: "aigw-test" });

    const replay = await aigw(["deliveries", "replay", deliveryId!]);
    expect(replay.out).toMatch(new RegExp(`^replayed ${deliveryId} as dlv_\\w+ to beta\\n$`));
    const bulk = await aigw(["deliveries", "replay", "--dead-lettered", "--endpoint", "beta"]);
    expect(bulk.out).toBe("replayed 0 dead-lettered deliveries of beta\n");
    const pending = await aigw(["deliveries", "list", "--status", "pending", "--limit", "1", "--json"]);
    const page = JSON.parse(pending.out) as { deliveries: { originDeliveryId: string; status: string }[] };
    expect(page.deliveries).toEqual([
      expect.objectContaining({ originDeliveryId: deliveryId, status: "DELIVERY_STATUS_PENDING" }),
    ]);

    const rotated = await aigw(["keys", "rotate", "alpha", "--overlap-seconds", "60"]);
    expect(rotated.code).toBe(0);
    expect(rotated.out).toMatch(/^new signing secret for alpha \(shown only this once\):\nwhsec_[A-Za-z0-9+/]{43}=\n/);
    expect((await aigw(["endpoints", "get", "alpha"])).out).toMatch(/^signing keys: +2$/m);

    const stats = await aigw(["stats", "--window-seconds", "600"]);
    expect(stats.code).toBe(0);
    const statLines = stats.out.split("\n");
    expect(statLines[0]).toMatch(/^ENDPOINT +DELIVERED +FAILED +DEAD +PENDING +SUCCESS +P50 +P99 +CIRCUIT$/);
    expect(statLines.find((l) => l.startsWith("beta"))).toMatch(/^beta +0 +0 +1 +1 +0\.0% +12 ms +12 ms +closed$/);
    // alpha has nothing finished: no success rate rather than 100%.
    expect(statLines.find((l) => l.startsWith("alpha"))).toMatch(/^alpha +0 +0 +0 +0 +- +0 ms +0 ms +closed$/);
    expect(stats.out).toContain("beta failures: HTTP 503 ×1\n");
    expect(stats.out).toContain("events ingested in the last 600 s: 1\n");
  });
});
