import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfigBytes } from "../../control-plane/config/load.js";
import { ConfigError } from "../../control-plane/config/types.js";

// Each testdata/bad/NAME.yaml must fail with exactly the problems in NAME.errors.txt.
// Regenerate after an intended change: UPDATE_GOLDEN=1 npx vitest run test/config
const BAD_DIR = join(import.meta.dirname, "testdata", "bad");
const UPDATE = process.env.UPDATE_GOLDEN === "1";
const ENV = {
  WEBHOOK_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  BACKUP_WEBHOOK_SECRET: "whsec_dGhpcnR5LXR3by1ieXRlcy1vZi1iYWNrdXAtc2VjcmV0IQ==",
};
/** Values in the bad files that must never appear in a message: they are credentials. */
const CREDENTIALS = ["hunter2", "s3cr3t", "8675309123456", ENV.WEBHOOK_SECRET, ENV.BACKUP_WEBHOOK_SECRET];

const badFiles = readdirSync(BAD_DIR)
  .filter((f) => f.endsWith(".yaml"))
  .sort();

function problemsOf(file: string): ConfigError {
  // Bytes, as the loader reads them: some files here are not text at all.
  const bytes = readFileSync(join(BAD_DIR, file));
  try {
    parseConfigBytes(bytes, { file, env: ENV });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`${file} loaded without problems; a file in testdata/bad must fail`);
}

describe("golden: testdata/bad", () => {
  it("has enough variants to cover every kind of problem", () => {
    expect(badFiles.length).toBeGreaterThanOrEqual(12);
  });

  it.each(badFiles)("%s fails with the problems in its .errors.txt", (file) => {
    const error = problemsOf(file);
    const actual = `${error.message}\n`;
    const goldenPath = join(BAD_DIR, `${basename(file, ".yaml")}.errors.txt`);
    if (UPDATE) writeFileSync(goldenPath, actual);
    expect(existsSync(goldenPath), `missing ${goldenPath}; run with UPDATE_GOLDEN=1`).toBe(true);
    expect(actual).toBe(readFileSync(goldenPath, "utf8"));
  });

  it("many-problems.yaml reports every mistake at once, across sections", () => {
    const paths = problemsOf("many-problems.yaml").problems.map((p) => p.path);
    expect(paths).toEqual([
      "webhooks.primary.url",
      "webhooks.primary.secret",
      "events.subscribe[1]",
      "retry.max_attempts",
      "retry.max_delay_ms",
      "retry.retryable_status_codes[1]",
      "security.signature_algorithm",
      "security.timestamp_tolerance_ms",
      "security.allowed_networks[0]",
      "delivery.timeout_ms",
      "delivery.concurrency",
      "storage.url",
    ]);
  });

  it.each(badFiles)("%s: every problem has a path, a line in the file and no credentials", (file) => {
    const error = problemsOf(file);
    const lineCount = readFileSync(join(BAD_DIR, file), "utf8").split("\n").length;
    expect(error.problems.length).toBeGreaterThan(0);
    for (const problem of error.problems) {
      expect(problem.path).not.toBe("");
      expect(problem.line).toBeGreaterThanOrEqual(1);
      expect(problem.line).toBeLessThanOrEqual(lineCount);
    }
    for (const credential of CREDENTIALS) expect(error.message).not.toContain(credential);
  });
});
