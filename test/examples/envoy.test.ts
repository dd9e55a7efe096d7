import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkEnvoyBootstrap } from "../support/envoy-schema.js";
import { REPO_ROOT } from "../support/processes.js";

const ENVOY_YAML = readFileSync(join(REPO_ROOT, "examples/envoy.yaml"), "utf8");

/** examples/envoy.yaml with one line changed (the first match of `from`). */
function mutate(from: string | RegExp, to: string): string {
  const changed = ENVOY_YAML.replace(from, to);
  expect(changed, `the example still contains ${String(from)}`).not.toBe(ENVOY_YAML);
  return changed;
}

function lineOf(text: string, needle: string): number {
  return text.slice(0, text.indexOf(needle)).split("\n").length;
}

// examples/envoy.yaml against Envoy's own v3 API (envoy.config.bootstrap.v3.Bootstrap and
// every typed_config's message), as Envoy would read it at start. The negative cases prove
// the check would catch the mistakes people make in such a file.
describe("examples/envoy.yaml", () => {
  it("is a valid Envoy v3 bootstrap, typed_config messages included", () => {
    expect(checkEnvoyBootstrap(ENVOY_YAML)).toEqual([]);
  });

  it("routes to the aigw sidecar at its default listen address, streams unbuffered", () => {
    expect(ENVOY_YAML).toMatch(/socket_address: \{ address: 127\.0\.0\.1, port_value: 8080 \}/);
    expect(ENVOY_YAML).toMatch(/route: \{ cluster: aigw_sidecar, timeout: 0s \}/);
  });

  it("fails on a misspelt field, naming it, its line and the field it meant", () => {
    const text = mutate("stat_prefix: ai_egress", "stat_prefx: ai_egress");
    expect(checkEnvoyBootstrap(text)).toEqual([
      {
        line: lineOf(text, "stat_prefx"),
        path: expect.stringMatching(/typed_config<HttpConnectionManager>\.stat_prefx$/),
        message:
          'unknown field "stat_prefx" in envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager (did you mean "stat_prefix"?)',
      },
      // stat_prefix must not be empty (protoc-gen-validate min_len 1): it is missing too.
      expect.objectContaining({
        message:
          'missing required field "stat_prefix" of envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
      }),
    ]);
  });

  it("fails on a typed_config whose @type names no Envoy message", () => {
    const text = mutate("filters.http.router.v3.Router", "filters.http.router.v3.Routr");
    const problems = checkEnvoyBootstrap(text);
    expect(problems).toEqual([
      {
        line: lineOf(text, "Routr"),
        path: expect.stringMatching(/http_filters\[0\]\.typed_config\.@type$/),
        message: 'no Envoy API message "envoy.extensions.filters.http.router.v3.Routr"',
      },
    ]);
  });

  it("fails on a typed_config of a package Envoy does not have", () => {
    const text = mutate(
      "envoy.extensions.filters.http.router.v3.Router",
      "envoy.extensions.filters.http.routing.v3.Router",
    );
    expect(checkEnvoyBootstrap(text).map((p) => p.message)).toEqual([
      'no Envoy API message "envoy.extensions.filters.http.routing.v3.Router"',
    ]);
  });

  it("fails on a field of the typed_config's message that belongs to another", () => {
    // suppress_envoy_headers is a Router field, not a HttpConnectionManager one.
    const text = mutate(
      "stream_idle_timeout: 600s",
      "stream_idle_timeout: 600s\n                suppress_envoy_headers: true",
    );
    expect(checkEnvoyBootstrap(text).map((p) => p.message)).toEqual([
      expect.stringContaining(
        'unknown field "suppress_envoy_headers" in envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
      ),
    ]);
  });

  it("fails on values of the wrong type, a bad duration, an unknown enum value and a port out of range", () => {
    const cases: [string | RegExp, string, RegExp][] = [
      ["port_value: 8080", "port_value: eighty", /expected a whole number \(uint32\), got "eighty"/],
      ["port_value: 8080", "port_value: 80800", /must be lte 65535, got 80800/],
      ["stream_idle_timeout: 600s", "stream_idle_timeout: 10 minutes", /expected a duration such as "1s"/],
      [
        "type: STATIC",
        "type: STATICK",
        /"STATICK" is not a value of envoy\.config\.cluster\.v3\.Cluster\.DiscoveryType/,
      ],
      ['domains: ["*"]', 'domains: "*"', /expected a list \(a repeated field\)/],
    ];
    for (const [from, to, message] of cases) {
      const problems = checkEnvoyBootstrap(mutate(from, to));
      expect(problems, to).toHaveLength(1);
      expect(problems[0]?.message, to).toMatch(message);
    }
  });

  it("fails on a missing required field and on YAML mistakes", () => {
    // A cluster needs a name (protoc-gen-validate: min_len 1).
    const unnamed = mutate(/- name: aigw_sidecar\n\s+type: STATIC/, "- type: STATIC");
    expect(checkEnvoyBootstrap(unnamed).map((p) => p.message)).toEqual([
      'missing required field "name" of envoy.config.cluster.v3.Cluster',
    ]);
    const duplicate = mutate("connect_timeout: 1s", "connect_timeout: 1s\n      connect_timeout: 2s");
    expect(checkEnvoyBootstrap(duplicate)[0]?.message).toMatch(/unique/i);
  });
});
