import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../common/logger.js";
import { defaultConfig } from "../../control-plane/config/load.js";
import { warnRefusedEndpoints } from "../../control-plane/security/startup-warnings.js";
import type { EndpointRecord } from "../../control-plane/store/store.js";

function endpoint(name: string, url: string, enabled = true): EndpointRecord {
  return {
    name,
    url,
    enabled,
    paused: false,
    pausedAt: null,
    eventTypes: [],
    failoverTo: "",
    filters: { completionModels: [], completionMinTokens: 0, errorSeverities: [] },
    orgId: "",
    apps: [],
    oneOff: false,
    disabledReason: "",
    createdAt: 0,
    updatedAt: 0,
    signingKeyCount: 1,
  };
}

describe("startup warnings", () => {
  it("names the stored endpoints the current destination rules refuse", () => {
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.setEncoding("utf8").on("data", (chunk: string) => lines.push(...chunk.split("\n").filter(Boolean)));
    const security = { ...defaultConfig().security, requireHttps: false };
    warnRefusedEndpoints(createLogger({ destination: sink }), security, [
      endpoint("public", "https://hooks.example.com/a"),
      endpoint("compat", "http://[::127.0.0.1]:9000/hook"),
      endpoint("private", "http://10.0.0.5/hook"),
      endpoint("off", "http://10.0.0.6/hook", false),
    ]);
    const warnings = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warnings.map((w) => [w.endpoint, w.code])).toEqual([
      ["compat", "AIGW_DESTINATION_REFUSED"],
      ["private", "AIGW_DESTINATION_REFUSED"],
    ]);
    expect(String(warnings[0]?.msg)).toMatch(
      /^endpoint compat is refused by the destination rules \(destination ::7f00:1 carries 127\.0\.0\.1/,
    );
  });
});
