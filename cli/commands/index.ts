import type { CommandGroup } from "../command.js";
import { budgets } from "./budgets.js";
import { controlPlane } from "./control-plane.js";
import { deliveries } from "./deliveries.js";
import { dev } from "./dev.js";
import { endpoints } from "./endpoints.js";
import { keys } from "./keys.js";
import { pricing } from "./pricing.js";
import { sendTest } from "./send-test.js";
import { sidecar } from "./sidecar.js";
import { stats } from "./stats.js";
import { subscription } from "./subscription.js";
import { verify } from "./verify.js";
import { watch } from "./watch.js";

/**
 * Every verb group, in the order `aigw --help` lists them. A new group is one file in
 * this folder exporting a CommandGroup, and one line here.
 */
export const COMMAND_GROUPS: readonly CommandGroup[] = [
  controlPlane,
  sidecar,
  dev,
  watch,
  verify,
  endpoints,
  keys,
  subscription,
  deliveries,
  stats,
  sendTest,
  budgets,
  pricing,
];
