import { afterEach, describe, expect, it } from "vitest";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import { main } from "../../cli/main.js";
import { TEST_SECRET } from "../support/stack.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";

const YAML = `
webhooks:
  primary:
    url: "https://hooks.example.com/primary"
    secret: "${TEST_SECRET}"
events:
  subscribe: ["completion", "error"]
`;

// The CLI's filter flags and `subscription` verbs against a real control plane.
describe("aigw endpoints/subscription filter flags", () => {
  let fx: ControlPlaneFixture | undefined;
  afterEach(async () => {
    await fx?.close();
    fx = undefined;
  });

  async function aigw(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const code = await main([...argv, "--admin", fx?.cp.httpUrl ?? ""], {
      out: (s) => {
        out += s;
      },
      err: (s) => {
        err += s;
      },
      env: {},
    });
    return { code, out, err };
  }

  it("creates and updates endpoint filters, changing only the flags given", async () => {
    fx = await startControlPlane(YAML);
    const created = await aigw(
      "endpoints",
      "create",
      "orders",
      "--url",
      "https://hooks.example.com/orders",
      "--secret",
      TEST_SECRET,
      "--models",
      "gpt-4,gpt-4-turbo",
      "--min-tokens",
      "100",
      "--severity",
      "error,critical",
    );
    expect(created.code, created.err).toBe(0);
    expect(created.out).toMatch(/filters:\s+models gpt-4,gpt-4-turbo; min tokens 100; severity error,critical/);

    const updated = await aigw("endpoints", "update", "orders", "--min-tokens", "500");
    expect(updated.code, updated.err).toBe(0);
    const got = await fx.admin.getEndpoint({ name: "orders" });
    expect(got.endpoint?.filters).toMatchObject({
      completionModels: ["gpt-4", "gpt-4-turbo"],
      completionMinTokens: 500,
      errorSeverities: ["error", "critical"],
    });
    // "" clears a list.
    expect((await aigw("endpoints", "update", "orders", "--models", "")).code).toBe(0);
    expect((await fx.admin.getEndpoint({ name: "orders" })).endpoint?.filters?.completionModels).toEqual([]);

    // A severity that does not exist is a mistake in the command line (exit 2), caught
    // before any request.
    const bad = await aigw("endpoints", "update", "orders", "--severity", "error,loud");
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^aigw endpoints update: --severity: must be warning, error or critical, got "loud"\n/);
    expect((await fx.admin.getEndpoint({ name: "orders" })).endpoint?.filters?.errorSeverities).toEqual([
      "error",
      "critical",
    ]);
  });

  it("gets and sets the global subscription", async () => {
    fx = await startControlPlane(YAML);
    const shown = await aigw("subscription", "get");
    expect(shown.out).toMatch(/events:\s+completion,error\nfilters:\s+none/);

    const set = await aigw("subscription", "set", "--events", "completion,rate_limit", "--min-tokens", "50");
    expect(set.code, set.err).toBe(0);
    expect(set.out).toMatch(/until the control plane restarts/);
    const severity = await aigw("subscription", "set", "--severity", "critical");
    expect(severity.code, severity.err).toBe(0);
    const now = await fx.admin.getSubscription({});
    expect(now.subscribe).toEqual([EventType.COMPLETION, EventType.RATE_LIMIT]);
    expect(now.filters).toMatchObject({ completionMinTokens: 50, errorSeverities: ["critical"] });

    const nothing = await aigw("subscription", "set");
    expect(nothing.code).toBe(2);
    expect(nothing.err).toMatch(/nothing to change/);
    const both = await aigw("keys", "rotate", "primary", "--org", "o");
    expect(both.code).toBe(2);
    expect(both.err).toMatch(/give an ENDPOINT or --org ORG/);
  });
});
