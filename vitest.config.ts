import { defineConfig } from "vitest/config";

// Real servers, real SQLite files, real child processes: generous bounds for a busy 2-core machine.
const shared = { testTimeout: 60_000, hookTimeout: 60_000, pool: "forks" as const };

export default defineConfig({
  test: {
    reporters: ["default"],
    projects: [
      {
        test: {
          ...shared,
          name: "suite",
          include: ["test/**/*.test.ts"],
          exclude: ["test/**/*.load.test.ts"],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        // Tests that put a process under load and hold it to a latency bound (a control
        // plane answering /healthz while saturated, a backlog draining at a steady rate):
        // one at a time, after the rest, so no other test competes for the two cores.
        test: {
          ...shared,
          name: "load",
          include: ["test/**/*.load.test.ts"],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
