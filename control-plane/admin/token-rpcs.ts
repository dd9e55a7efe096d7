import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type CreateTokenRequest,
  type CreateTokenResponse,
  CreateTokenResponseSchema,
  type ListTokensRequest,
  type ListTokensResponse,
  ListTokensResponseSchema,
  type RevokeTokenRequest,
  type RevokeTokenResponse,
  RevokeTokenResponseSchema,
  type Token,
  TokenKind,
  TokenSchema,
} from "../../gen/aigw/v1/admin_pb.js";
import { ulid } from "../../common/ids.js";
import type { Logger } from "../../common/logger.js";
import { invalidArgument } from "../../common/rpc-errors.js";
import { newTokenSecret, type TokenRegistry, tokenDigest } from "../auth/token-registry.js";
import { checkOrgId } from "../config/checks.js";
import type { TokenKind as StoredTokenKind, TokenRecord, TokenStore } from "../store/tokens.js";
import { hasControlCharacter } from "../../common/text.js";

const MAX_NAME = 128;

/**
 * CreateToken, ListTokens, RevokeToken (operator only: AdminServiceImpl checks). The token
 * itself exists only in CreateToken's answer; the store keeps its digest. The registry hears
 * of each change at once, so a revocation ends this replica's streams of that token before
 * the answer goes out (and other replicas' within their refresh, under a second).
 */
export class TokenAdminRpcs {
  constructor(
    private readonly store: TokenStore,
    private readonly logger: Logger,
    private readonly registry: TokenRegistry | undefined,
    private readonly now: () => number,
  ) {}

  async createToken(req: CreateTokenRequest): Promise<CreateTokenResponse> {
    if (req.orgId === "") throw invalidArgument("org_id", "required: the org the token is scoped to");
    const orgProblem = checkOrgId(req.orgId);
    if (orgProblem) throw invalidArgument("org_id", orgProblem);
    const kind = kindOf(req.kind);
    if (req.name.length > MAX_NAME) throw invalidArgument("name", `at most ${MAX_NAME} characters`);
    if (hasControlCharacter(req.name)) throw invalidArgument("name", "must not contain control characters");
    const secret = newTokenSecret();
    const createdAt = this.now();
    const record = await this.store.createToken({
      id: `tok_${ulid(createdAt)}`,
      digest: tokenDigest(secret),
      orgId: req.orgId,
      kind,
      name: req.name,
      createdAt,
    });
    await this.registry?.refresh();
    this.logger.info({ token: record.id, org: record.orgId, kind, name: record.name }, "API token created");
    return create(CreateTokenResponseSchema, { token: tokenMessage(record), secret });
  }

  async listTokens(req: ListTokensRequest): Promise<ListTokensResponse> {
    const tokens = (await this.store.listTokens()).filter(
      (t) => (req.orgId === "" || t.orgId === req.orgId) && (req.includeRevoked || t.revokedAt === null),
    );
    return create(ListTokensResponseSchema, { tokens: tokens.map(tokenMessage) });
  }

  async revokeToken(req: RevokeTokenRequest): Promise<RevokeTokenResponse> {
    if (req.id === "") throw invalidArgument("id", "required");
    const record = await this.store.revokeToken(req.id, this.now());
    if (record === undefined) throw new ConnectError(`token "${req.id}" not found`, Code.NotFound);
    await this.registry?.refresh();
    this.logger.info({ token: record.id, org: record.orgId, kind: record.kind }, "API token revoked");
    return create(RevokeTokenResponseSchema, { token: tokenMessage(record) });
  }
}

function kindOf(kind: TokenKind): StoredTokenKind {
  if (kind === TokenKind.ADMIN) return "admin";
  if (kind === TokenKind.SIDECAR) return "sidecar";
  throw invalidArgument("kind", "required: TOKEN_KIND_ADMIN or TOKEN_KIND_SIDECAR");
}

export function tokenMessage(record: TokenRecord): Token {
  return create(TokenSchema, {
    id: record.id,
    orgId: record.orgId,
    kind: record.kind === "admin" ? TokenKind.ADMIN : TokenKind.SIDECAR,
    name: record.name,
    createTime: timestampFromMs(record.createdAt),
    ...(record.revokedAt !== null ? { revokeTime: timestampFromMs(record.revokedAt) } : {}),
  });
}
