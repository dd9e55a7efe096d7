import type { FlagDefs } from "./command.js";

// The Admin API connection flags, apart from the client code (cli/admin.ts) so that
// declaring and parsing a verb never loads an RPC stack.

export const DEFAULT_ADMIN_URL = "http://127.0.0.1:7080";

/** Where the Admin API is and who is asking: every admin verb and `watch` take these. */
export const CONNECTION_FLAGS: FlagDefs = {
  admin: {
    type: "string",
    value: "URL",
    help: `the control plane's HTTP address (env AIGW_ADMIN_URL; default ${DEFAULT_ADMIN_URL})`,
    common: true,
  },
  token: { type: "string", value: "T", help: "admin bearer token (env AIGW_ADMIN_TOKEN)", common: true },
};

export const ADMIN_FLAGS: FlagDefs = {
  ...CONNECTION_FLAGS,
  json: { type: "boolean", help: "print the response as JSON (proto JSON of the RPC's response)", common: true },
};
