import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCommandGroups } from "../../cli/commands/index.js";
import { main } from "../../cli/main.js";
import { commandSummary } from "../../cli/usage.js";
import { REPO_ROOT, runAigw } from "../support/processes.js";
import { testStoreLocation } from "../support/store.js";

/** The CLI in-process (the same main() bin/aigw.js runs), for checks over every verb. */
async function runMain(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, {
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    env: {},
  });
  return { code, out, err };
}

// The built CLI as a user runs it: `npx aigw …` → bin/aigw.js → dist/.
describe("aigw CLI", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "aigw-cli-"));
  });
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("--help lists every command", async () => {
    const p = runAigw(["--help"]);
    expect(await p.exited).toBe(0);
    const out = p.lines.join("\n");
    for (const word of [
      "control-plane",
      "sidecar",
      "watch",
      "endpoints",
      "deliveries",
      "send-test",
      "keys rotate",
      "stats",
    ]) {
      expect(out).toContain(word);
    }
  });

  it("README's CLI block is the usage of every verb, as --help prints it", async () => {
    const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
    const block = /### CLI\n\n```\n([\s\S]*?)```/.exec(readme)?.[1];
    const summary = commandSummary(await loadCommandGroups());
    expect(block, "README.md's CLI block (regenerate it from cli/usage.ts commandSummary)").toBe(summary);
    const p = runAigw(["--help"]);
    expect(await p.exited).toBe(0);
    expect(`${p.lines.join("\n")}\n`).toContain(summary);
  });

  it("every verb answers --help with its usage, and a usage error with that usage only", async () => {
    for (const group of await loadCommandGroups()) {
      for (const verb of group.verbs) {
        const words = verb.name === "" ? [group.name] : [group.name, verb.name];
        const what = words.join(" ");
        const help = await runMain([...words, "--help"]);
        expect(help.code, what).toBe(0);
        expect(help.out.split("\n")[0], what).toBe(`aigw ${what} — ${verb.summary}`);
        const bad = await runMain([...words, "--no-such-flag"]);
        expect(bad.code, what).toBe(2);
        expect(bad.err).toMatch(new RegExp(`^aigw ${what}: unknown flag --no-such-flag\nUsage:\n`));
        // The error, "Usage:", that verb's few synopsis lines and the --help hint; the
        // whole command list is 50 lines.
        expect(bad.err.split("\n").length, what).toBeLessThan(10);
        expect(bad.err, what).not.toContain("Admin commands");
      }
    }
  });

  it("starts on the product page's webhook_config.yaml unchanged and stops on SIGTERM", async () => {
    const location = await testStoreLocation();
    cleanups.push(location.cleanup);
    const p = runAigw(
      [
        "control-plane",
        "--config",
        "examples/webhook_config.yaml",
        "--store",
        location.url,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
      ],
      {
        WEBHOOK_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        BACKUP_WEBHOOK_SECRET: "a-raw-secret-used-as-bytes",
        // PostgreSQL needs a key; the file does not name one, so it comes from the environment.
        ...(location.encryptionKey ? { AIGW_ENCRYPTION_KEY: location.encryptionKey } : {}),
      },
    );
    const ready = await p.waitForLog("control plane ready");
    const health = await fetch(`${String(ready.http)}/healthz`);
    expect(health.status).toBe(200);
    const endpoints = await fetch(`${String(ready.http)}/aigw.v1.AdminService/ListEndpoints`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    }).then((r) => r.json() as Promise<{ endpoints: { name: string; url: string }[] }>);
    expect(endpoints.endpoints.map((e) => e.url).sort()).toEqual([
      "https://api.yoursite.com/webhooks/ai",
      "https://backup.yoursite.com/hooks",
    ]);
    p.child.kill("SIGTERM");
    expect(await p.exited).toBe(0);
  });

  it("refuses a config with a missing variable, naming it and its line", async () => {
    const p = runAigw(
      ["control-plane", "--config", "examples/webhook_config.yaml", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
      {
        WEBHOOK_SECRET: undefined,
        BACKUP_WEBHOOK_SECRET: "x",
      },
    );
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/webhook_config\.yaml:6: webhooks\.primary\.secret: .*WEBHOOK_SECRET/);
  });

  it("lists every problem of a bad file at once, with path and line", async () => {
    const file = join(dir, "bad.yaml");
    writeFileSync(
      file,
      [
        "webhooks:",
        "  primary:",
        '    url: "ftp://example.com/hook"',
        '    secret: "s3cret"',
        "    colour: blue",
        "retry:",
        "  initial_delay_ms: -5",
        '  max_attempts: "many"',
        "",
      ].join("\n"),
    );
    const p = runAigw(["control-plane", "--config", file, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    expect(await p.exited).toBe(2);
    const err = p.stderr();
    expect(err).toMatch(/bad\.yaml:3: webhooks\.primary\.url/);
    expect(err).toMatch(/bad\.yaml:5: webhooks\.primary\.colour/);
    expect(err).toMatch(/bad\.yaml:7: retry\.initial_delay_ms/);
    expect(err).toMatch(/bad\.yaml:8: retry\.max_attempts/);
    expect(err).toMatch(/^aigw: AIGW_CONFIG_INVALID: \S*bad\.yaml: 5 problems:\n/);
  });

  it("refuses a binary or empty config file by name, without echoing its bytes", async () => {
    const binary = join(dir, "binary.yaml");
    // What a gzip or an image left at the config's path starts like: control bytes, NUL, high bytes.
    writeFileSync(binary, Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x1b, 0x5b, 0x32, 0x4a, 0xff, 0xfe, 0x00, 0x9b, 0x41]));
    const b = runAigw(["control-plane", "--config", binary, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    expect(await b.exited).toBe(2);
    expect(b.stderr()).toBe(
      `aigw: AIGW_CONFIG_UNREADABLE: ${binary}: 1 problem:\n  ${binary}:1: (file): is not a text file (the control byte 0x1f at byte 0); expected a UTF-8 YAML file such as examples/webhook_config.yaml\n`,
    );
    const empty = join(dir, "empty.yaml");
    writeFileSync(empty, "");
    const e = runAigw(["control-plane", "--config", empty, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    expect(await e.exited).toBe(2);
    expect(e.stderr()).toMatch(
      /^aigw: AIGW_CONFIG_UNREADABLE: \S*empty\.yaml: 1 problem:\n {2}\S*empty\.yaml:1: \(file\): is empty;/,
    );
  });

  it("answers a bad listen address or store URL as a usage mistake (exit 2, the verb's usage), before starting", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["control-plane", "--config", "x.yaml", "--grpc", "bogus"],
        /^aigw control-plane: --grpc: "bogus" is not HOST:PORT/,
      ],
      [
        ["control-plane", "--config", "x.yaml", "--http", "127.0.0.1:99999"],
        /^aigw control-plane: --http: "127\.0\.0\.1:99999" is not HOST:PORT/,
      ],
      [
        ["control-plane", "--config", "x.yaml", "--store", "mysql://u:hunter2@db/aigw"],
        /^aigw control-plane: --store: has the unsupported scheme "mysql"; expected "sqlite:PATH"/,
      ],
      [
        ["sidecar", "--control-plane", "http://127.0.0.1:1", "--listen", ":abc"],
        /^aigw sidecar: --listen: ":abc" is not HOST:PORT/,
      ],
      [
        ["sidecar", "--control-plane", "http://127.0.0.1:1", "--admin-listen", "x"],
        /^aigw sidecar: --admin-listen: "x" is not HOST:PORT/,
      ],
    ];
    for (const [argv, message] of cases) {
      const r = await runMain(argv);
      const what = argv.join(" ");
      expect(r.code, what).toBe(2);
      expect(r.err, what).toMatch(message);
      expect(r.err, what).toMatch(/\nUsage:\n {2}aigw (control-plane|sidecar) --/);
      expect(r.err, what).not.toContain("hunter2");
    }
  });

  it("refuses to listen beyond loopback without tokens", async () => {
    const file = join(dir, "open.yaml");
    writeFileSync(file, "security:\n  require_https: false\n");
    const p = runAigw([
      "control-plane",
      "--config",
      file,
      "--store",
      `sqlite:${join(dir, "open.db")}`,
      "--grpc",
      "0.0.0.0:0",
      "--http",
      "127.0.0.1:0",
    ]);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/^aigw: AIGW_LISTEN_UNPROTECTED: control-plane: refusing .*auth\.admin_tokens/);
  });

  it("refuses a control-plane address that is not one, instead of retrying it forever", async () => {
    const p = runAigw(["sidecar", "--control-plane", "not a url", "--listen", "127.0.0.1:0"]);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/--control-plane: "not a url" is not the control plane's gRPC address/);
  });

  it("rejects unknown flags with usage", async () => {
    const p = runAigw(["sidecar", "--control-plane", "http://127.0.0.1:1", "--frobnicate"]);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toMatch(/frobnicate/);
  });
});
