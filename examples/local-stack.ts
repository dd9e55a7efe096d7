import { createLogger } from "../common/logger.js";
import { loadConfigFile } from "../control-plane/config/load.js";
import { runControlPlane } from "../control-plane/run.js";
import { runSidecar } from "../sidecar/run.js";
import { startMockProvider } from "./mock-provider.js";
import { startReceiver } from "./receiver.js";

export interface LocalStackOptions {
  out: (s: string) => void;
  /** Ports (0: any free one); defaults are the fixed ones `npm start` prints. */
  ports?: {
    sidecar?: number;
    sidecarAdmin?: number;
    grpc?: number;
    http?: number;
    receiver?: number;
    provider?: number;
  };
  /** Where the SQLite file and the spool go; default .aigw/ (the store of examples/local.yaml). */
  dataDir?: string;
  env?: Record<string, string | undefined>;
}

/**
 * `npm start`: control plane (SQLite), one sidecar in front of the mock provider, and the
 * verifying example receiver, all on fixed loopback ports.
 */
export async function startLocalStack(options: LocalStackOptions) {
  const env = options.env ?? process.env;
  const ports = options.ports ?? {};
  const logger = createLogger({ name: "aigw", level: env.AIGW_LOG_LEVEL ?? "warn" });
  // From the sources this is examples/local.yaml; from the build, dist/examples/ maps back to examples/.
  const configPath = new URL("./local.yaml", import.meta.url).pathname.replace("/dist/examples/", "/examples/");
  const config = loadConfigFile(configPath, env);
  const dataDir = options.dataDir ?? ".aigw";
  const primary = config.webhooks.primary;
  if (!primary) throw new Error(`${configPath}: the local stack expects a "primary" webhook`);
  const receiver = await startReceiver({
    host: "127.0.0.1",
    port: ports.receiver ?? 9000,
    secret: primary.secret,
    toleranceMs: config.security.timestampToleranceMs,
    print: (line) => options.out(`receiver: ${line}\n`),
  });
  // The receiver's real address wins over the file's (they differ only when its port is 0).
  primary.url = `${receiver.url}webhooks/ai`;
  const provider = await startMockProvider({ host: "127.0.0.1", port: ports.provider ?? 9100 });
  const cp = await runControlPlane({
    config,
    store: options.dataDir ? `sqlite:${dataDir}/local.db` : config.storage.url,
    grpc: `127.0.0.1:${ports.grpc ?? 7070}`,
    http: `127.0.0.1:${ports.http ?? 7080}`,
    logger,
  });
  const sidecar = await runSidecar({
    controlPlane: cp.grpcUrl,
    listen: `127.0.0.1:${ports.sidecar ?? 8080}`,
    adminListen: `127.0.0.1:${ports.sidecarAdmin ?? 8081}`,
    upstreams: { openai: provider.url },
    orgId: "org_local",
    app: "demo",
    spoolDir: `${dataDir}/spool-demo`,
    logger,
  });
  options.out(`aigw local stack is running:
  sidecar (your app's OpenAI base URL)  ${sidecar.url}/v1
  sidecar /healthz, /readyz, /metrics   ${sidecar.adminUrl}
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
    receiver,
    controlPlane: cp,
    close: async () => {
      await sidecar.close();
      await cp.close();
      await Promise.allSettled([provider.close(), receiver.close()]);
    },
  };
}
