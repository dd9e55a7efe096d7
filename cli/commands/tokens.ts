import { AdminService, type Token, TokenKind } from "../../gen/aigw/v1/admin_pb.js";
import { adminVerb } from "../admin.js";
import { type CommandGroup, UsageError } from "../command.js";
import { fields, table, timeText } from "../render.js";

const KINDS: Record<string, TokenKind> = { admin: TokenKind.ADMIN, sidecar: TokenKind.SIDECAR };

export const tokens: CommandGroup = {
  name: "tokens",
  summary: "org-scoped tokens: an org's admin view, its sidecars (operator only)",
  section: "admin",
  verbs: [
    adminVerb({
      name: "create",
      summary: "make a token scoped to one org; it is printed once and kept only as a digest",
      details:
        "An admin token sees and changes only its org through the Admin API, the feed and the\n" +
        "dashboard; a sidecar token reports as its org only (aigw sidecar --token T --org ORG).",
      flags: {
        org: { type: "string", value: "ORG", required: true, help: "the org it is scoped to" },
        kind: { type: "string", value: "admin|sidecar", required: true, help: "what it is for" },
        name: { type: "string", value: "N", help: "a label for people (e.g. team-a-ci)" },
      },
      async run(ctx, _args, flags) {
        const kindName = flags.require("kind");
        const kind = KINDS[kindName];
        if (kind === undefined) throw new UsageError(`--kind: must be admin or sidecar, got "${kindName}"`);
        const res = await ctx.client.createToken({
          orgId: flags.require("org"),
          kind,
          name: flags.string("name") ?? "",
        });
        ctx.print(
          AdminService.method.createToken.output,
          res,
          () =>
            `created ${kindName} token ${res.token?.id ?? "?"} for org ${res.token?.orgId ?? "?"} (shown only this once):\n` +
            `${res.secret}\n`,
        );
      },
    }),
    adminVerb({
      name: "list",
      summary: "list the tokens made with tokens create (config tokens are in the file)",
      flags: {
        org: { type: "string", value: "ORG", help: "this org's only" },
        all: { type: "boolean", help: "revoked ones too" },
      },
      async run(ctx, _args, flags) {
        const res = await ctx.client.listTokens({
          orgId: flags.string("org") ?? "",
          includeRevoked: flags.bool("all"),
        });
        ctx.print(AdminService.method.listTokens.output, res, () =>
          res.tokens.length === 0
            ? "no tokens\n"
            : table(
                ["ID", "ORG", "KIND", "NAME", "CREATED", "REVOKED"],
                res.tokens.map((t) => [
                  t.id,
                  t.orgId,
                  kindText(t),
                  t.name || "-",
                  timeText(t.createTime),
                  t.revokeTime ? timeText(t.revokeTime) : "-",
                ]),
                ctx.palette,
              ),
        );
      },
    }),
    adminVerb({
      name: "revoke",
      summary: "stop a token within a second, on its open feed and ingest streams too",
      args: [{ name: "ID" }],
      async run(ctx, [id = ""]) {
        const res = await ctx.client.revokeToken({ id });
        ctx.print(
          AdminService.method.revokeToken.output,
          res,
          () => `revoked token ${id} (org ${res.token?.orgId ?? "?"}, ${res.token ? kindText(res.token) : "?"})\n`,
        );
      },
    }),
  ],
};

export const whoami: CommandGroup = {
  name: "whoami",
  summary: "what the token in use may see: every org (operator) or one org",
  section: "admin",
  verbs: [
    adminVerb({
      name: "",
      summary: "print the token's scope",
      async run(ctx) {
        const res = await ctx.client.whoAmI({});
        ctx.print(AdminService.method.whoAmI.output, res, () =>
          res.orgId === ""
            ? "operator: every org\n"
            : fields([
                ["org", res.orgId],
                ["token", res.tokenId || "(from the config file)"],
                ...(res.tokenName ? ([["name", res.tokenName]] as [string, string][]) : []),
              ]),
        );
      },
    }),
  ],
};

function kindText(t: Token): string {
  return t.kind === TokenKind.ADMIN ? "admin" : t.kind === TokenKind.SIDECAR ? "sidecar" : "?";
}
