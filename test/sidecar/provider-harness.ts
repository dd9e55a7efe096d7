import { PassThrough } from "node:stream";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { createLogger } from "../../common/logger.js";
import { type MockProvider, startMockProvider } from "../../examples/mock-provider.js";
import { DEFAULT_ADAPTERS } from "../../sidecar/providers/defaults.js";
import { type RunningProxy, startProxy } from "../../sidecar/proxy/server.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings } from "../../sidecar/proxy/settings.js";
import { RecordingSink, waitFor } from "./harness.js";

export const ALL_EVENT_TYPES: ReadonlySet<EventType> = new Set([
  EventType.COMPLETION,
  EventType.ERROR,
  EventType.STREAMING,
  EventType.RATE_LIMIT,
]);

/**
 * The proxy with both provider adapters, in front of one mock per upstream name (each a
 * real HTTP server), with settings a test can change between requests.
 */
export interface ProviderHarness {
  mocks: Record<string, MockProvider>;
  proxy: RunningProxy;
  sink: RecordingSink;
  settings: ProxySettings;
  /** Replaces settings fields for the next requests (as a config snapshot would). */
  configure(changes: Partial<ProxySettings>): void;
  openai: OpenAI;
  /** The Anthropic client sending its key as `x-api-key` (the API's documented header). */
  anthropic: Anthropic;
  /** The Anthropic client authenticating with `Authorization: Bearer` (what this SDK sends for apiKey). */
  anthropicBearer: Anthropic;
  logs(): string;
  close(): Promise<void>;
}

export interface ProviderHarnessOptions {
  /** Upstream names, each served by its own mock; default ["openai", "anthropic"]. */
  upstreams?: readonly string[];
  settings?: Partial<ProxySettings>;
}

export async function startProviderHarness(options: ProviderHarnessOptions = {}): Promise<ProviderHarness> {
  const names = options.upstreams ?? ["openai", "anthropic"];
  const mocks: Record<string, MockProvider> = {};
  for (const name of names) mocks[name] = await startMockProvider();
  const sink = new RecordingSink();
  let logText = "";
  const logStream = new PassThrough();
  logStream.on("data", (chunk: Buffer) => {
    logText += chunk.toString("utf8");
  });
  const h = {
    settings: { ...DEFAULT_PROXY_SETTINGS, wantedEventTypes: ALL_EVENT_TYPES, ...options.settings } as ProxySettings,
  };
  const proxy = await startProxy({
    port: 0,
    upstreams: Object.fromEntries(names.map((name) => [name, mocks[name]!.url])),
    sink,
    orgId: "org_test",
    app: "checkout",
    logger: createLogger({ level: "debug", destination: logStream, name: "sidecar" }),
    settings: () => h.settings,
    adapters: DEFAULT_ADAPTERS,
  });
  return {
    mocks,
    proxy,
    sink,
    get settings() {
      return h.settings;
    },
    configure(changes) {
      h.settings = { ...h.settings, ...changes };
    },
    openai: new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "sk-test", maxRetries: 0 }),
    anthropic: anthropicWithApiKeyHeader(proxy.url, "sk-ant-test"),
    anthropicBearer: new Anthropic({ baseURL: proxy.url, apiKey: "sk-ant-bearer", maxRetries: 0 }),
    logs: () => logText,
    async close() {
      await proxy.close();
      for (const mock of Object.values(mocks)) await mock.close();
    },
  };
}

/** An Anthropic client that authenticates with the x-api-key header. */
export function anthropicWithApiKeyHeader(baseURL: string, key: string): Anthropic {
  return new Anthropic({ baseURL, apiKey: null, authToken: null, defaultHeaders: { "x-api-key": key }, maxRetries: 0 });
}

type PayloadCase = Event["payload"]["case"];
type PayloadOf<C extends PayloadCase> = Extract<Event["payload"], { case: C }>["value"];

/** The payloads of one kind the sink received so far, in order. */
export function payloads<C extends Exclude<PayloadCase, undefined>>(sink: RecordingSink, kind: C): PayloadOf<C>[] {
  const out: PayloadOf<C>[] = [];
  for (const event of sink.events) {
    if (event.payload.case === kind) out.push(event.payload.value as PayloadOf<C>);
  }
  return out;
}

/** Waits until at least `count` payloads of a kind arrived, and returns them. */
export function waitForPayloads<C extends Exclude<PayloadCase, undefined>>(
  sink: RecordingSink,
  kind: C,
  count: number,
  timeoutMs?: number,
): Promise<PayloadOf<C>[]> {
  return waitFor(
    `${count} ${kind} event(s), have ${payloads(sink, kind).length}`,
    () => {
      const found = payloads(sink, kind);
      return found.length >= count ? found : undefined;
    },
    timeoutMs,
  );
}
