import type { CommandGroup } from "../command.js";

/** A verb group by name, its module loaded only when it runs (or for `--help`). */
export interface CommandEntry {
  name: string;
  load(): Promise<CommandGroup>;
}

/**
 * Every verb group, in the order `aigw --help` lists them. A new group is one file in
 * this folder exporting a CommandGroup, and one line here. Loading on use keeps each
 * process to its own code: `aigw sidecar` never loads the Admin API client or the
 * control plane, `aigw endpoints list` neither plane.
 */
export const COMMANDS: readonly CommandEntry[] = [
  { name: "control-plane", load: async () => (await import("./control-plane.js")).controlPlane },
  { name: "sidecar", load: async () => (await import("./sidecar.js")).sidecar },
  { name: "dev", load: async () => (await import("./dev.js")).dev },
  { name: "watch", load: async () => (await import("./watch.js")).watch },
  { name: "verify", load: async () => (await import("./verify.js")).verify },
  { name: "endpoints", load: async () => (await import("./endpoints.js")).endpoints },
  { name: "keys", load: async () => (await import("./keys.js")).keys },
  { name: "subscription", load: async () => (await import("./subscription.js")).subscription },
  { name: "deliveries", load: async () => (await import("./deliveries.js")).deliveries },
  { name: "stats", load: async () => (await import("./stats.js")).stats },
  { name: "send-test", load: async () => (await import("./send-test.js")).sendTest },
  { name: "budgets", load: async () => (await import("./budgets.js")).budgets },
  { name: "pricing", load: async () => (await import("./pricing.js")).pricing },
  { name: "tokens", load: async () => (await import("./tokens.js")).tokens },
  { name: "whoami", load: async () => (await import("./tokens.js")).whoami },
];

export function loadCommandGroups(entries: readonly CommandEntry[] = COMMANDS): Promise<CommandGroup[]> {
  return Promise.all(entries.map((e) => e.load()));
}
