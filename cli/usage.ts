import type { CommandGroup, FlagDef, FlagDefs, Section, Verb } from "./command.js";

const WIDTH = 100;

/** "aigw endpoints create" */
export function verbLabel(group: CommandGroup, verb: Verb): string {
  return verb.name === "" ? group.name : `${group.name} ${verb.name}`;
}

/** The verb's usage lines, wrapped, each starting with "aigw …". */
export function synopsis(group: CommandGroup, verb: Verb): string[] {
  const head = `aigw ${verbLabel(group, verb)}`;
  if (verb.synopsis) return verb.synopsis.flatMap((line) => wrap(`${head}${line === "" ? "" : ` ${line}`}`, head));
  const parts: string[] = [];
  for (const a of verb.args ?? []) parts.push(a.optional ? `[${a.name}]` : a.name);
  const flags = Object.entries(verb.flags ?? {}).filter(([, def]) => !def.common);
  for (const [name, def] of flags) if (def.required) parts.push(flagText(name, def));
  for (const [name, def] of flags) if (!def.required) parts.push(`[${flagText(name, def)}]`);
  return wrap([head, ...parts].join(" "), head);
}

function flagText(name: string, def: FlagDef): string {
  if (def.type === "boolean") return `--${name}`;
  return `--${name} ${def.value ?? "VALUE"}${def.multiple ? " …" : ""}`;
}

/** Wraps at WIDTH between flags, continuation lines indented under the first argument. */
function wrap(line: string, head: string): string[] {
  if (line.length <= WIDTH) return [line];
  const indent = " ".repeat(head.length + 1);
  // Split only before a flag or an optional part, never inside "--url URL".
  const pieces = line.slice(head.length + 1).split(/ (?=\[|--|\|)/);
  const out: string[] = [];
  let current = head;
  for (const piece of pieces) {
    if (current.length + 1 + piece.length > WIDTH && current.trim() !== head && current.trim() !== "") {
      out.push(current);
      current = `${indent}${piece}`;
    } else {
      current = `${current} ${piece}`;
    }
  }
  out.push(current);
  return out;
}

const ADMIN_NOTE = "Admin API flags: --admin URL, --token T, --json (see aigw --help)";

/** `aigw GROUP VERB --help` */
export function verbHelp(group: CommandGroup, verb: Verb, adminFlags: FlagDefs): string {
  let text = `aigw ${verbLabel(group, verb)} — ${verb.summary}\n\nUsage:\n`;
  text += synopsis(group, verb)
    .map((l) => `  ${l}\n`)
    .join("");
  if (verb.details) text += `\n${verb.details.trimEnd()}\n`;
  const own = Object.entries(verb.flags ?? {});
  const admin = verb.admin ? Object.entries(adminFlags) : [];
  // One column for every flag of the page, -h included.
  const width = Math.max(12, ...[...own, ...admin].map(([name, def]) => flagText(name, def).length + 2));
  const rows = (flags: [string, FlagDef][]): string =>
    flags
      .map(([name, def]) => `  ${flagText(name, def).padEnd(width)}${def.help}${def.required ? " (required)" : ""}\n`)
      .join("");
  if (own.length > 0) text += `\nFlags:\n${rows(own)}`;
  if (admin.length > 0) text += `\nAdmin API flags:\n${rows(admin)}`;
  text += `${own.length + admin.length === 0 ? "\nFlags:\n" : ""}  ${"-h, --help".padEnd(width)}this help\n`;
  return text;
}

/** `aigw GROUP --help`: every verb of the group. */
export function groupHelp(group: CommandGroup): string {
  let text = `aigw ${group.name} — ${group.summary}\n\nUsage:\n`;
  for (const verb of group.verbs) {
    text += synopsis(group, verb)
      .map((l) => `  ${l}\n`)
      .join("");
  }
  text += "\nVerbs:\n";
  const width = Math.max(...group.verbs.map((v) => v.name.length)) + 2;
  for (const verb of group.verbs) text += `  ${verb.name.padEnd(width)}${verb.summary}\n`;
  text += `\nRun "aigw ${group.name} VERB --help" for a verb's flags.\n`;
  if (group.verbs.some((v) => v.admin)) text += `${ADMIN_NOTE}\n`;
  return text;
}

/** The usage printed with a usage error: the verb's own lines (or its group's), not everything. */
export function shortUsage(group: CommandGroup, verb: Verb | undefined): string {
  const lines = verb ? synopsis(group, verb) : group.verbs.flatMap((v) => synopsis(group, v));
  const help = verb ? `aigw ${verbLabel(group, verb)} --help` : `aigw ${group.name} --help`;
  return `Usage:\n${lines.map((l) => `  ${l}\n`).join("")}Run "${help}" for details.\n`;
}

const SECTIONS: Record<Section, string> = {
  run: "Run aigw",
  watch: "The live feed",
  tools: "For receivers",
  admin: "Admin commands (over the control plane's Admin API)",
};

/** Every verb's usage lines by section: the heart of `aigw --help` and of the README's CLI block. */
export function commandSummary(groups: readonly CommandGroup[]): string {
  let text = "";
  for (const section of Object.keys(SECTIONS) as Section[]) {
    const inSection = groups.filter((g) => g.section === section);
    if (inSection.length === 0) continue;
    text += `${text === "" ? "" : "\n"}${SECTIONS[section]}:\n`;
    for (const group of inSection) {
      for (const verb of group.verbs) {
        text += synopsis(group, verb)
          .map((l) => `  ${l}\n`)
          .join("");
      }
    }
  }
  return text;
}
