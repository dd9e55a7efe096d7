import { PassThrough } from "node:stream";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { testStoreLocation, withStorageKey } from "../support/store.js";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { runControlPlane } from "../../control-plane/run.js";
import { runSidecar } from "../../sidecar/run.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { startTestReceiver } from "../support/webhook-receiver.js";
import { TEST_SECRET, testConfigYaml } from "../support/stack.js";
import { waitFor } from "../support/wait.js";

// Secrets and authorization headers never reach a log line, at the most talkative level,
// whatever path they travel: config, Admin API, sidecar tokens, the app's provider key.
describe("logs", () => {
  it("never contain signing secrets, tokens or the app's API key", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aigw-logs-"));
    const location = await testStoreLocation();
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.setEncoding("utf8").on("data", (chunk: string) => lines.push(chunk));
    const logger = createLogger({ level: "trace", destination: sink });
    const receiver = await startTestReceiver({ secret: TEST_SECRET });
    const provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
    const adminToken = "admin-token-that-must-not-leak";
    const sidecarToken = "sidecar-token-that-must-not-leak";
    const apiKey = "sk-app-key-that-must-not-leak";
    const rotated = "whsec_cm90YXRlZC1zZWNyZXQtdGhhdC1tdXN0LW5vdC1sZWFr";
    const cp = await runControlPlane({
      config: parseConfig(
        withStorageKey(
          testConfigYaml({
            primaryUrl: receiver.url,
            extra: `auth:\n  admin_tokens: ["${adminToken}"]\n  sidecar_tokens: ["${sidecarToken}"]\n`,
          }),
          location,
        ),
        { file: "t.yaml", env: {} },
      ),
      store: location.url,
      grpc: "127.0.0.1:0",
      http: "127.0.0.1:0",
      logger,
    });
    const sidecar = await runSidecar({
      controlPlane: cp.grpcUrl,
      listen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
      upstreams: { openai: provider.url },
      token: sidecarToken,
      spoolDir: join(dir, "spool"),
      logger,
    });
    try {
      const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
        body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status).toBe(200);
      await waitFor("the webhook", () => receiver.accepted().length === 1);
      const admin = createClient(AdminService, createConnectTransport({ baseUrl: cp.httpUrl, httpVersion: "1.1" }));
      const headers = { authorization: `Bearer ${adminToken}` };
      await admin.rotateSigningKey({ endpoint: "primary", secret: rotated }, { headers });
      await admin.createEndpoint(
        { endpoint: { name: "other", url: receiver.url, enabled: true, secret: "raw-secret-that-must-not-leak" } },
        { headers },
      );
      // A wrong token is refused and not echoed either.
      await expect(admin.listEndpoints({}, { headers: { authorization: "Bearer guessed-token-xyz" } })).rejects.toThrow(
        /token/,
      );
    } finally {
      await sidecar.close();
      await cp.close();
      await provider.close();
      await receiver.close();
      await location.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
    const all = lines.join("");
    expect(all.length).toBeGreaterThan(0);
    for (const secret of [
      TEST_SECRET,
      TEST_SECRET.slice(6),
      adminToken,
      sidecarToken,
      apiKey,
      rotated,
      "raw-secret-that-must-not-leak",
      "guessed-token-xyz",
    ]) {
      expect(all).not.toContain(secret);
    }
  });
});
