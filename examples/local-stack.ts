import { createLogger } from "../common/logger.js";
import { runControlPlane } from "../control-plane/run.js";
import { runSidecar } from "../sidecar/run.js";
import { startMockProvider } from "./mock-provider.js";
import { startReceiver } from "./receiver.js";

/** The secret in examples/local.yaml (loopback development only). */
export const LOCAL_WEBHOOK_SECRET = "whsec_YWlndy1sb2NhbC1kZXZlbG9wbWVudC1zZWNyZXQh";

export interface LocalStackOptions {
  out: (s: string) => void;
}

/**
 * `npm start`: control plane (SQLite), one sidecar in front of the mock provider, and the
 * verifying example receiver, all on fixed loopback ports.
 */
export async function startLocalStack(options: LocalStackOptions) {
  const logger = createLogger({ name: "aigw", level: process.env.AIGW_LOG_LEVEL ?? "warn" });
  // From the sources this is examples/local.yaml; from the build, dist/examples/ maps back to examples/.
  const configPath = new URL("./local.yaml", import.meta.url).pathname.replace("/dist/examples/", "/examples/");
  const secret = process.env.WEBHOOK_SECRET ?? LOCAL_WEBHOOK_SECRET;
  const receiver = await startReceiver({
    host: "127.0.0.1",
    port: 9000,
    secret,
    print: (line) => options.out(`receiver: ${line}\n`),
  });
  const provider = await startMockProvider({ host: "127.0.0.1", port: 9100 });
  const cp = await runControlPlane({ configPath, logger });
  const sidecar = await runSidecar({
    controlPlane: cp.grpcUrl,
    listen: "127.0.0.1:8080",
    upstreams: { openai: provider.url },
    orgId: "org_local",
    app: "demo",
    spoolDir: ".aigw/spool-demo",
    logger,
  });
  options.out(`aigw local stack is running:
  sidecar (your app's OpenAI base URL)  ${sidecar.url}/v1
  mock provider                         ${provider.url}
  control plane gRPC / Connect          ${cp.grpcUrl}
  dashboard, Admin API, /metrics        ${cp.httpUrl}
  webhook receiver                      ${receiver.url}webhooks/ai

Try:
  curl -s ${sidecar.url}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer sk-anything' \\
    -d '{"model":"gpt-4","messages":[{"role":"user","content":"Hello"}]}'
  npx aigw watch            # the live feed
  npx aigw deliveries list  # what was delivered
Ctrl-C stops everything.
`);
  return {
    sidecarUrl: sidecar.url,
    controlPlane: cp,
    close: async () => {
      await sidecar.close();
      await cp.close();
      await Promise.allSettled([provider.close(), receiver.close()]);
    },
  };
}
