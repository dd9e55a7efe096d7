import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, UsageError } from "../command.js";
import { timeText } from "../render.js";
import { parseCount } from "../values.js";

export const keys: CommandGroup = {
  name: "keys",
  summary: "signing keys: rotate an endpoint's key, or an org's (its x-aigw-webhook-url endpoints)",
  section: "admin",
  verbs: [
    adminVerb({
      name: "rotate",
      summary: "add a new signing key; the previous ones keep signing for an overlap window",
      args: [{ name: "ENDPOINT", optional: true }],
      synopsis: ["ENDPOINT [--secret S] [--overlap-seconds N]", "--org ORG [--secret S] [--overlap-seconds N]"],
      details:
        "With --org, the key of the org's one-off endpoints (x-aigw-webhook-url). The new secret\n" +
        "is printed once; during the overlap every webhook carries one signature per valid key.",
      flags: {
        org: { type: "string", value: "ORG", help: "rotate this org's key instead of an endpoint's" },
        secret: { type: "string", value: "S", help: "the new secret (default: a new random whsec_ secret)" },
        "overlap-seconds": {
          type: "string",
          value: "N",
          help: "how long the previous keys keep signing (default 86400, at most 2592000: 30 days)",
        },
      },
      async run(ctx, [endpoint = ""], flags) {
        const overlap = flags.string("overlap-seconds");
        const orgId = flags.string("org") ?? "";
        if ((endpoint === "") === (orgId === "")) throw new UsageError("give an ENDPOINT or --org ORG");
        const res = await ctx.client.rotateSigningKey({
          endpoint,
          orgId,
          secret: flags.string("secret") ?? "",
          overlapSeconds: overlap === undefined ? 0 : parseCount("--overlap-seconds", overlap, 1),
        });
        ctx.print(
          AdminService.method.rotateSigningKey.output,
          res,
          () =>
            `new signing secret for ${endpoint || `org ${orgId}`} (shown only this once):\n${res.secret}\n` +
            `previous keys stop signing at ${timeText(res.previousKeysExpireTime)}\n`,
        );
      },
    }),
  ],
};
