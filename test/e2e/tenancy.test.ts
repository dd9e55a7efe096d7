import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMockProvider } from "../../examples/mock-provider.js";
import { type AigwProcess, runAigw } from "../support/processes.js";
import { TEST_SECRET } from "../support/stack.js";
import { type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { waitFor } from "../support/wait.js";
import { startTestReceiver, type TestReceiver } from "../support/webhook-receiver.js";

// Two orgs behind one control plane, every part a real process: the control plane, sidecars
// with their own org sidecar tokens made by `aigw tokens create`, the CLI with org admin
// tokens. After traffic from both orgs each org's endpoint holds exactly its org's (and
// app's) events and the operator's endpoint all of them; an org token cannot see or change
// the other org's objects; a sidecar presenting one org's token as another org is refused
// and keeps serving; a revoked token stops an open `aigw watch` and an open ingest stream.

const OPERATOR = "operator-admin-token-e2e";
const OPERATOR_SIDECAR = "operator-sidecar-token-e2e";

describe("several orgs, end to end", () => {
  let dir: string;
  let location: TestStoreLocation;
  let provider: Awaited<ReturnType<typeof startMockProvider>>;
  const receivers: Record<string, TestReceiver> = {};
  let cp: AigwProcess;
  const processes: AigwProcess[] = [];
  let httpUrl: string;
  let grpcUrl: string;

  const cli = async (args: string[], token = OPERATOR) => {
    const p = runAigw([...args, "--admin", httpUrl, "--token", token]);
    processes.push(p);
    const code = await p.exited;
    return { code, out: p.lines.join("\n"), err: p.stderr() };
  };
  const cliJson = async (args: string[], token = OPERATOR) => {
    const r = await cli([...args, "--json"], token);
    expect(r.code, r.err).toBe(0);
    return JSON.parse(r.out) as Record<string, unknown>;
  };
  const sidecar = async (org: string, app: string, token: string) => {
    const p = runAigw([
      "sidecar",
      "--admin-listen",
      "127.0.0.1:0",
      "--control-plane",
      grpcUrl,
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      provider.url,
      "--org",
      org,
      "--app",
      app,
      "--token",
      token,
      "--spool",
      join(dir, `spool-${org}-${app}-${processes.length}`),
    ]);
    processes.push(p);
    const ready = await p.waitForLog("sidecar ready");
    return { process: p, url: String(ready.url) };
  };
  const call = async (sidecarUrl: string): Promise<string> => {
    const res = await fetch(`${sidecarUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test" },
      body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(200);
    await res.json();
    return res.headers.get("x-aigw-request-id") as string;
  };
  const requestIds = (r: TestReceiver) =>
    r
      .accepted()
      .filter((w) => w.body.event === "completion")
      .map((w) => String(w.body.request_id))
      .sort();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-tenancy-"));
    location = await testStoreLocation();
    provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
    for (const name of ["ops", "acme", "globex"]) receivers[name] = await startTestReceiver({ secret: TEST_SECRET });
    const configPath = join(dir, "config.yaml");
    writeFileSync(
      configPath,
      withStorageKey(
        `
webhooks:
  ops:
    url: "${receivers.ops?.url}"
    secret: "${TEST_SECRET}"
  acme-hook:
    url: "${receivers.acme?.url}"
    secret: "${TEST_SECRET}"
    org_id: acme
events:
  subscribe: ["completion", "error", "streaming", "budget", "rate_limit"]
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
auth:
  admin_tokens: ["${OPERATOR}"]
  sidecar_tokens: ["${OPERATOR_SIDECAR}"]
`,
        location,
      ),
    );
    cp = runAigw([
      "control-plane",
      "--config",
      configPath,
      "--store",
      location.url,
      "--grpc",
      "127.0.0.1:0",
      "--http",
      "127.0.0.1:0",
    ]);
    processes.push(cp);
    const ready = await cp.waitForLog("control plane ready");
    grpcUrl = String(ready.grpc);
    httpUrl = String(ready.http);
  }, 60_000);

  afterAll(async () => {
    for (const p of processes) p.child.kill("SIGKILL");
    await Promise.all(processes.map((p) => p.exited));
    await provider?.close();
    for (const r of Object.values(receivers)) await r.close();
    await location?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("routes each org's events to its endpoints only, and scopes tokens", { timeout: 240_000 }, async () => {
    // The operator makes the org's endpoint (limited to one app) and the orgs' tokens with the CLI.
    const created = await cli([
      "endpoints",
      "create",
      "globex-chat",
      "--url",
      receivers.globex?.url ?? "",
      "--secret",
      TEST_SECRET,
      "--org",
      "globex",
      "--app",
      "chat",
    ]);
    expect(created.code, created.err).toBe(0);
    expect(created.out).toMatch(/org:\s+globex/);
    const token = async (org: string, kind: string) => {
      const res = await cliJson(["tokens", "create", "--org", org, "--kind", kind, "--name", `${org}-${kind}`]);
      return { id: String((res.token as Record<string, unknown>).id), secret: String(res.secret) };
    };
    const acmeSidecar = await token("acme", "sidecar");
    const globexSidecar = await token("globex", "sidecar");
    const globexAdmin = await token("globex", "admin");
    const acmeAdmin = await token("acme", "admin");
    const listed = await cliJson(["tokens", "list"]);
    expect((listed.tokens as unknown[]).length).toBe(4);
    expect(JSON.stringify(listed)).not.toContain(acmeSidecar.secret);

    // Org admin tokens see their org only.
    expect((await cli(["whoami"], globexAdmin.secret)).out).toMatch(/org:\s+globex/);
    expect((await cli(["whoami"])).out).toContain("operator: every org");
    const globexEndpoints = await cliJson(["endpoints", "list"], globexAdmin.secret);
    expect((globexEndpoints.endpoints as { name: string }[]).map((e) => e.name)).toEqual(["globex-chat"]);
    for (const args of [
      ["endpoints", "get", "acme-hook"],
      ["endpoints", "update", "acme-hook", "--enabled", "false"],
      ["endpoints", "delete", "acme-hook"],
    ]) {
      const r = await cli(args, globexAdmin.secret);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.err, args.join(" ")).toContain('endpoint "acme-hook" not found');
    }
    // Names are per org: each org makes its own "shared"; the operator sees globex's as globex/shared.
    for (const t of [acmeAdmin, globexAdmin]) {
      const made = await cli(
        [
          "endpoints",
          "create",
          "shared",
          "--url",
          receivers.ops?.url ?? "",
          "--secret",
          TEST_SECRET,
          "--events",
          "budget",
        ],
        t.secret,
      );
      expect(made.code, made.err).toBe(0);
      expect(made.out).toMatch(/^created endpoint shared$/m);
    }
    expect((await cli(["endpoints", "get", "globex/shared"])).out).toMatch(/org:\s+globex/);
    expect((await cli(["endpoints", "get", "shared"], globexAdmin.secret)).out).toMatch(/org:\s+globex/);
    for (const t of [acmeAdmin, globexAdmin])
      expect((await cli(["endpoints", "delete", "shared"], t.secret)).code).toBe(0);
    const denied = await cli(["tokens", "list"], globexAdmin.secret);
    expect(denied.code).toBe(1);
    expect(denied.err).toContain("AIGW_PERMISSION_DENIED");

    // `aigw watch` with each org's admin token, open before the traffic.
    const watch = (t: string) => {
      const p = runAigw(["watch", "--json", "--events", "completion", "--admin", httpUrl, "--token", t]);
      processes.push(p);
      return p;
    };
    const acmeWatch = watch(acmeAdmin.secret);
    const globexWatch = watch(globexAdmin.secret);

    // Three apps on two orgs, each sidecar with its org's own token.
    const acmeChat = await sidecar("acme", "chat", acmeSidecar.secret);
    const globexChat = await sidecar("globex", "chat", globexSidecar.secret);
    const globexBatch = await sidecar("globex", "batch", globexSidecar.secret);
    // The watchers are live once the first event of their org reaches them: send until then.
    const sent: Record<string, string[]> = { acme: [], globexChat: [], globexBatch: [] };
    await waitFor(
      "both watchers live",
      async () => {
        sent.acme?.push(await call(acmeChat.url));
        sent.globexChat?.push(await call(globexChat.url));
        return (
          acmeWatch.lines.some((l) => l.includes('"completion"')) &&
          globexWatch.lines.some((l) => l.includes('"completion"'))
        );
      },
      60_000,
    );
    for (let i = 0; i < 3; i++) {
      sent.acme?.push(await call(acmeChat.url));
      sent.globexChat?.push(await call(globexChat.url));
      sent.globexBatch?.push(await call(globexBatch.url));
    }
    const all = [...(sent.acme ?? []), ...(sent.globexChat ?? []), ...(sent.globexBatch ?? [])].sort();
    await waitFor(
      "every event at the operator's endpoint",
      () => requestIds(receivers.ops as TestReceiver).length >= all.length,
      60_000,
    );
    await waitFor(
      "acme's events at acme's endpoint",
      () => requestIds(receivers.acme as TestReceiver).length >= (sent.acme?.length ?? 0),
    );
    await waitFor(
      "globex chat's events at globex-chat",
      () => requestIds(receivers.globex as TestReceiver).length >= (sent.globexChat?.length ?? 0),
    );
    expect(requestIds(receivers.ops as TestReceiver)).toEqual(all);
    expect(requestIds(receivers.acme as TestReceiver)).toEqual([...(sent.acme ?? [])].sort());
    expect(requestIds(receivers.globex as TestReceiver)).toEqual([...(sent.globexChat ?? [])].sort());
    for (const w of receivers.acme?.accepted() ?? []) expect(w.body.org_id).toBe("acme");
    for (const w of receivers.globex?.accepted() ?? []) expect([w.body.org_id, w.body.app]).toEqual(["globex", "chat"]);

    // Deliveries and the feed, per org.
    const globexDeliveries = await cliJson(["deliveries", "list", "--limit", "1000"], globexAdmin.secret);
    const endpoints = new Set((globexDeliveries.deliveries as { endpoint: string }[]).map((d) => d.endpoint));
    expect([...endpoints]).toEqual(["globex-chat"]);
    const acmeDelivery = await cliJson(["deliveries", "list", "--endpoint", "acme-hook", "--limit", "1"]);
    const acmeDeliveryId = String((acmeDelivery.deliveries as { id: string }[])[0]?.id);
    for (const args of [
      ["deliveries", "show", acmeDeliveryId],
      ["deliveries", "replay", acmeDeliveryId],
    ]) {
      const r = await cli(args, globexAdmin.secret);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.err).toContain(`delivery "${acmeDeliveryId}" not found`);
    }
    const orgsSeen = (p: AigwProcess) =>
      new Set(
        p.lines.flatMap((l) => {
          try {
            return [String((JSON.parse(l) as { org_id?: string }).org_id)];
          } catch {
            return [];
          }
        }),
      );
    await waitFor("globex's watch printed globex's events", () =>
      (sent.globexBatch ?? []).every((id) => globexWatch.lines.some((l) => l.includes(id))),
    );
    expect(orgsSeen(globexWatch)).toEqual(new Set(["globex"]));
    expect(orgsSeen(acmeWatch)).toEqual(new Set(["acme"]));

    // A sidecar with acme's token that says it is globex: refused, and still serving its app.
    const impostor = await sidecar("globex", "chat", acmeSidecar.secret);
    const refusal = await impostor.process.waitForLog(
      "uplink: control plane refused this sidecar's --org for its token; events wait in the spool",
    );
    expect(refusal).toMatchObject({ code: "PERMISSION_DENIED" });
    expect(String(refusal.details)).toContain('this sidecar token belongs to org "acme", not "globex"');
    const cpRefusal = await cp.waitForLog("refused a sidecar: its --org is not the org of its sidecar token");
    expect(cpRefusal).toMatchObject({ org: "globex", tokenOrg: "acme" });
    const spooledId = await call(impostor.url);
    expect(requestIds(receivers.ops as TestReceiver)).not.toContain(spooledId);

    // Revoking a token ends its open watch and its sidecar's open stream; the sidecar keeps serving.
    const revoked = await cli(["tokens", "revoke", globexAdmin.id]);
    expect(revoked.code, revoked.err).toBe(0);
    const watchEnd = await Promise.race([globexWatch.exited, new Promise((r) => setTimeout(() => r("open"), 10_000))]);
    expect(watchEnd).toBe(1);
    expect(globexWatch.stderr()).toContain("token revoked");
    expect(acmeWatch.child.exitCode).toBeNull();
    expect((await cli(["endpoints", "list"], globexAdmin.secret)).err).toContain("token revoked");

    expect((await cli(["tokens", "revoke", acmeSidecar.id])).code).toBe(0);
    await acmeChat.process.waitForLog(
      "uplink: control plane refused this sidecar's token; check --token and the control plane's auth.sidecar tokens",
      10_000,
    );
    const afterRevoke = await call(acmeChat.url);
    expect(afterRevoke).toMatch(/.+/);
  });
});
