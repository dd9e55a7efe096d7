import { type CST, type LineCounter, Parser, type YAMLError } from "yaml";
import type { ConfigProblem } from "./types.js";

/**
 * The config file as text, before YAML: what is not UTF-8 text is refused here with a
 * clear problem, so a binary file never reaches the parser (whose messages would echo its
 * bytes to the terminal), and syntax errors that YAML reports where it gave up are moved
 * to where the mistake is.
 */

const FILE_PATH = "(file)";

/** 1-based line of a byte offset. */
function lineOfByte(bytes: Uint8Array, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < bytes.length; i++) if (bytes[i] === 0x0a) line++;
  return line;
}

/** Offset of the first byte that is not part of well-formed UTF-8, or -1. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    if (b >= 0xc2 && b <= 0xdf) [need, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [need, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [need, min] = [3, 0x10000];
    else return i;
    let cp = b & (0xff >> (need + 2));
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

/** C0 controls YAML does not allow (tab, newline and carriage return are fine), and DEL. */
function isForbiddenControl(byte: number): boolean {
  return (byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) || byte === 0x7f;
}

/**
 * The text of a config file, or the one problem that makes it unusable: empty, UTF-16/32,
 * binary (NUL or other control bytes), or not UTF-8. The problem never quotes the bytes.
 */
export function configText(bytes: Uint8Array): { text: string } | { problem: ConfigProblem } {
  const problem = (line: number, message: string) => ({ problem: { path: FILE_PATH, line, message } });
  const expected = "expected a UTF-8 YAML file such as examples/webhook_config.yaml";
  if (bytes.length === 0) {
    return problem(
      1,
      "is empty; expected YAML settings (at least webhooks:). To manage every endpoint through the " +
        "Admin API, say so with `webhooks: {}`",
    );
  }
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
    return problem(1, `is UTF-16 text; save it as UTF-8 (${expected})`);
  }
  const control = bytes.findIndex(isForbiddenControl);
  if (control >= 0) {
    const what =
      bytes[control] === 0 ? "a NUL byte" : `the control byte 0x${bytes[control]!.toString(16).padStart(2, "0")}`;
    return problem(lineOfByte(bytes, control), `is not a text file (${what} at byte ${control}); ${expected}`);
  }
  const invalid = firstInvalidUtf8(bytes);
  if (invalid >= 0) {
    return problem(
      lineOfByte(bytes, invalid),
      `is not UTF-8 text (byte 0x${bytes[invalid]!.toString(16)} at byte ${invalid} starts no UTF-8 character); ${expected}`,
    );
  }
  const text = new TextDecoder("utf-8").decode(bytes);
  return { text };
}

/** Problem for a document with no settings at all: comments and blank lines only. */
export function noSettingsProblem(): ConfigProblem {
  return {
    path: FILE_PATH,
    line: 1,
    message:
      "has no settings, only comments or blank lines; expected YAML settings (at least webhooks:). " +
      "To manage every endpoint through the Admin API, say so with `webhooks: {}`",
  };
}

interface Opening {
  offset: number;
  /** What was opened: a quote character or a bracket. */
  opener: string;
  closer: string;
}

/** Quoted scalars and flow collections ([...], {...}) that the parser saw opened but not closed. */
function unclosedOpenings(text: string): Opening[] {
  const found: Opening[] = [];
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
      return;
    }
    if (typeof node !== "object" || node === null) return;
    const token = node as { type?: unknown; offset?: number; source?: string; start?: unknown; end?: unknown };
    if ((token.type === "double-quoted-scalar" || token.type === "single-quoted-scalar") && token.source) {
      const quote = token.source[0]!;
      if (!closesQuote(token.source, quote)) found.push({ offset: token.offset ?? 0, opener: quote, closer: quote });
    } else if (token.type === "flow-collection") {
      const start = token.start as { source?: string } | undefined;
      const end = Array.isArray(token.end) ? (token.end as { type?: string }[]) : [];
      const opener = start?.source ?? "[";
      if (!end.some((t) => t.type === "flow-seq-end" || t.type === "flow-map-end")) {
        found.push({ offset: token.offset ?? 0, opener, closer: opener === "{" ? "}" : "]" });
      }
    }
    for (const value of Object.values(node)) if (typeof value === "object") visit(value);
  };
  for (const token of new Parser().parse(text)) visit(token as CST.Token);
  return found;
}

function closesQuote(source: string, quote: string): boolean {
  if (source.length < 2 || !source.endsWith(quote)) return false;
  if (quote === "'") return true; // '' inside single quotes is an escaped quote; the lexer ends only on a lone one
  let backslashes = 0;
  for (let i = source.length - 2; i >= 0 && source[i] === "\\"; i--) backslashes++;
  return backslashes % 2 === 0;
}

/**
 * YAML reports an unclosed quote or bracket where it ran out of text, often the last line.
 * The mistake is where it was opened: report it there, saying so.
 */
export function syntaxProblem(
  error: YAMLError,
  text: string,
  lines: LineCounter,
  path: string,
  openings: () => Opening[],
): ConfigProblem {
  const at = lines.linePos(error.pos[0]).line;
  const unclosedQuote = error.code === "MISSING_CHAR" && /quote/i.test(error.message);
  const unclosedFlow =
    error.code === "BAD_INDENT" && /must be sufficiently indented and end with a/.test(error.message);
  if (unclosedQuote || unclosedFlow) {
    const isQuote = (o: Opening) => o.opener === '"' || o.opener === "'";
    const before = openings().filter((o) => o.offset <= error.pos[0] && isQuote(o) === unclosedQuote);
    const opening = before.at(-1);
    if (opening) {
      const line = lines.linePos(opening.offset).line;
      const what = opening.opener === '"' || opening.opener === "'" ? "quote" : "bracket";
      const escapeHint = opening.opener === '"' ? ', or write a " inside the value as \\"' : "";
      const readOn =
        error.pos[0] >= text.trimEnd().length
          ? " (YAML read on to the end of the file)"
          : at > line
            ? ` (YAML read on to line ${at})`
            : "";
      return {
        path,
        line,
        message: `the ${opening.opener} ${what} opened here is never closed${readOn}; add the closing ${opening.closer}${escapeHint}`,
      };
    }
  }
  return { path, line: at, message: error.message };
}

/** Lazily computed, since only files with these syntax errors need them. */
export function openingsOf(text: string): () => Opening[] {
  let cached: Opening[] | undefined;
  return () => {
    cached ??= unclosedOpenings(text);
    return cached;
  };
}
