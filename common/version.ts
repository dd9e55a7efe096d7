import { readFileSync } from "node:fs";

function readVersion(): string {
  // Works from the sources (common/) and from the build (dist/common/).
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "aigw" && pkg.version) return pkg.version;
    } catch {
      // try the next place
    }
  }
  return "0.0.0";
}

export const VERSION = readVersion();
export const USER_AGENT = `aigw/${VERSION}`;
