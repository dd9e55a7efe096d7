import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type { CliIo } from "./command.js";

/** ANSI styles; every one is the identity when colour is off. */
export interface Palette {
  enabled: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  blue(s: string): string;
  magenta(s: string): string;
  cyan(s: string): string;
}

const style =
  (open: number, close: number) =>
  (s: string): string =>
    s === "" ? s : `\u001b[${open}m${s}\u001b[${close}m`;

const COLOURS: Palette = {
  enabled: true,
  bold: style(1, 22),
  dim: style(2, 22),
  red: style(31, 39),
  green: style(32, 39),
  yellow: style(33, 39),
  blue: style(34, 39),
  magenta: style(35, 39),
  cyan: style(36, 39),
};

const plain = (s: string): string => s;
const PLAIN: Palette = {
  enabled: false,
  bold: plain,
  dim: plain,
  red: plain,
  green: plain,
  yellow: plain,
  blue: plain,
  magenta: plain,
  cyan: plain,
};

/** Colour on a terminal only; NO_COLOR (https://no-color.org) and TERM=dumb turn it off. */
export function paletteFor(io: CliIo): Palette {
  if (!io.isTTY) return PLAIN;
  if (io.env.NO_COLOR !== undefined && io.env.NO_COLOR !== "") return PLAIN;
  if (io.env.TERM === "dumb") return PLAIN;
  return COLOURS;
}

/**
 * Columns padded to the widest cell; the last column is not padded. `paint` styles a
 * cell after padding, so colour never shifts the columns.
 */
export function table(
  header: string[],
  rows: string[][],
  palette: Palette = PLAIN,
  paint?: (column: number, cell: string, padded: string) => string,
): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  return all
    .map((r, i) => {
      const cells = r.map((cell, c) => {
        const padded = c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0);
        if (i === 0) return palette.bold(padded);
        return paint ? paint(c, cell, padded) : padded;
      });
      return `${cells.join("  ").trimEnd()}\n`;
    })
    .join("");
}

/** "key: value" lines, values aligned. */
export function fields(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length)) + 1;
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}\n`).join("");
}

export function timeText(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString() : "-";
}

export function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  if (flat === "") return "-";
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export function prettyJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Dollars with cents, and the sub-cent digits small amounts need (0.000123). */
export function usdText(usd: number): string {
  const fixed = usd.toFixed(6).replace(/0+$/, "");
  const [whole = "0", cents = ""] = fixed.split(".");
  return `${whole}.${cents.padEnd(2, "0")}`;
}

/** "1 delivery", "2 deliveries" */
export function count(n: number | bigint, one: string, many: string): string {
  return `${n} ${n === 1 || n === 1n ? one : many}`;
}
