// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about the config's own ${VAR} syntax
import { describe, expect, it } from "vitest";
import { substituteEnv } from "../../control-plane/config/env-substitution.js";

describe("substituteEnv", () => {
  const env = { HOST: "example.com", EMPTY: "", PORT: "8443" };

  it("replaces ${VAR} and ${VAR:-default} anywhere in the text", () => {
    expect(substituteEnv("https://${HOST}:${PORT}/x", env)).toEqual({
      value: "https://example.com:8443/x",
      referenced: true,
      errors: [],
    });
    expect(substituteEnv("${MISSING:-fallback}|${EMPTY:-was empty}|${HOST:-unused}", env).value).toBe(
      "fallback|was empty|example.com",
    );
    expect(substituteEnv("${MISSING:-}", env).value).toBe("");
  });

  it("leaves text without references alone, and $${ is a literal ${", () => {
    expect(substituteEnv("plain $HOST $ {x}", env)).toEqual({
      value: "plain $HOST $ {x}",
      referenced: false,
      errors: [],
    });
    expect(substituteEnv("$${HOST} and ${HOST}", env).value).toBe("${HOST} and example.com");
  });

  it("names every missing variable and rejects malformed references", () => {
    expect(substituteEnv("${A}-${B}-${HOST}", env).errors).toEqual([
      "environment variable A is not set",
      "environment variable B is not set",
    ]);
    expect(substituteEnv("${1X}", env).errors[0]).toMatch(/malformed environment reference/);
    expect(substituteEnv("${HOST", env).errors[0]).toMatch(/never closed/);
    expect(substituteEnv("${}", env).errors).toHaveLength(1);
  });
});
