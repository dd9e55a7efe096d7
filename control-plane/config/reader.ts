import { type Document, isAlias, isMap, isScalar, isSeq, type LineCounter, type Node } from "yaml";
import { type ConfigEnv, substituteEnv } from "./env-substitution.js";
import type { ConfigProblem } from "./types.js";

/** One value in the file and where it sits. */
export interface Field {
  /** Dotted path as written in the file: "webhooks.primary.url", "budgets[0].org_id". */
  path: string;
  /** Line of the key (or list item) holding the value, for problems about the value as a whole. */
  line: number;
  /** The value node; null when the key has no value at all. */
  node: Node | null;
}

export interface Entry {
  key: string;
  field: Field;
}

/**
 * What a number in the file may be. Every number has both bounds (an upper one too:
 * `max_attempts: 1e308` is a whole number, and a delay past 2^31 ms overflows a timer), and
 * messages state them, so the range lives here and nowhere else.
 */
export type NumberRule = {
  /** What the number is, for messages: "a whole number of milliseconds" (the range is added). */
  expected: string;
  integer?: boolean;
  /** Said after the range: "(1 keeps every delay the same, 2 doubles it)". */
  hint?: string;
} & ({ min: number; above?: never } | { above: number; min?: never }) &
  ({ max: number; below?: never } | { below: number; max?: never });

/**
 * What is wrong with a number under a rule, or undefined: the same words for the config
 * file and for the Admin API fields that set the same things (budgets, prices).
 */
export function numberProblem(value: number, rule: NumberRule): string | undefined {
  const wrong =
    !Number.isFinite(value) ||
    (rule.integer && !Number.isInteger(value)) ||
    (rule.min !== undefined && value < rule.min) ||
    (rule.max !== undefined && value > rule.max) ||
    (rule.above !== undefined && value <= rule.above) ||
    (rule.below !== undefined && value >= rule.below);
  return wrong ? `must be ${describeNumberRule(rule)}, got ${value}` : undefined;
}

/** "a whole number of attempts from 1 to 100" */
export function describeNumberRule(rule: NumberRule): string {
  const low = rule.min !== undefined ? rule.min : rule.above;
  const high = rule.max !== undefined ? rule.max : rule.below;
  const range =
    rule.min !== undefined && rule.max !== undefined
      ? `from ${low} to ${high}`
      : rule.min !== undefined
        ? `from ${low} up to (not including) ${high}`
        : rule.max !== undefined
          ? `above ${low}, at most ${high}`
          : `between ${low} and ${high} (exclusive)`;
  return `${rule.expected} ${range}${rule.hint ? ` ${rule.hint}` : ""}`;
}

export interface StringRule {
  /** Never echo the value in a message (secrets, tokens). */
  sensitive?: boolean;
  allowEmpty?: boolean;
}

const NUMBER_TEXT = /^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/;

/**
 * Walks the parsed YAML tree and collects every problem instead of stopping at the first.
 * Readers return undefined for an absent or invalid value; invalid ones are remembered by
 * path so checks across fields skip values that are already reported.
 */
export class ConfigReader {
  readonly problems: ConfigProblem[] = [];
  private readonly invalid = new Set<string>();

  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
    private readonly env: ConfigEnv,
  ) {}

  root(): Field {
    return { path: "", line: 1, node: this.resolve(this.doc.contents as Node | null) };
  }

  child(parent: Field, key: string | number, line: number, node: Node | null): Field {
    const path =
      typeof key === "number" ? `${parent.path}[${key}]` : parent.path === "" ? key : `${parent.path}.${key}`;
    return { path, line, node: this.resolve(node) };
  }

  report(path: string, line: number, message: string): void {
    this.problems.push({ path: path || "(root)", line, message });
    this.invalid.add(path);
  }

  fail(field: Field, message: string): void {
    this.report(field.path, this.lineOf(field), message);
  }

  /** Fails at the key's own line, for problems about a whole entry rather than its value. */
  failEntry(field: Field, message: string): void {
    this.report(field.path, field.line, message);
  }

  isValid(...paths: string[]): boolean {
    return paths.every((p) => !this.invalid.has(p));
  }

  /** No problem at `path` nor anywhere inside it. */
  isValidTree(path: string): boolean {
    return !this.problems.some(
      (p) => p.path === path || p.path.startsWith(`${path}.`) || p.path.startsWith(`${path}[`),
    );
  }

  lineAt(offset: number): number {
    return this.lines.linePos(offset).line;
  }

  lineOf(field: Field): number {
    const node = field.node;
    if (!node?.range || (isScalar(node) && node.value === null)) return field.line;
    return this.lineAt(node.range[0]);
  }

  /** Key/value pairs of a mapping; [] when absent or empty, and a problem when not a mapping. */
  entries(field: Field | undefined, what = "a mapping"): Entry[] {
    if (!field || isEmpty(field.node)) return [];
    const node = field.node;
    if (!isMap(node)) {
      this.fail(field, `expected ${what}, got ${describe(node)}`);
      return [];
    }
    const seen = new Map<string, number>();
    const out: Entry[] = [];
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      const line = keyNode?.range ? this.lineAt(keyNode.range[0]) : this.lineOf(field);
      if (!isScalar(keyNode) || keyNode.value === null || typeof keyNode.value === "object") {
        this.report(field.path, line, `expected a plain key (a name), got ${describe(keyNode)}`);
        continue;
      }
      const key = String(keyNode.value);
      const firstLine = seen.get(key);
      if (firstLine !== undefined) {
        this.report(
          this.child(field, key, line, null).path,
          line,
          `is set twice (first on line ${firstLine}); expected each key once`,
        );
        continue;
      }
      seen.set(key, line);
      out.push({ key, field: this.child(field, key, line, pair.value as Node | null) });
    }
    return out;
  }

  /** A mapping with a fixed set of keys; every other key is a problem that lists the allowed ones. */
  section(field: Field | undefined, allowed: readonly string[]): Map<string, Field> {
    const fields = new Map<string, Field>();
    for (const { key, field: child } of this.entries(field, `a mapping with keys ${allowed.join(", ")}`)) {
      if (allowed.includes(key)) fields.set(key, child);
      else this.failEntry(child, unknownKeyMessage(key, allowed));
    }
    return fields;
  }

  /** Items of a list; undefined when absent (use the default) or not a list (reported). */
  list(field: Field | undefined, what = "a list"): Field[] | undefined {
    if (!field || isEmpty(field.node)) return undefined;
    const node = field.node;
    if (!isSeq(node)) {
      this.fail(field, `expected ${what}, got ${describe(node)}`);
      return undefined;
    }
    return node.items.map((item, i) => {
      const n = item as Node | null;
      const line = n?.range ? this.lineAt(n.range[0]) : this.lineOf(field);
      return this.child(field, i, line, n);
    });
  }

  string(field: Field | undefined, rule: StringRule = {}): string | undefined {
    const scalar = this.scalar(field, "a string", rule.sensitive);
    if (!field || !scalar) return undefined;
    const { value } = scalar;
    if (typeof value !== "string") {
      const hint = rule.sensitive ? "" : `; quote it: "${String(value)}"`;
      this.fail(field, `expected a string, got ${describeValue(value, rule.sensitive)}${hint}`);
      return undefined;
    }
    if (!rule.allowEmpty && value.trim() === "") {
      this.fail(field, "is empty; expected a non-empty string");
      return undefined;
    }
    return value;
  }

  boolean(field: Field | undefined): boolean | undefined {
    const scalar = this.scalar(field, "true or false");
    if (!field || !scalar) return undefined;
    let { value } = scalar;
    if (scalar.referenced && (value === "true" || value === "false")) value = value === "true";
    if (typeof value !== "boolean") {
      this.fail(field, `expected true or false, got ${describeValue(value)}`);
      return undefined;
    }
    return value;
  }

  number(field: Field | undefined, rule: NumberRule): number | undefined {
    const scalar = this.scalar(field, rule.expected);
    if (!field || !scalar) return undefined;
    let { value } = scalar;
    // A ${VAR} in a number's place is text until the variable is in: read it as a number then.
    if (scalar.referenced && typeof value === "string" && NUMBER_TEXT.test(value.trim())) value = Number(value);
    if (typeof value !== "number") {
      this.fail(field, `expected ${describeNumberRule(rule)}, got ${describeValue(value)}`);
      return undefined;
    }
    const problem = numberProblem(value, rule);
    if (problem !== undefined) {
      this.fail(field, problem);
      return undefined;
    }
    return value;
  }

  oneOf<T extends string>(field: Field | undefined, allowed: readonly T[]): T | undefined {
    const value = this.string(field, { allowEmpty: true });
    if (!field || value === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(value)) {
      this.fail(field, `must be one of ${allowed.map((a) => `"${a}"`).join(", ")}; got "${value}"`);
      return undefined;
    }
    return value as T;
  }

  /** A list of strings; undefined when absent or when any item is invalid. */
  stringList(field: Field | undefined, rule: StringRule = {}): string[] | undefined {
    const items = this.list(field, "a list of strings");
    if (!items) return undefined;
    const values = items.map((item) => this.string(item, rule));
    return values.every((v) => v !== undefined) ? (values as string[]) : undefined;
  }

  /** The scalar's value with ${VAR} substituted; undefined when absent or reported. */
  private scalar(
    field: Field | undefined,
    expected: string,
    sensitive = false,
  ): { value: unknown; referenced: boolean } | undefined {
    if (!field) return undefined;
    const node = field.node;
    if (!isScalar(node) || node.value === null) {
      this.fail(
        field,
        node === null || isScalar(node)
          ? `has no value; expected ${expected} (or remove the key to use the default)`
          : `expected ${expected}, got ${describe(node, sensitive)}`,
      );
      return undefined;
    }
    if (typeof node.value !== "string") return { value: node.value, referenced: false };
    const sub = substituteEnv(node.value, this.env);
    if (sub.errors.length > 0) {
      for (const message of sub.errors) this.fail(field, message);
      return undefined;
    }
    return { value: sub.value, referenced: sub.referenced };
  }

  private resolve(node: Node | null): Node | null {
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return node;
  }
}

function isEmpty(node: Node | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

function describe(node: Node | null | undefined, sensitive = false): string {
  if (node === null || node === undefined) return "an empty value";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) return describeValue(node.value, sensitive);
  return "an unsupported value";
}

function describeValue(value: unknown, sensitive = false): string {
  if (value === null || value === undefined) return "an empty value";
  if (typeof value === "string") return sensitive ? "a string" : `string ${JSON.stringify(value)}`;
  if (typeof value === "number") return sensitive ? "a number" : `number ${value}`;
  if (typeof value === "boolean") return sensitive ? "a boolean" : String(value);
  return `a ${typeof value}`;
}

function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  const suggestion = closestKey(key, allowed);
  const hint = suggestion ? ` (did you mean "${suggestion}"?)` : "";
  return `unknown key "${key}"${hint}; allowed keys here: ${allowed.join(", ")}`;
}

/** Catches camelCase spellings and small typos of snake_case keys. */
function closestKey(key: string, allowed: readonly string[]): string | undefined {
  const snake = key
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/-/g, "_")
    .toLowerCase();
  if (allowed.includes(snake)) return snake;
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of allowed) {
    const d = editDistance(snake, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost));
    }
    previous = current;
  }
  return previous[b.length]!;
}
