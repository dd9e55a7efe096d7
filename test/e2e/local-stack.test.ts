import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLocalStack } from "../../examples/local-stack.js";
import { waitFor } from "../support/wait.js";

// What `npm start` runs (on OS-chosen ports here): the README's curl produces a verified webhook.
describe("the local stack of npm start", () => {
  let dir: string;
  let stack: Awaited<ReturnType<typeof startLocalStack>>;
  const printed: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "aigw-local-"));
    stack = await startLocalStack({
      out: (s) => printed.push(s),
      ports: { sidecar: 0, sidecarAdmin: 0, grpc: 0, http: 0, receiver: 0, provider: 0 },
      dataDir: dir,
      env: { AIGW_LOG_LEVEL: "silent" },
    });
  });
  afterAll(async () => {
    await stack?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("prints what to call, and the README's request reaches the example receiver verified", async () => {
    expect(printed.join("")).toContain(`${stack.sidecarUrl}/v1`);
    const res = await fetch(`${stack.sidecarUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-anything" },
      body: JSON.stringify({ model: "gpt-4", messages: [{ role: "user", content: "Hello" }] }),
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-aigw-request-id");
    await waitFor("the receiver's line", () =>
      printed.some((l) => l.startsWith("receiver:") && l.includes("completion")),
    );
    expect(stack.receiver.counts.rejected).toBe(0);
    expect(stack.receiver.counts.received).toBeGreaterThanOrEqual(1);
    expect(requestId).toMatch(/^req_/);
  });
});
