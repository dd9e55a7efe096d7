// biome-ignore-all lint/suspicious/noTemplateCurlyInString: this file is about the ${VAR} syntax itself
/** Environment variables as a config sees them (process.env in production). */
export type ConfigEnv = Record<string, string | undefined>;

export interface SubstitutionResult {
  value: string;
  /** Whether the text held at least one ${...} reference. */
  referenced: boolean;
  /** What went wrong, one message per bad or missing reference. */
  errors: string[];
}

const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-([\s\S]*))?$/;

/**
 * Replaces `${NAME}` and `${NAME:-default}` (default when unset or empty, as in the shell)
 * from `env`; `$${` stands for a literal `${`. Runs on one parsed scalar at a time so every
 * problem keeps the line of the value it came from.
 */
export function substituteEnv(text: string, env: ConfigEnv): SubstitutionResult {
  if (!text.includes("${")) return { value: text, referenced: false, errors: [] };
  let value = "";
  let referenced = false;
  const errors: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (text.startsWith("$${", i)) {
      value += "${";
      i += 3;
      continue;
    }
    if (!text.startsWith("${", i)) {
      value += text[i];
      i += 1;
      continue;
    }
    referenced = true;
    const end = text.indexOf("}", i + 2);
    if (end < 0) {
      errors.push('"${" is never closed: expected ${NAME} or ${NAME:-default} (write $${ for a literal "${")');
      value += text.slice(i);
      break;
    }
    const match = REFERENCE.exec(text.slice(i + 2, end));
    if (!match) {
      errors.push(
        "malformed environment reference: expected ${NAME} or ${NAME:-default} with NAME made of " +
          'letters, digits and "_" (write $${ for a literal "${")',
      );
    } else {
      const name = match[1]!;
      const fallback = match[2];
      const set = env[name];
      if (fallback !== undefined) value += set === undefined || set === "" ? fallback : set;
      else if (set === undefined) errors.push(`environment variable ${name} is not set`);
      else value += set;
    }
    i = end + 1;
  }
  return { value, referenced, errors };
}
