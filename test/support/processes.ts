import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const AIGW_BIN = fileURLToPath(new URL("../../bin/aigw.js", import.meta.url));

export interface AigwProcess {
  child: ChildProcess;
  /** JSON log lines (pino) and plain lines seen on stdout so far. */
  lines: string[];
  stderr: () => string;
  exited: Promise<number | null>;
  /** Resolves with the first JSON log line whose msg matches. */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/**
 * Runs the built CLI (bin/aigw.js → dist/) as a real process; `wrapper` runs it through
 * another command that ends by exec'ing it (e.g. into a private mount namespace), so the
 * child's pid is still the aigw process's.
 */
export function runAigw(
  args: string[],
  env: Record<string, string | undefined> = {},
  wrapper?: (argv: string[]) => string[],
): AigwProcess {
  return runAigwAt(AIGW_BIN, REPO_ROOT, args, env, wrapper);
}

/** Runs an aigw entry point (e.g. one installed from the package tarball) in `cwd`. */
export function runAigwAt(
  bin: string,
  cwd: string,
  args: string[],
  env: Record<string, string | undefined> = {},
  wrapper?: (argv: string[]) => string[],
): AigwProcess {
  const argv = [process.execPath, bin, ...args];
  const [command, ...rest] = wrapper ? wrapper(argv) : argv;
  const child = spawn(command as string, rest, {
    cwd,
    env: { ...process.env, AIGW_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let err = "";
  let partial = "";
  const waiters: { msg: string; resolve: (v: Record<string, unknown>) => void }[] = [];
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    partial += chunk;
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      let parsed: Record<string, unknown> | undefined;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      for (const w of [...waiters]) {
        if (parsed.msg === w.msg) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk;
  });
  // "close", not "exit": the last lines of stdout are read by then (a process that logs and
  // exits at once would otherwise be found exited before its last log lines arrive).
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return {
    child,
    lines,
    stderr: () => err,
    exited,
    waitForLog(msg, timeoutMs = 30_000) {
      for (const line of lines) {
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (parsed.msg === msg) return Promise.resolve(parsed);
        } catch {
          // not JSON
        }
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(`no "${msg}" log line within ${timeoutMs} ms; stderr: ${err}; stdout: ${lines.join("\n")}`),
            ),
          timeoutMs,
        );
        waiters.push({
          msg,
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v);
          },
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`aigw exited (${code}) before logging "${msg}"; stderr: ${err}`));
        });
      });
    },
  };
}
