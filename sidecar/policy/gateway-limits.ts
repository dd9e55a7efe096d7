import type { GatewayLimit } from "../../gen/aigw/v1/ingest_pb.js";
import { MinuteBucket } from "./minute-bucket.js";

export type LimitType = "requests" | "tokens";

/** A request refused by a gateway limit. */
export interface LimitRefusal {
  readonly limitType: LimitType;
  /** The limit per minute (this sidecar's share). */
  readonly limit: number;
  /** "" for an org-wide limit, else the app it names. */
  readonly app: string;
  /** Milliseconds until the limit admits a request again. */
  readonly retryAfterMs: number;
  /** True for the first refusal since the limit last admitted a request (one rate_limit event per episode). */
  readonly firstRefusal: boolean;
}

interface LimitBuckets {
  readonly app: string;
  readonly requests: MinuteBucket | undefined;
  readonly tokens: MinuteBucket | undefined;
}

/**
 * The control plane's gateway limits (requests and tokens per minute) for this sidecar's
 * org and app, as token buckets. Requests are counted when admitted; tokens when a call's
 * usage is known (`recordTokens`), so a tokens limit refuses calls once the minute's
 * allowance is used up, never a call halfway.
 */
export class GatewayLimiter {
  private compiledFrom: readonly GatewayLimit[] | undefined;
  private active: LimitBuckets[] = [];
  /** By app ("" = org-wide) and kind, kept across config pushes so a new version does not reset the window. */
  private readonly buckets = new Map<string, MinuteBucket>();
  private tokenBuckets: MinuteBucket[] = [];

  constructor(
    private readonly orgId: string,
    private readonly app: string,
  ) {}

  /** Whether any tokens-per-minute limit applies (calls' usage must then be recorded). */
  metersTokens(limits: readonly GatewayLimit[], now: number): boolean {
    if (limits !== this.compiledFrom) this.compile(limits, now);
    return this.tokenBuckets.length > 0;
  }

  /** Hot path: admits (and counts) a request, or says which limit refuses it. */
  admit(limits: readonly GatewayLimit[], now: number): LimitRefusal | undefined {
    if (limits !== this.compiledFrom) this.compile(limits, now);
    const active = this.active;
    if (active.length === 0) return undefined;
    for (const limit of active) {
      if (limit.tokens && !limit.tokens.has(1, now)) return refuse(limit, limit.tokens, "tokens", now);
      if (limit.requests && !limit.requests.has(1, now)) return refuse(limit, limit.requests, "requests", now);
    }
    for (const limit of active) {
      if (limit.requests) {
        limit.requests.take(1, now);
        limit.requests.refusing = false;
      }
      if (limit.tokens) limit.tokens.refusing = false;
    }
    return undefined;
  }

  /** Counts the tokens a finished call used against every tokens limit. */
  recordTokens(tokens: number, now: number): void {
    if (tokens <= 0) return;
    for (const bucket of this.tokenBuckets) bucket.take(tokens, now);
  }

  private compile(limits: readonly GatewayLimit[], now: number): void {
    this.compiledFrom = limits;
    const active: LimitBuckets[] = [];
    const used = new Set<string>();
    for (const limit of limits) {
      if (limit.orgId !== this.orgId || (limit.app !== "" && limit.app !== this.app)) continue;
      const requests = this.bucket(limit.app, "requests", limit.requestsPerMinute, now, used);
      const tokens = this.bucket(limit.app, "tokens", limit.tokensPerMinute, now, used);
      if (requests || tokens) active.push({ app: limit.app, requests, tokens });
    }
    for (const key of this.buckets.keys()) if (!used.has(key)) this.buckets.delete(key);
    this.active = active;
    this.tokenBuckets = active.flatMap((l) => (l.tokens ? [l.tokens] : []));
  }

  private bucket(
    app: string,
    kind: LimitType,
    perMinute: number,
    now: number,
    used: Set<string>,
  ): MinuteBucket | undefined {
    if (perMinute <= 0) return undefined;
    const key = `${app}\u0000${kind}`;
    // Two entries for the same app and kind: the first wins, as the control plane sends one.
    if (used.has(key)) return undefined;
    used.add(key);
    let bucket = this.buckets.get(key);
    if (bucket) {
      bucket.setLimit(perMinute, now);
    } else {
      bucket = new MinuteBucket(perMinute, now);
      this.buckets.set(key, bucket);
    }
    return bucket;
  }
}

function refuse(limit: LimitBuckets, bucket: MinuteBucket, limitType: LimitType, now: number): LimitRefusal {
  const firstRefusal = !bucket.refusing;
  bucket.refusing = true;
  return {
    limitType,
    limit: bucket.limit,
    app: limit.app,
    retryAfterMs: Math.max(1, bucket.msUntil(1, now)),
    firstRefusal,
  };
}
