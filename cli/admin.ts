import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../gen/aigw/v1/admin_pb.js";
import { DEFAULT_ADMIN_URL } from "./admin-flags.js";

export { ADMIN_FLAGS, CONNECTION_FLAGS, DEFAULT_ADMIN_URL } from "./admin-flags.js";
import type { ArgDef, CliIo, FlagDefs, Flags, Verb } from "./command.js";
import { UsageError } from "./command.js";
import { type Palette, paletteFor } from "./render.js";

/** A Connect transport to the Admin API (HTTP/1.1, the --http port) from --admin/--token or the environment. */
export function adminTransport(flags: Flags, io: CliIo, options: { keepAlive?: boolean } = {}): Transport {
  const baseUrl = flags.string("admin") ?? io.env.AIGW_ADMIN_URL ?? DEFAULT_ADMIN_URL;
  const token = flags.string("token") ?? io.env.AIGW_ADMIN_TOKEN;
  const source = flags.has("admin") ? "--admin" : "AIGW_ADMIN_URL";
  try {
    const u = new URL(baseUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    throw new UsageError(`${source}: "${baseUrl}" is not an http(s) URL`);
  }
  const interceptors: Interceptor[] = [];
  if (token !== undefined && token !== "") {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  return createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    interceptors,
    ...(options.keepAlive
      ? {}
      : {
          defaultTimeoutMs: 30_000,
          // One call per process: no keep-alive socket left to hold the process open.
          nodeOptions: { agent: false },
        }),
  });
}

export interface AdminContext {
  client: Client<typeof AdminService>;
  io: CliIo;
  json: boolean;
  palette: Palette;
  label: string;
  /** Prints the response: as proto JSON with --json, else with `human`. */
  print<D extends DescMessage>(schema: D, message: MessageShape<D>, human: () => string): void;
}

export interface AdminVerbSpec {
  name: string;
  summary: string;
  args?: readonly ArgDef[];
  flags?: FlagDefs;
  synopsis?: readonly string[];
  details?: string;
  run(ctx: AdminContext, args: string[], flags: Flags): Promise<void>;
}

/** A verb over the Admin API: takes --admin, --token and --json, and gets a client. */
export function adminVerb(spec: AdminVerbSpec): Verb {
  const { run, ...rest } = spec;
  return {
    ...rest,
    admin: true,
    async run({ args, flags, io, label }) {
      const json = flags.bool("json");
      const ctx: AdminContext = {
        client: createClient(AdminService, adminTransport(flags, io)),
        io,
        json,
        palette: paletteFor(io),
        label,
        print(schema, message, human) {
          // Zero values too (proto3 JSON omits them): a script reads `"replayed": 0`, not a missing key.
          io.out(
            json ? `${JSON.stringify(toJson(schema, message, { alwaysEmitImplicit: true }), null, 2)}\n` : human(),
          );
        },
      };
      await run(ctx, args, flags);
      return 0;
    },
  };
}
