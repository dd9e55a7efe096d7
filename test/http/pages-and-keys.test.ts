import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { createLogger } from "../../common/logger.js";
import { rpcErrorCode } from "../../common/rpc-errors.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { runControlPlane } from "../../control-plane/run.js";
import { type ControlPlaneFixture, startControlPlane } from "../support/control-plane.js";
import { type TestStoreLocation, testStoreLocation } from "../support/store.js";

const ADMIN = "admin-token-for-pages";
const METRICS = "metrics-token-for-prometheus";

const get = (url: string, token?: string) =>
  fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {}).then(async (r) => ({
    status: r.status,
    headers: r.headers,
    text: await r.text(),
  }));

// Probes: beyond loopback, /metrics and the dashboard page ask for tokens like
// the Admin API does.
describe("/metrics and the dashboard page beyond loopback", () => {
  let fx: { cp: Awaited<ReturnType<typeof runControlPlane>> & { httpUrl: string } };
  let location: TestStoreLocation;
  beforeAll(async () => {
    location = await testStoreLocation();
    const cp = await runControlPlane({
      config: parseConfig(
        `auth:\n  admin_tokens: ["${ADMIN}"]\n  sidecar_tokens: ["sidecar-token-for-pages"]\n  metrics_tokens: ["${METRICS}"]\nstorage:\n  encryption_key: "${Buffer.alloc(32, 3).toString("base64")}"\n`,
        { file: "t.yaml", env: {} },
      ),
      store: location.url,
      grpc: "127.0.0.1:0",
      http: "0.0.0.0:0",
      logger: createLogger({ level: "silent" }),
    });
    // Reached over loopback, but the listener is open beyond it.
    fx = { cp: Object.assign(cp, { httpUrl: cp.httpUrl.replace("0.0.0.0", "127.0.0.1") }) };
  });
  afterAll(async () => {
    await fx?.cp.close();
    await location?.cleanup();
  });

  it("/metrics wants an admin or metrics token, and says so", async () => {
    const anonymous = await get(`${fx.cp.httpUrl}/metrics`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toBe('Bearer realm="aigw"');
    expect(anonymous.text).toBe(
      "AIGW_UNAUTHENTICATED: /metrics: bearer token required (a token of auth.admin_tokens or auth.metrics_tokens)\n",
    );
    expect(anonymous.text).not.toContain("aigw_");
    expect((await get(`${fx.cp.httpUrl}/metrics`, "wrong")).text).toMatch(/token not accepted/);
    for (const token of [ADMIN, METRICS]) {
      const ok = await get(`${fx.cp.httpUrl}/metrics`, token);
      expect(ok.status).toBe(200);
      expect(ok.text).toContain("aigw_events_ingested_total");
    }
  });

  it("a metrics token opens /metrics only, not the Admin API", async () => {
    const client = createClient(
      AdminService,
      createConnectTransport({
        baseUrl: fx.cp.httpUrl,
        httpVersion: "1.1",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${METRICS}`);
            return next(req);
          },
        ],
      }),
    );
    const err = await client.listEndpoints({}).then(() => undefined, ConnectError.from);
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(err && rpcErrorCode(err)).toBe("AIGW_UNAUTHENTICATED");
  });

  it("the dashboard page without the token is a form with no data, and the dashboard with it", async () => {
    const anonymous = await get(`${fx.cp.httpUrl}/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.text).toContain('<form id="auth">');
    expect(anonymous.text).not.toContain('id="chart-deliveries"');
    expect(anonymous.text).not.toContain('id="stats"');
    const ok = await get(`${fx.cp.httpUrl}/`, ADMIN);
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('id="chart-deliveries"');
    // A metrics token is not an admin token.
    expect((await get(`${fx.cp.httpUrl}/`, METRICS)).status).toBe(401);
  });

  it("leaves /healthz and /readyz open for orchestrators' probes", async () => {
    expect((await get(`${fx.cp.httpUrl}/healthz`)).status).toBe(200);
    expect((await get(`${fx.cp.httpUrl}/readyz`)).status).toBe(200);
  });
});

describe("/metrics and the dashboard page on loopback", () => {
  let fx: ControlPlaneFixture;
  beforeAll(async () => {
    fx = await startControlPlane(`auth:\n  admin_tokens: ["${ADMIN}"]\n`);
  });
  afterAll(() => fx?.close());

  it("stay open as they always were (the Admin API still wants its token)", async () => {
    expect((await get(`${fx.cp.httpUrl}/metrics`)).status).toBe(200);
    expect((await get(`${fx.cp.httpUrl}/`)).text).toContain('id="chart-deliveries"');
  });
});

describe("the encryption key beside the database", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "aigw-key-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function startLogged(grpc: string, extra = ""): Promise<Record<string, unknown>[]> {
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.setEncoding("utf8").on("data", (chunk: string) => lines.push(...chunk.split("\n").filter(Boolean)));
    const cp = await runControlPlane({
      config: parseConfig(`auth:\n  admin_tokens: ["${ADMIN}"]\n  sidecar_tokens: ["sidecar-token"]\n${extra}`, {
        file: "t.yaml",
        env: {},
      }),
      store: `sqlite:${join(dir, `${grpc.replace(/\W/g, "_")}${extra.length}.db`)}`,
      grpc,
      http: "127.0.0.1:0",
      logger: createLogger({ level: "info", destination: sink }),
    });
    await cp.close();
    return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  it("is said at start when listening beyond loopback, with the way out", async () => {
    const lines = await startLogged("0.0.0.0:0");
    const warning = lines.find((l) => l.code === "AIGW_KEY_FILE_BESIDE_DATABASE");
    expect(warning).toMatchObject({ level: 40, keyFile: join(dir, "0_0_0_0_00.db.key"), listen: ["0.0.0.0:0"] });
    expect(String(warning?.msg)).toMatch(
      /one copy of that folder holds both.*storage\.encryption_key from the environment/,
    );
  });

  it("is not said on loopback, nor when storage.encryption_key is set", async () => {
    expect((await startLogged("127.0.0.1:0")).some((l) => l.code === "AIGW_KEY_FILE_BESIDE_DATABASE")).toBe(false);
    const key = Buffer.alloc(32, 7).toString("base64");
    const withKey = await startLogged("0.0.0.0:0", `storage:\n  encryption_key: "${key}"\n`);
    expect(withKey.some((l) => l.code === "AIGW_KEY_FILE_BESIDE_DATABASE")).toBe(false);
  });
});

describe("log lines", () => {
  it("carry the process as name and the part as component, once each", () => {
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.setEncoding("utf8").on("data", (chunk: string) => lines.push(chunk));
    const logger = createLogger({ name: "control-plane", destination: sink });
    logger.child({ component: "delivery" }).info("a line");
    logger.info("a root line");
    const [child, root] = lines.join("").trim().split("\n") as [string, string];
    expect(child.match(/"component"/g)).toHaveLength(1);
    expect(child.match(/"name"/g)).toHaveLength(1);
    expect(JSON.parse(child)).toMatchObject({ name: "control-plane", component: "delivery", msg: "a line" });
    expect(JSON.parse(root)).toMatchObject({ name: "control-plane", msg: "a root line" });
  });
});
