import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { parseVerbArgs } from "../../cli/args.js";
import { ADMIN_FLAGS } from "../../cli/admin-flags.js";
import { loadCommandGroups } from "../../cli/commands/index.js";
import { parseConfig } from "../../control-plane/config/load.js";
import { AIGW_BIN, REPO_ROOT, runAigw } from "../support/processes.js";
import { createTestDatabase, skipWithoutPostgres } from "../support/store.js";
import { waitFor } from "../support/wait.js";

const run = promisify(execFile);
const DIR = join(REPO_ROOT, "examples/deploy");
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;

// Kubernetes objects, as far as these manifests use them.
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: { secretRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string }[];
  restartPolicy?: string;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; configMap?: { name: string }; emptyDir?: object }[];
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  stringData?: Record<string, string>;
  data?: Record<string, string>;
  spec?: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> } & Record<string, string>;
    template?: { metadata: { labels: Record<string, string> }; spec: PodSpec };
    ports?: { name: string; port: number; targetPort: string | number }[];
    volumeClaimTemplates?: { metadata: { name: string } }[];
  };
  resources?: string[];
}

function load(): { files: string[]; objects: (K8sObject & { file: string })[] } {
  const files = readdirSync(DIR).filter((f) => f.endsWith(".yaml"));
  const objects = files.flatMap((file) =>
    parseAllDocuments(readFileSync(join(DIR, file), "utf8"), { uniqueKeys: true }).map((doc) => {
      expect([...doc.errors, ...doc.warnings].map((e) => `${file}: ${e.message}`)).toEqual([]);
      return { ...(doc.toJS() as K8sObject), file };
    }),
  );
  return { files, objects };
}

const aigwContainers = (objects: K8sObject[]) =>
  objects.flatMap((o) => {
    const pod = o.spec?.template?.spec;
    return [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])]
      .filter((c) => c.image.split(":")[0] === "aigw")
      .map((c) => ({ workload: o, pod: pod as PodSpec, container: c }));
  });

/** `--flag=value` and `--flag value` → value */
function flagValue(args: readonly string[], flag: string): string | undefined {
  for (const [i, a] of args.entries()) {
    if (a === `--${flag}`) return args[i + 1];
    if (a.startsWith(`--${flag}=`)) return a.slice(flag.length + 3);
  }
  return undefined;
}

function portOf(hostPort: string | undefined): number | undefined {
  const m = /:(\d+)$/.exec(hostPort ?? "");
  return m ? Number(m[1]) : undefined;
}

// The Kubernetes example as `kubectl apply -k examples/deploy` reads it: every document
// parses, every reference (Secret keys, ConfigMap, volumes, probe ports, Services) resolves,
// every aigw command line is one the CLI accepts (flags checked against `aigw VERB --help`
// and parsed by the CLI's own parser), and the probes point at the ports the flags open.
describe("examples/deploy (Kubernetes)", () => {
  const { files, objects } = load();
  const secrets = new Map(objects.filter((o) => o.kind === "Secret").map((o) => [o.metadata.name, o.stringData ?? {}]));
  const configMaps = new Map(objects.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name, o.data ?? {}]));
  const workloads = objects.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");

  it("kustomization.yaml lists every other file", () => {
    const kustomization = objects.find((o) => o.kind === "Kustomization");
    expect(kustomization?.resources?.slice().sort()).toEqual(files.filter((f) => f !== "kustomization.yaml").sort());
    for (const o of objects.filter((o) => o.kind !== "Kustomization")) {
      expect(o.apiVersion, o.file).toMatch(/^(v1|apps\/v1|policy\/v1)$/);
      expect(o.metadata.name, o.file).toMatch(/^[a-z0-9-]+$/);
    }
  });

  it("resolves every Secret key, ConfigMap, volume and probe port it refers to", () => {
    for (const w of workloads) {
      const pod = w.spec?.template?.spec as PodSpec;
      const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
      for (const claim of w.spec?.volumeClaimTemplates ?? [])
        volumes.set(claim.metadata.name, { name: claim.metadata.name });
      for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
        const where = `${w.metadata.name}/${c.name}`;
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (ref) expect(Object.keys(secrets.get(ref.name) ?? {}), `${where} env ${e.name}`).toContain(ref.key);
        }
        for (const e of c.envFrom ?? []) expect(secrets.has(e.secretRef?.name ?? ""), where).toBe(true);
        for (const m of c.volumeMounts ?? []) {
          const volume = volumes.get(m.name);
          expect(volume, `${where} mounts ${m.name}`).toBeDefined();
          if (volume?.configMap) expect(configMaps.has(volume.configMap.name), `${where} ${m.name}`).toBe(true);
        }
        for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
          const port = probe?.httpGet?.port;
          if (port === undefined) continue;
          const declared = (c.ports ?? []).map((p) => (typeof port === "string" ? p.name : p.containerPort));
          expect(declared, `${where} probe port ${port}`).toContain(port);
        }
      }
    }
    for (const svc of objects.filter((o) => o.kind === "Service")) {
      const target = workloads.find((w) =>
        Object.entries(svc.spec?.selector ?? {}).every(([k, v]) => w.spec?.template?.metadata.labels[k] === v),
      );
      expect(target, `Service ${svc.metadata.name} selects a workload`).toBeDefined();
      const ports = target?.spec?.template?.spec.containers.flatMap((c) => c.ports ?? []) ?? [];
      for (const p of svc.spec?.ports ?? [])
        expect(
          ports.map((cp) => cp.name),
          svc.metadata.name,
        ).toContain(p.targetPort);
    }
  });

  it("runs the image the Dockerfile builds, at the package's version, as commands the CLI accepts", async () => {
    const containers = aigwContainers(workloads);
    expect(containers.map((c) => c.container.args?.[0]).sort()).toEqual(["control-plane", "sidecar"]);
    const helps = new Map<string, string>();
    for (const { workload, container } of containers) {
      const where = `${workload.metadata.name}/${container.name}`;
      expect(container.image, where).toBe(`aigw:${VERSION}`);
      // The image's ENTRYPOINT is aigw: the manifest gives args only.
      expect(container.command, where).toBeUndefined();
      const [verbName = "", ...args] = container.args ?? [];
      const group = (await loadCommandGroups()).find((g) => g.name === verbName);
      expect(group, where).toBeDefined();
      const verb = group!.verbs[0]!;
      expect(() => parseVerbArgs(args, verb, verb.admin ? ADMIN_FLAGS : {}), where).not.toThrow();
      if (!helps.has(verbName)) {
        helps.set(verbName, (await run(process.execPath, [AIGW_BIN, verbName, "--help"])).stdout);
      }
      for (const flag of args.filter((a) => a.startsWith("--")).map((a) => a.split("=")[0] as string)) {
        expect(helps.get(verbName), `${where}: ${flag} in aigw ${verbName} --help`).toMatch(
          new RegExp(`^ {2}${flag} `, "m"),
        );
      }
    }
  });

  it("runs the control plane as 2 replicas on PostgreSQL, ready on /readyz of its --http port", () => {
    const [cp] = aigwContainers(workloads).filter((c) => c.container.args?.[0] === "control-plane");
    expect(cp?.workload.kind).toBe("Deployment");
    expect(cp?.workload.spec?.replicas).toBe(2);
    const args = cp?.container.args ?? [];
    expect(flagValue(args, "store")).toMatch(/^postgres:\/\/[^:@]+@[^/]+\/\w+$/); // no password in the URL
    expect(Object.keys(secrets.get("aigw") ?? {})).toContain("PGPASSWORD");
    const http = flagValue(args, "http");
    expect(http?.startsWith("0.0.0.0:")).toBe(true); // the kubelet probes the pod IP
    const readiness = cp?.container.readinessProbe?.httpGet;
    expect(readiness?.path).toBe("/readyz");
    const port = cp?.container.ports?.find((p) => p.name === readiness?.port);
    expect(port?.containerPort).toBe(portOf(http));
    // The config file it is given is the ConfigMap's key, mounted where --config says.
    const mount = cp?.container.volumeMounts?.find((m) => flagValue(args, "config")?.startsWith(`${m.mountPath}/`));
    const volume = cp?.pod.volumes?.find((v) => v.name === mount?.name);
    const key = flagValue(args, "config")?.slice((mount?.mountPath.length ?? 0) + 1);
    expect(Object.keys(configMaps.get(volume?.configMap?.name ?? "") ?? {})).toContain(key);
  });

  it("runs the sidecar beside the app, ready on /readyz of its --admin-listen port, pointed at the control plane's Service", () => {
    const [sc] = aigwContainers(workloads).filter((c) => c.container.args?.[0] === "sidecar");
    const args = sc?.container.args ?? [];
    const app = sc?.pod.containers.find((c) => c.name !== sc.container.name);
    expect(app, "an app container in the same pod").toBeDefined();
    const admin = flagValue(args, "admin-listen");
    expect(admin?.startsWith("0.0.0.0:")).toBe(true);
    const readiness = sc?.container.readinessProbe?.httpGet;
    expect(readiness?.path).toBe("/readyz");
    expect(sc?.container.ports?.find((p) => p.name === readiness?.port)?.containerPort).toBe(portOf(admin));
    // The app's base URL is the sidecar's --listen address.
    const listen = flagValue(args, "listen");
    expect(app?.env?.find((e) => e.name === "OPENAI_BASE_URL")?.value).toBe(`http://${listen}/v1`);
    // --control-plane is the control plane's Service and its gRPC port.
    const target = new URL(flagValue(args, "control-plane") ?? "");
    const svc = objects.find((o) => o.kind === "Service" && o.metadata.name === target.hostname);
    expect(svc?.spec?.ports?.find((p) => p.name === "grpc")?.port).toBe(Number(target.port));
    expect(sc?.container.env?.some((e) => e.name === "AIGW_SIDECAR_TOKEN")).toBe(true);
  });

  it("has a ConfigMap config that loads with the Secret's values, tokens included", () => {
    const text = configMaps.get("aigw-config")?.["webhook_config.yaml"];
    expect(text).toBeTypeOf("string");
    const env = secrets.get("aigw") ?? {};
    const config = parseConfig(text as string, { file: "config.yaml#webhook_config.yaml", env });
    expect(config.auth.adminTokens).toEqual([env.AIGW_ADMIN_TOKEN]);
    expect(config.auth.sidecarTokens).toEqual([env.AIGW_SIDECAR_TOKEN]);
    expect(config.webhooks.primary?.failoverTo).toBe("backup");
    // Every ${VAR} of the config is a key of the Secret the control plane gets as its env.
    for (const [, name] of (text as string).matchAll(/\$\{(\w+)\}/g)) expect(Object.keys(env)).toContain(name);
  });

  it("starts a control plane from the manifest's command line, config and Secret, on PostgreSQL", async () => {
    if (await skipWithoutPostgres("the Kubernetes example's control plane on PostgreSQL")) return;
    const [cp] = aigwContainers(workloads).filter((c) => c.container.args?.[0] === "control-plane");
    const args = [...(cp?.container.args ?? [])];
    const db = await createTestDatabase();
    const dir = mkdtempSync(join(tmpdir(), "aigw-k8s-"));
    try {
      const config = join(dir, "webhook_config.yaml");
      writeFileSync(config, configMaps.get("aigw-config")?.["webhook_config.yaml"] ?? "");
      // Only where things are changes: this machine's database, a temp file, loopback ports.
      const local = args.map((a) =>
        a.startsWith("--store=")
          ? `--store=${db.url}`
          : a.startsWith("--config=")
            ? `--config=${config}`
            : a.replace(/^(--grpc|--http)=0\.0\.0\.0:\d+$/, "$1=127.0.0.1:0"),
      );
      const env = secrets.get("aigw") ?? {};
      const p = runAigw(local, env);
      try {
        const ready = await p.waitForLog("control plane ready");
        expect(ready.store).toBe("postgres");
        const http = String(ready.http);
        await waitFor("/readyz", async () => (await fetch(`${http}/readyz`)).status === 200);
        const list = await run(process.execPath, [AIGW_BIN, "endpoints", "list", "--admin", http], {
          env: { ...process.env, AIGW_ADMIN_TOKEN: env.AIGW_ADMIN_TOKEN },
        });
        expect(list.stdout).toMatch(/^primary +- \(operator\) +https:\/\/api\.yoursite\.com\/webhooks\/ai /m);
        expect(list.stdout).toMatch(/^backup +- \(operator\) +https:\/\/backup\.yoursite\.com\/hooks /m);
      } finally {
        p.child.kill("SIGTERM");
        expect(await p.exited).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await db.drop();
    }
  });
});
