import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ulid } from "../../common/ids.js";

const SIDECAR_ID_FILE = "sidecar-id";
const SIDECAR_ID_PATTERN = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * The sidecar's stable id, kept beside its spool: batch seqs are per sidecar id, so a
 * restarted sidecar re-sending its spool must present the same id to be deduplicated.
 */
export async function loadOrCreateSidecarId(spoolDir: string): Promise<string> {
  const path = join(spoolDir, SIDECAR_ID_FILE);
  try {
    const existing = (await readFile(path, "utf8")).trim();
    if (SIDECAR_ID_PATTERN.test(existing)) return existing;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const id = `sc_${ulid()}`;
  await mkdir(spoolDir, { recursive: true });
  const temporary = `${path}.tmp`;
  await writeFile(temporary, `${id}\n`);
  await rename(temporary, path);
  return id;
}
