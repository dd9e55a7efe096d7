import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../common/logger.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { type RunningControlPlane, runControlPlane } from "../../control-plane/run.js";
import { type RunningSidecar, runSidecar } from "../../sidecar/run.js";
import { startMockProvider } from "../../examples/mock-provider.js";
import { testStoreLocation, withStorageKey } from "./store.js";

export const TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
export const BACKUP_SECRET = "whsec_YmFja3VwLWVuZHBvaW50LXNlY3JldC1rZXktMzI=";

/** A webhook_config.yaml for tests: loopback receivers over plain HTTP, fast retries. */
export function testConfigYaml(options: {
  primaryUrl: string;
  backupUrl?: string;
  maxAttempts?: number;
  initialDelayMs?: number;
  extra?: string;
}): string {
  return `
webhooks:
  primary:
    url: "${options.primaryUrl}"
    secret: "${TEST_SECRET}"
    enabled: true
${
  options.backupUrl
    ? `  backup:
    url: "${options.backupUrl}"
    secret: "${BACKUP_SECRET}"
    enabled: true
`
    : ""
}
events:
  subscribe: ["completion", "error", "streaming", "budget", "rate_limit"]
retry:
  max_attempts: ${options.maxAttempts ?? 5}
  backoff_multiplier: 2.0
  initial_delay_ms: ${options.initialDelayMs ?? 50}
  max_delay_ms: 1000
  retryable_status_codes: [408, 429, 500, 502, 503]
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
delivery:
  timeout_ms: 5000
  concurrent_deliveries: 10
${options.extra ?? ""}`;
}

export interface TestStack {
  dir: string;
  controlPlane: RunningControlPlane;
  sidecar: RunningSidecar;
  provider: Awaited<ReturnType<typeof startMockProvider>>;
  close(): Promise<void>;
}

/**
 * Control plane (on the test store: see store.ts), mock provider and sidecar, all on port 0.
 * The mock is the `openai` upstream, and with `anthropic: true` the `anthropic` one too
 * (it serves both APIs), so /v1/messages calls are reported with provider "anthropic".
 */
export async function startTestStack(yaml: string, options: { anthropic?: boolean } = {}): Promise<TestStack> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-e2e-"));
  const location = await testStoreLocation();
  const logger = createLogger({ level: process.env.AIGW_TEST_LOG ?? "silent" });
  const config = parseConfig(withStorageKey(yaml, location), { file: "test.yaml", env: {} });
  const controlPlane = await runControlPlane({
    config,
    store: location.url,
    grpc: "127.0.0.1:0",
    http: "127.0.0.1:0",
    logger,
  });
  const provider = await startMockProvider({ host: "127.0.0.1", port: 0 });
  const sidecar = await runSidecar({
    controlPlane: controlPlane.grpcUrl,
    listen: "127.0.0.1:0",
    adminListen: "127.0.0.1:0",
    upstreams: options.anthropic ? { openai: provider.url, anthropic: provider.url } : { openai: provider.url },
    orgId: "org_test",
    app: "e2e",
    spoolDir: join(dir, "spool"),
    logger,
  });
  return {
    dir,
    controlPlane,
    sidecar,
    provider,
    close: async () => {
      await sidecar.close();
      await controlPlane.close();
      await provider.close();
      await location.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
