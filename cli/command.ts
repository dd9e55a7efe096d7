/**
 * The shape of every `aigw` verb. A verb group (endpoints, deliveries, tokens…) is one
 * file under cli/commands/ exporting a `CommandGroup`; cli/commands/index.ts lists them.
 * Parsing, usage text and `--help` come from these declarations (cli/args.ts, cli/usage.ts),
 * so a verb only says what it takes and what it does.
 */

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
  /** stdout is a terminal: colour and aligned columns (never when piped). */
  isTTY?: boolean;
  /** Resolves when the process should stop (SIGINT/SIGTERM); long-running verbs wait on it. */
  stopped?: Promise<void>;
}

export interface FlagDef {
  type: "string" | "boolean";
  /** Placeholder in usage for a string flag's value, e.g. "URL". */
  value?: string;
  help: string;
  required?: boolean;
  /** May be given more than once (read with `flags.list`). */
  multiple?: boolean;
  /** A connection flag (--admin, --token): in `--help`, left out of usage lines. */
  common?: boolean;
}

export type FlagDefs = Readonly<Record<string, FlagDef>>;

export interface ArgDef {
  name: string;
  optional?: boolean;
}

export interface VerbInput {
  args: string[];
  flags: Flags;
  io: CliIo;
  /** "endpoints create": what errors and notices are prefixed with. */
  label: string;
}

export interface Verb {
  /** The word after the group ("list"), or "" when the group is a single verb (stats). */
  name: string;
  summary: string;
  args?: readonly ArgDef[];
  flags?: FlagDefs;
  /** Usage lines when the verb has alternative forms; generated from args and flags otherwise. */
  synopsis?: readonly string[];
  /** More text for `--help`. */
  details?: string;
  /** Takes the Admin API flags (--admin, --token, --json); set by `adminVerb`. */
  admin?: boolean;
  /** The exit code (default 0). */
  run(input: VerbInput): Promise<number | undefined>;
}

export type Section = "run" | "watch" | "tools" | "admin";

export interface CommandGroup {
  name: string;
  summary: string;
  section: Section;
  verbs: readonly Verb[];
}

/** A mistake in the command line: the verb's usage is printed and the exit code is 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Parsed flag values, read by name. */
export class Flags {
  constructor(private readonly values: ReadonlyMap<string, string | true | string[]>) {}

  has(name: string): boolean {
    return this.values.has(name);
  }

  string(name: string): string | undefined {
    const v = this.values.get(name);
    return typeof v === "string" ? v : undefined;
  }

  /** A required string flag (the parser has checked it is there). */
  require(name: string): string {
    const v = this.string(name);
    if (v === undefined) throw new UsageError(`--${name} is required`);
    return v;
  }

  bool(name: string): boolean {
    return this.values.get(name) === true;
  }

  list(name: string): string[] {
    const v = this.values.get(name);
    return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
  }
}
