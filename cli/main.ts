import { errorCodeOf } from "../common/errors.js";
import { VERSION } from "../common/version.js";
import { ConfigError } from "../control-plane/config/types.js";
import { ADMIN_FLAGS, DEFAULT_ADMIN_URL } from "./admin-flags.js";
import { parseVerbArgs, suggest } from "./args.js";
import { type CliIo, type CommandGroup, UsageError, type Verb } from "./command.js";
import { COMMANDS, type CommandEntry, loadCommandGroups } from "./commands/index.js";
import { commandSummary, groupHelp, shortUsage, verbHelp, verbLabel } from "./usage.js";

export type { CliIo } from "./command.js";

/** `aigw --help` */
export function usage(groups: readonly CommandGroup[]): string {
  return `aigw ${VERSION} — signed, retried webhooks for your AI traffic

${commandSummary(groups)}
  aigw --help | --version
  aigw COMMAND --help        one command's flags (aigw deliveries replay --help)

Admin API flags (admin commands and watch):
  --admin URL   the control plane's HTTP address (env AIGW_ADMIN_URL; default ${DEFAULT_ADMIN_URL})
  --token T     admin bearer token (env AIGW_ADMIN_TOKEN)
  --json        print the response as JSON

Environment: AIGW_ADMIN_URL, AIGW_ADMIN_TOKEN, AIGW_SIDECAR_TOKEN, AIGW_LOG_LEVEL, NO_COLOR; \${VAR} in config files.
Sidecar environment: AIGW_SIDECAR_ENGINE=node (node:http + undici instead of the lean engine),
  AIGW_SIDECAR_IDLE_GC=S (seconds quiet after load before a full garbage collection and malloc_trim
    give its memory back, default 30; 0 never),
  AIGW_SIDECAR_YOUNG_GENERATION_MB=N (V8's young generation bound, default 8; 0 leaves V8's own sizing).
Exit status: 0 done, 1 failed (the API's error is printed), 2 a bad command line or config file.
`;
}

/**
 * The CLI: returns the exit code (0 done, 1 failed, 2 a bad command line or config).
 * A thin bin/aigw.js calls this.
 */
export async function main(
  argv: readonly string[],
  io: CliIo,
  commands: readonly CommandEntry[] = COMMANDS,
): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    const text = usage(await loadCommandGroups(commands));
    if (command === undefined) {
      io.err(text);
      return 2;
    }
    io.out(text);
    return 0;
  }
  if (command === "--version" || command === "version") {
    io.out(`${VERSION}\n`);
    return 0;
  }
  const entry = commands.find((c) => c.name === command);
  if (entry === undefined) {
    const names = commands.map((c) => c.name);
    io.err(
      `aigw: unknown command "${command}"${suggest(command, names)}\n` +
        `Commands: ${names.join(", ")}\nRun "aigw --help" for usage.\n`,
    );
    return 2;
  }
  const group = await entry.load();

  let verb: Verb | undefined;
  let args: readonly string[];
  const single = group.verbs.length === 1 && group.verbs[0]?.name === "";
  if (single) {
    verb = group.verbs[0];
    args = rest;
  } else {
    const [name = "", ...more] = rest;
    if (name === "--help" || name === "-h") {
      io.out(groupHelp(group));
      return 0;
    }
    verb = group.verbs.find((v) => v.name === name);
    if (verb === undefined) {
      const names = group.verbs.map((v) => v.name);
      const message =
        name === "" || name.startsWith("-")
          ? `missing verb, one of ${names.join(", ")}`
          : `unknown verb "${name}"${suggest(name, names)}, expected one of ${names.join(", ")}`;
      io.err(`aigw ${group.name}: ${message}\n${shortUsage(group, undefined)}`);
      return 2;
    }
    args = more;
  }
  if (verb === undefined) return 2;
  const label = verbLabel(group, verb);
  try {
    const parsed = parseVerbArgs(args, verb, verb.admin ? ADMIN_FLAGS : {});
    if (parsed.help) {
      io.out(verbHelp(group, verb, ADMIN_FLAGS));
      return 0;
    }
    return (await verb.run({ args: parsed.args, flags: parsed.flags, io, label })) ?? 0;
  } catch (err) {
    return await report(err, io, group, verb, label);
  }
}

async function report(err: unknown, io: CliIo, group: CommandGroup, verb: Verb, label: string): Promise<number> {
  if (err instanceof UsageError) {
    io.err(`aigw ${label}: ${err.message}\n${shortUsage(group, verb)}`);
    return 2;
  }
  if (err instanceof ConfigError) {
    io.err(`aigw: ${err.code}: ${err.message}\n`);
    return 2;
  }
  // By name: the RPC stack is loaded only by the verbs that call it.
  if (err instanceof Error && err.name === "ConnectError") {
    const [{ ConnectError }, { describeRpcError }] = await Promise.all([
      import("@connectrpc/connect"),
      import("../common/rpc-errors.js"),
    ]);
    io.err(`aigw: ${describeRpcError(ConnectError.from(err))}\n`);
    return 1;
  }
  const code = errorCodeOf(err);
  io.err(`aigw: ${code ? `${code}: ` : ""}${err instanceof Error ? err.message : String(err)}\n`);
  return 1;
}
