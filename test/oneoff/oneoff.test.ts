import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it } from "vitest";
import { main } from "../../cli/main.js";
import { oneOffEndpointName } from "../../control-plane/routing/one-off.js";
import {
  type ControlPlaneFixture,
  completion,
  deliveryTargets,
  errorEvent,
  openSidecarStream,
  type SidecarStream,
  startControlPlane,
} from "../support/control-plane.js";
import { TEST_SECRET } from "../support/stack.js";
import { type TestReceiver, startTestReceiver } from "../support/webhook-receiver.js";
import { waitFor } from "../support/wait.js";

function yaml(primaryUrl: string, allowedNetworks: string): string {
  return `
webhooks:
  primary:
    url: "${primaryUrl}"
    secret: "${TEST_SECRET}"
events:
  subscribe: ["completion", "error"]
  filters:
    completion:
      min_tokens: 1000
retry:
  initial_delay_ms: 50
security:
  require_https: false
  allowed_networks: ${allowedNetworks}
`;
}

const metric = async (fx: ControlPlaneFixture, pattern: RegExp) =>
  pattern.test(await fetch(`${fx.cp.httpUrl}/metrics`).then((r) => r.text()));

// x-aigw-webhook-url: the sidecar stamps the URL on the request's events; the control plane
// delivers them to a one-off endpoint of (org, URL), signed with the org's key.
describe("one-off endpoints (x-aigw-webhook-url)", () => {
  let fx: ControlPlaneFixture | undefined;
  const receivers: TestReceiver[] = [];
  const streams: SidecarStream[] = [];

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await fx?.close();
    fx = undefined;
    for (const r of receivers.splice(0)) await r.close();
  });

  async function receiver(secret: string) {
    const r = await startTestReceiver({ secret });
    receivers.push(r);
    return r;
  }

  it("delivers the request's events signed with the org key that RotateSigningKey(org_id) returned", async () => {
    const primary = await receiver(TEST_SECRET);
    fx = await startControlPlane(yaml(primary.url, '["127.0.0.0/8"]'));
    const { secret } = await fx.admin.rotateSigningKey({ orgId: "org_a" });
    expect(secret).toMatch(/^whsec_/);
    const oneOff = await receiver(secret);
    const stream = openSidecarStream(fx.cp, { sidecarId: "sc_o", orgId: "org_a", app: "async" });
    streams.push(stream);

    // Below the global min_tokens: the one-off endpoint still gets it (no filters apply to
    // the request's own callback), primary does not.
    const small = completion("gpt-4", 10, { orgId: "", webhookUrl: oneOff.url });
    const failed = errorEvent("warning", { orgId: "", webhookUrl: oneOff.url });
    const large = completion("gpt-4", 2000, { orgId: "" });
    const ack = await stream.sendBatch([small, failed, large]);
    expect(ack.stored).toBe(3);

    const name = oneOffEndpointName("org_a", oneOff.url);
    expect(await deliveryTargets(fx.cp, small.id)).toEqual([name]);
    expect(await deliveryTargets(fx.cp, failed.id)).toEqual([name, "primary"].sort());
    expect(await deliveryTargets(fx.cp, large.id)).toEqual(["primary"]);

    await waitFor("the one-off endpoint's two webhooks", () => oneOff.accepted().length >= 2);
    expect(oneOff.rejected).toEqual([]);
    expect(
      oneOff
        .accepted()
        .map((w) => w.id)
        .sort(),
    ).toEqual([small.id, failed.id].sort());
    expect(oneOff.accepted().every((w) => w.body.org_id === "org_a")).toBe(true);

    // Hidden from ListEndpoints, visible by name, signed by the org's one key.
    const listed = await fx.admin.listEndpoints({});
    expect(listed.endpoints.map((e) => e.name)).toEqual(["primary"]);
    const got = await fx.admin.getEndpoint({ name });
    expect(got.endpoint).toMatchObject({ name, url: oneOff.url, enabled: true, signingKeyCount: 1 });
    // Its URL and key are the request's and the org's, not the API's to change.
    await expect(
      fx.admin.updateEndpoint({ endpoint: { name, url: "http://127.0.0.1:9/x" }, updateMask: { paths: ["url"] } }),
    ).rejects.toThrow(/one-off endpoint/);
    await expect(fx.admin.rotateSigningKey({ endpoint: name })).rejects.toThrow(/rotate that with org_id/);
    await expect(fx.admin.rotateSigningKey({ endpoint: "primary", orgId: "org_a" })).rejects.toThrow(
      /org_id: give either endpoint or org_id/,
    );
    expect(await metric(fx, /aigw_oneoff_events_total\{outcome="routed"\} 2/)).toBe(true);
  });

  it("generates an org key on first use; `aigw keys rotate --org` then gives a secret that verifies", async () => {
    const primary = await receiver(TEST_SECRET);
    fx = await startControlPlane(yaml(primary.url, '["127.0.0.0/8"]'));
    // Records whatever arrives: the secret to verify with is not known yet.
    const raw: { id: string; ts: string; sig: string; body: string }[] = [];
    const { createServer } = await import("node:http");
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => {
        body += c.toString();
      });
      req.on("end", () => {
        raw.push({
          id: String(req.headers["webhook-id"]),
          ts: String(req.headers["webhook-timestamp"]),
          sig: String(req.headers["webhook-signature"]),
          body,
        });
        res.writeHead(200).end("ok");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/cb`;
    try {
      const stream = openSidecarStream(fx.cp, { sidecarId: "sc_k", orgId: "org_new", app: "a" });
      streams.push(stream);
      const first = completion("gpt-4", 5, { orgId: "", webhookUrl: url });
      await stream.sendBatch([first]);
      await waitFor("the first one-off webhook", () => raw.length >= 1);
      expect(raw[0]?.sig).toMatch(/^v1,/);
      expect(await metric(fx, /aigw_org_signing_keys_generated_total 1/)).toBe(true);

      let out = "";
      const code = await main(["keys", "rotate", "--org", "org_new", "--admin", fx.cp.httpUrl], {
        out: (s) => {
          out += s;
        },
        err: (s) => {
          out += s;
        },
        env: {},
      });
      expect(code, out).toBe(0);
      const secret = /whsec_\S+/.exec(out)?.[0];
      expect(secret).toBeDefined();

      const second = completion("gpt-4", 5, { orgId: "", webhookUrl: url });
      await stream.sendBatch([second]);
      await waitFor("the second one-off webhook", () => raw.some((r) => r.id === second.id));
      const delivered = raw.find((r) => r.id === second.id);
      if (!delivered || !secret) throw new Error("unreachable");
      // Signed by the new key and, through the overlap window, the generated one.
      expect(delivered.sig.split(" ")).toHaveLength(2);
      const payload = new Webhook(secret).verify(delivered.body, {
        "webhook-id": delivered.id,
        "webhook-timestamp": delivered.ts,
        "webhook-signature": delivered.sig,
      }) as Record<string, unknown>;
      expect(payload.org_id).toBe("org_new");
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("refuses a private destination outside allowed_networks and invalid URLs, without failing the batch", async () => {
    const primary = await receiver(TEST_SECRET);
    // Only the primary receiver's address is allowed: other loopback and private destinations
    // are refused (the first test shows loopback receivers accepted with 127.0.0.0/8 allowed).
    fx = await startControlPlane(yaml(primary.url, '["127.0.0.1/32"]'));
    const stream = openSidecarStream(fx.cp, { sidecarId: "sc_p", orgId: "org_p", app: "a" });
    streams.push(stream);
    const loopback = completion("gpt-4", 2000, { orgId: "", webhookUrl: "http://127.0.0.2:1/cb" });
    const privateNet = completion("gpt-4", 2000, { orgId: "", webhookUrl: "http://10.1.2.3/cb" });
    const garbage = errorEvent("critical", { orgId: "", webhookUrl: "not a url" });
    const ftp = errorEvent("critical", { orgId: "", webhookUrl: "ftp://example.com/x" });
    const ack = await stream.sendBatch([loopback, privateNet, garbage, ftp]);
    expect(ack.stored).toBe(4);
    // Normal routing is untouched; no one-off endpoint was created.
    for (const e of [loopback, privateNet, garbage, ftp]) {
      expect(await deliveryTargets(fx.cp, e.id)).toEqual(["primary"]);
    }
    expect(await fx.cp.store.getEndpoint(oneOffEndpointName("org_p", "http://10.1.2.3/cb"))).toBeUndefined();
    expect(await metric(fx, /aigw_oneoff_events_total\{outcome="refused"\} 4/)).toBe(true);
  });
});
