import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import type { Logger } from "../../common/logger.js";

/**
 * Signing secrets at rest: AES-256-GCM with a fresh random 12-byte nonce per secret,
 * stored as "v1:" + base64(nonce ‖ ciphertext ‖ tag). The version prefix lets a later
 * format (another cipher, a rotated master key) live beside this one. The caller's
 * context (e.g. the signing key id) is bound in as associated data, so a sealed value
 * copied onto another row does not open.
 */

const FORMAT_PREFIX = "v1:";
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;

export class SecretBoxError extends Error {
  override readonly name = "SecretBoxError";
}

export class SecretBox {
  readonly #key: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
  }

  /** `where` names the key's origin in errors ("storage.encryption_key", a file path). */
  static fromBase64(text: string, where: string): SecretBox {
    const trimmed = text.trim();
    if (!BASE64_KEY.test(trimmed)) {
      throw new SecretBoxError(
        `${where}: the encryption key must be the base64 of exactly ${KEY_BYTES} bytes ` +
          `(44 characters, e.g. from \`openssl rand -base64 32\`)`,
      );
    }
    return new SecretBox(Buffer.from(trimmed, "base64"));
  }

  static generateKey(): string {
    return randomBytes(KEY_BYTES).toString("base64");
  }

  seal(plaintext: string, context: string): string {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.#key, nonce);
    cipher.setAAD(Buffer.from(context, "utf8"));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return FORMAT_PREFIX + Buffer.concat([nonce, body, cipher.getAuthTag()]).toString("base64");
  }

  /** Throws SecretBoxError (never returns garbage) when the key or context is wrong. */
  open(sealed: string, context: string): string {
    if (!sealed.startsWith(FORMAT_PREFIX)) {
      throw new SecretBoxError(`sealed secret for ${context} has an unknown format (expected "${FORMAT_PREFIX}...")`);
    }
    const raw = Buffer.from(sealed.slice(FORMAT_PREFIX.length), "base64");
    if (raw.length < NONCE_BYTES + TAG_BYTES) {
      throw new SecretBoxError(`sealed secret for ${context} is truncated`);
    }
    const decipher = createDecipheriv("aes-256-gcm", this.#key, raw.subarray(0, NONCE_BYTES));
    decipher.setAAD(Buffer.from(context, "utf8"));
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)),
        decipher.final(),
      ]).toString("utf8");
    } catch {
      throw new SecretBoxError(
        `cannot decrypt the sealed secret for ${context}: the encryption key is not the one it was sealed with`,
      );
    }
  }
}

/** Where a SQLite store's key file is when storage.encryption_key is not set: beside the database. */
export function keyFileBeside(databasePath: string): string {
  return `${databasePath}.key`;
}

/**
 * The key file beside a SQLite database: read when it exists, otherwise created once
 * with mode 0600. `mayCreate` is false when the database already holds sealed secrets:
 * a new key could never open them, so a missing file is an error rather than a fresh key.
 */
export async function loadOrCreateKeyFile(path: string, mayCreate: boolean, logger?: Logger): Promise<SecretBox> {
  try {
    const text = await readFile(path, "utf8");
    const mode = (await stat(path)).mode;
    if ((mode & 0o077) !== 0) {
      logger?.warn({ path }, "encryption key file is readable by other users; chmod 600 it");
    }
    return SecretBox.fromBase64(text, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (!mayCreate) {
    throw new SecretBoxError(
      `encryption key file ${path} is missing, but the database beside it holds signing secrets sealed with ` +
        `that key; restore the file or set storage.encryption_key`,
    );
  }
  const key = SecretBox.generateKey();
  try {
    // "wx": never overwrite a key another process wrote between our read and this write.
    await writeFile(path, key + "\n", { mode: 0o600, flag: "wx" });
    logger?.info({ path }, "created encryption key file for signing secrets");
    return SecretBox.fromBase64(key, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    return SecretBox.fromBase64(await readFile(path, "utf8"), path);
  }
}
