import { parseArgs } from "node:util";
import { type FlagDefs, Flags, UsageError, type Verb } from "./command.js";

export type ParsedArgs = { help: true } | { help: false; args: string[]; flags: Flags };

/**
 * One parser for every verb, on node:util.parseArgs: `--flag value`, `--flag=value`,
 * `--` ending the flags, `-h`/`--help` anywhere. Errors name the flag and say what is
 * wrong with it; the caller adds the verb's usage.
 */
export function parseVerbArgs(argv: readonly string[], verb: Verb, extraFlags: FlagDefs = {}): ParsedArgs {
  const defs: FlagDefs = { ...verb.flags, ...extraFlags };
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [name, def] of Object.entries(defs)) {
    options[name] = def.multiple ? { type: def.type, multiple: true } : { type: def.type };
  }
  // Not strict: the tokens are checked below, with messages that say which flag is wrong.
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  let terminated = false;
  for (const t of tokens) {
    if (t.kind === "option-terminator") terminated = true;
    if (!terminated && t.kind === "option" && t.name === "help") return { help: true };
  }

  const args: string[] = [];
  const values = new Map<string, string | true | string[]>();
  for (const t of tokens) {
    if (t.kind === "positional") {
      args.push(t.value);
      continue;
    }
    if (t.kind !== "option") continue;
    const def = defs[t.name];
    if (def === undefined) throw new UsageError(`unknown flag ${t.rawName}${suggest(t.name, Object.keys(defs), "--")}`);
    if (def.type === "boolean") {
      if (t.inlineValue) throw new UsageError(`${t.rawName} takes no value`);
      values.set(t.name, true);
      continue;
    }
    const value = t.value;
    // "--url --secret s": the next flag is not --url's value; "--limit -1" is a (bad) value,
    // left for the flag's own check to name.
    if (value === undefined || (!t.inlineValue && value.startsWith("-") && !/^-(\d|$)/.test(value))) {
      throw new UsageError(`${t.rawName} needs a value${def.value ? ` (${def.value})` : ""}`);
    }
    if (def.multiple) {
      const list = values.get(t.name);
      values.set(t.name, Array.isArray(list) ? [...list, value] : [value]);
    } else {
      if (values.has(t.name)) throw new UsageError(`${t.rawName} given twice`);
      values.set(t.name, value);
    }
  }

  const argDefs = verb.args ?? [];
  const required = argDefs.filter((a) => !a.optional).length;
  if (args.length < required) {
    throw new UsageError(
      `missing ${argDefs
        .slice(args.length, required)
        .map((a) => a.name)
        .join(" ")}`,
    );
  }
  if (args.length > argDefs.length) throw new UsageError(`unexpected argument "${args[argDefs.length]}"`);
  for (const [name, def] of Object.entries(defs)) {
    if (def.required && !values.has(name)) throw new UsageError(`--${name} is required`);
  }
  return { help: false, args, flags: new Flags(values) };
}

/** ` (did you mean --url?)` for a near miss, else "". */
export function suggest(word: string, choices: readonly string[], prefix = ""): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const c of choices) {
    const d = editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best === undefined ? "" : ` (did you mean ${prefix}${best}?)`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        (prev[j] ?? 0) + 1,
        (row[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}
