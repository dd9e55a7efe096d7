import type { CommandGroup } from "../command.js";

export const dev: CommandGroup = {
  name: "dev",
  summary: "the whole local stack on embedded defaults (what `npm start` runs)",
  section: "run",
  verbs: [
    {
      name: "",
      summary: "control plane (SQLite), one sidecar, the mock provider and the example receiver",
      details: "Fixed loopback ports; the URLs to use are printed at start.",
      async run({ io }) {
        const { startLocalStack } = await import("../../examples/local-stack.js");
        const stack = await startLocalStack({ out: io.out });
        await io.stopped;
        await stack.close();
        return 0;
      },
    },
  ],
};
