import { create } from "@bufbuild/protobuf";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { newEventId, newRequestId } from "../../common/ids.js";
import { createLogger, type Logger } from "../../common/logger.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { Uplink, type UplinkOptions } from "../../sidecar/uplink/uplink.js";

export function completionEvent(model = "gpt-4o-mini"): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_test",
    app: "app-test",
    provider: "openai",
    payload: { case: "completion", value: { requestId: newRequestId(), model, tokensUsed: 42, promptTokens: 30 } },
  });
}

export function streamingEvent(index: number): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_test",
    app: "app-test",
    provider: "openai",
    payload: { case: "streaming", value: { requestId: "req_x", tokenIndex: index, content: "hi" } },
  });
}

/** A real pino logger whose lines the test can read. */
export class CapturedLog {
  readonly lines: Record<string, unknown>[] = [];
  readonly text: string[] = [];
  readonly logger: Logger;

  constructor(level = "debug") {
    const destination = new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        for (const line of chunk.toString("utf8").split("\n")) {
          if (!line) continue;
          this.text.push(line);
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        }
        callback();
      },
    });
    this.logger = createLogger({ level, destination, name: "uplink-test" });
  }

  messages(): string[] {
    return this.lines.map((line) => String(line.msg));
  }

  has(fragment: string): boolean {
    return this.messages().some((message) => message.includes(fragment));
  }
}

export async function temporaryDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), "aigw-uplink-"));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export const spoolDirIn = (base: string): string => join(base, "spool");

/** An uplink to `target` with the tests' quick timings, its spool under `base`; the caller closes it. */
export function testUplink(target: string, base: string, logger: Logger, options: Partial<UplinkOptions> = {}): Uplink {
  return new Uplink({
    target,
    orgId: "org_test",
    app: "app-test",
    version: "0.1.0-test",
    spoolDir: spoolDirIn(base),
    logger,
    batchMaxDelayMs: 5,
    reconnectInitialMs: 50,
    reconnectMaxMs: 400,
    ...options,
  });
}
