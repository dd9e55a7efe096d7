import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, TokenKind } from "../../gen/aigw/v1/admin_pb.js";
import { FeedService, type WatchResponse } from "../../gen/aigw/v1/feed_pb.js";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { type RunningControlPlane, runControlPlane } from "../../control-plane/run.js";
import { skipWithoutPostgres, type TestStoreLocation, testStoreLocation, withStorageKey } from "../support/store.js";
import { waitFor } from "../support/wait.js";

// Two control-plane replicas on one PostgreSQL: a token made on replica A works on replica
// B, and revoking it on A ends B's open feed stream and B's next call within about a second
// (each replica re-reads the tokens table every 500 ms).

const OPERATOR = "operator-admin-token";
const noPostgres = await skipWithoutPostgres("the org token revocation test across replicas");

function bearer(token: string): Interceptor[] {
  return [
    (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ];
}

describe.skipIf(noPostgres)("org tokens across two replicas on PostgreSQL", () => {
  let location: TestStoreLocation;
  const replicas: RunningControlPlane[] = [];

  beforeAll(async () => {
    location = await testStoreLocation("postgres");
    const yaml = withStorageKey(
      `
webhooks:
  acme-hook:
    url: "https://hooks.example.com/acme"
    secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    org_id: acme
auth:
  admin_tokens: ["${OPERATOR}"]
`,
      location,
    );
    for (let i = 0; i < 2; i++) {
      replicas.push(
        await runControlPlane({
          config: parseConfig(yaml, { file: "test.yaml", env: {} }),
          store: location.url,
          grpc: "127.0.0.1:0",
          http: "127.0.0.1:0",
          logger: createLogger({ level: process.env.AIGW_TEST_LOG ?? "silent" }),
        }),
      );
    }
  });

  afterAll(async () => {
    for (const cp of replicas) await cp.close();
    await location?.cleanup();
  });

  it("a token made on one replica works on the other, and its revocation there ends an open watch", async () => {
    const [a, b] = replicas as [RunningControlPlane, RunningControlPlane];
    const operatorOnA = createClient(
      AdminService,
      createConnectTransport({ baseUrl: a.httpUrl, httpVersion: "1.1", interceptors: bearer(OPERATOR) }),
    );
    const made = await operatorOnA.createToken({ orgId: "acme", kind: TokenKind.ADMIN, name: "replicas" });
    const token = made.token?.id ?? "";
    expect(made.secret).toMatch(/^aigw_/);

    const adminOnB = createClient(
      AdminService,
      createConnectTransport({ baseUrl: b.httpUrl, httpVersion: "1.1", interceptors: bearer(made.secret) }),
    );
    const feedOnB = createClient(
      FeedService,
      createGrpcTransport({ baseUrl: b.grpcUrl, interceptors: bearer(made.secret) }),
    );
    // B learns of the token by reading the table (within its refresh interval).
    await waitFor("the token known on replica B", async () => {
      try {
        return (await adminOnB.whoAmI({})).orgId === "acme";
      } catch {
        return false;
      }
    });
    expect((await adminOnB.listEndpoints({})).endpoints.map((e) => e.name)).toEqual(["acme-hook"]);

    const seen: WatchResponse[] = [];
    const abort = new AbortController();
    const watching = (async () => {
      for await (const res of feedOnB.watch({}, { signal: abort.signal })) seen.push(res);
    })().then(
      () => "ended" as const,
      (err: unknown) => ConnectError.from(err),
    );
    // The first message (the start cursor) says the stream is open.
    await waitFor("the watch on B open", () => seen.length > 0);

    const revokedAt = Date.now();
    await operatorOnA.revokeToken({ id: token });
    const outcome = await Promise.race([
      watching,
      new Promise<"still open">((r) => setTimeout(() => r("still open"), 10_000)),
    ]);
    const tookMs = Date.now() - revokedAt;
    abort.abort();
    console.log(`revocation on replica A ended replica B's watch after ${tookMs} ms`);
    expect(outcome).toBeInstanceOf(ConnectError);
    expect((outcome as ConnectError).code).toBe(Code.Unauthenticated);
    expect((outcome as ConnectError).rawMessage).toContain("token revoked");
    // 500 ms refresh plus the stream's own check; room for a busy machine.
    expect(tookMs).toBeLessThan(2_500);
    await expect(adminOnB.listEndpoints({})).rejects.toMatchObject({ code: Code.Unauthenticated });
  });
});
