import { hostname } from "node:os";
import { LRUCache } from "lru-cache";
import type { Logger } from "../../common/logger.js";
import { ulid } from "../../common/ids.js";
import { USER_AGENT } from "../../common/version.js";
import { webhookBody } from "../../common/webhook-body.js";
import type { GatewayConfig } from "../config/types.js";
import type { AttemptOutcome, ClaimedDelivery, EndpointRecord, NewAttempt, Store } from "../store/store.js";
import { CircuitBreaker } from "./circuit-breaker.js";
import { createDeliveryPool, type DeliveryPool } from "./pool.js";
import { classifyAttempt, deadLettered, decideOutcome, describeAttempt, type AttemptResult } from "./retry-policy.js";
import type { DeliveryBatch } from "./task.js";

/**
 * The main-thread half of delivery: claims due deliveries from the store with a lease,
 * keeps within the global and per-endpoint concurrency caps and the circuit breakers,
 * hands each attempt to the worker pool, and records the outcome the retry policy decides.
 * It never waits on a receiver itself: the only awaits on the main thread are the store
 * and worker results, so a hanging endpoint costs one in-flight slot, not the loop.
 */

export type AttemptOutcomeName = AttemptOutcome["status"];

/** Upper bounds (ms) of the attempt latency histogram; the last bucket is +Inf. */
export const LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000] as const;

export interface DeliveryMetrics {
  /** Attempts recorded, by the delivery's resulting state. */
  attempts: Record<AttemptOutcomeName, number>;
  /** Requests in flight now. */
  inFlight: number;
  /** Cumulative counts of HTTP attempt latencies ≤ each bound (Prometheus style), then +Inf. */
  latency: { bucketsMs: readonly number[]; counts: number[]; sumMs: number; count: number };
  /** Endpoints whose circuit is open or half-open. */
  openCircuits: string[];
}

export interface DeliverySchedulerOptions {
  store: Store;
  config: GatewayConfig;
  logger: Logger;
  /** Default: a pool this scheduler creates, and closes on stop(). */
  pool?: DeliveryPool;
  /** Identifies this process's leases; default host/pid/random. */
  leaseOwner?: string;
  now?: () => number;
  /** How long stop() waits for in-flight attempts; default min(timeout_ms, 10 s). */
  stopTimeoutMs?: number;
}

/** Poll when due work exists but none is claimable (capped endpoints, other owners' leases). */
const BLOCKED_POLL_MS = 100;
/** Longest sleep with nothing due: picks up work another replica scheduled. */
const IDLE_POLL_MS = 5_000;
const CACHE_TTL_MS = 1_000;
/**
 * Attempts per worker task. A task round trip costs far more main-thread CPU than one
 * delivery's bookkeeping; results still come back one by one as each attempt ends.
 */
const MAX_BATCH = 32;

/** Free slots that trigger a new claim: one claim (a write transaction) refills many. */
function refillMark(cap: number): number {
  return Math.max(1, Math.floor(cap / 4));
}

/** An endpoint as one claim sees it; secrets only when it will be sent to. */
type Target = { endpoint: EndpointRecord | undefined; secrets: string[] | { error: unknown } } | { error: unknown };

interface SentAttempt {
  delivery: ClaimedDelivery;
  endpoint: EndpointRecord;
}

export class DeliveryScheduler {
  private config: GatewayConfig;
  private readonly store: Store;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly leaseOwner: string;
  private readonly breaker: CircuitBreaker;
  private readonly endpoints = new LRUCache<string, Promise<EndpointRecord | undefined>>({
    max: 10_000,
    ttl: CACHE_TTL_MS,
  });
  // Brief caching keeps a key rotation visible within a second without a query per attempt.
  private readonly secrets = new LRUCache<string, Promise<string[]>>({ max: 10_000, ttl: CACHE_TTL_MS });
  private pool: DeliveryPool | undefined;
  private readonly ownsPool: boolean;
  private readonly stopTimeoutMs: number | undefined;

  private running = false;
  private pumping: Promise<void> | undefined;
  private pumpAgain = false;
  private pumpQueued = false;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private readonly perEndpoint = new Map<string, number>();
  private readonly attemptsInFlight = new Set<Promise<void>>();

  private readonly attemptCounts: Record<AttemptOutcomeName, number> = {
    delivered: 0,
    retry: 0,
    failed: 0,
    dead_lettered: 0,
    endpoint_gone: 0,
  };
  private readonly latencyCounts: number[] = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  private latencySumMs = 0;
  private latencyCount = 0;

  constructor(options: DeliverySchedulerOptions) {
    this.store = options.store;
    this.config = options.config;
    this.log = options.logger;
    this.now = options.now ?? Date.now;
    this.leaseOwner = options.leaseOwner ?? `${hostname()}/${process.pid}/${ulid().slice(-8)}`;
    this.breaker = new CircuitBreaker(breakerSettings(options.config));
    this.pool = options.pool;
    this.ownsPool = options.pool === undefined;
    this.stopTimeoutMs = options.stopTimeoutMs;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // Any worker may take every in-flight attempt: a task queued inside piscina behind a
    // hanging receiver's requests would break endpoint isolation.
    this.pool ??= createDeliveryPool({
      concurrentTasksPerWorker: Math.max(64, this.config.delivery.concurrentDeliveries),
    });
    this.log.info(
      { leaseOwner: this.leaseOwner, concurrency: this.config.delivery.concurrentDeliveries },
      "delivery scheduler started",
    );
    this.schedulePump();
  }

  /** New deliveries were stored: claim them promptly instead of at the next timer. */
  notify(): void {
    this.schedulePump();
  }

  updateConfig(config: GatewayConfig): void {
    this.config = config;
    this.breaker.updateSettings(breakerSettings(config));
    this.endpoints.clear();
    this.secrets.clear();
    this.schedulePump();
  }

  isCircuitOpen(endpoint: string): boolean {
    return this.breaker.state(endpoint, this.now()) !== "closed";
  }

  metrics(): DeliveryMetrics {
    let cumulative = 0;
    const counts = this.latencyCounts.map((n) => {
      cumulative += n;
      return cumulative;
    });
    return {
      attempts: { ...this.attemptCounts },
      inFlight: this.inFlight,
      latency: { bucketsMs: LATENCY_BUCKETS_MS, counts, sumMs: this.latencySumMs, count: this.latencyCount },
      openCircuits: this.breaker.openEndpoints(this.now()),
    };
  }

  /** Stops claiming, waits (bounded) for attempts in flight, then gives unfinished leases back. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.pumping;
    const bound = this.stopTimeoutMs ?? Math.min(this.config.delivery.timeoutMs, 10_000);
    let boundTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.attemptsInFlight]),
      new Promise<void>((resolve) => {
        boundTimer = setTimeout(resolve, bound);
      }),
    ]);
    clearTimeout(boundTimer);
    if (this.inFlight > 0) this.log.warn({ inFlight: this.inFlight }, "stopping with attempts still in flight");
    try {
      const released = await this.store.releaseLeases(this.leaseOwner);
      if (released > 0) this.log.info({ released }, "released delivery leases");
    } catch (err) {
      this.log.error({ err }, "releasing delivery leases failed; they return to the queue when they expire");
    }
    if (this.ownsPool && this.pool) {
      const pool = this.pool;
      this.pool = undefined;
      await pool.close();
    }
    this.log.info("delivery scheduler stopped");
  }

  // ---- the claim loop ---------------------------------------------------------------------

  private schedulePump(): void {
    if (!this.running || this.pumpQueued) return;
    this.pumpQueued = true;
    // setImmediate coalesces a burst of completions and notifications into one claim.
    setImmediate(() => {
      this.pumpQueued = false;
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (!this.running) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pumping = this.claimAndDispatch();
    try {
      await this.pumping;
    } finally {
      this.pumping = undefined;
    }
    if (this.pumpAgain) {
      this.pumpAgain = false;
      this.schedulePump();
    } else {
      await this.armTimer();
    }
  }

  private async claimAndDispatch(): Promise<void> {
    try {
      // Bounded rounds: a store that keeps returning full batches still yields to I/O.
      for (let round = 0; round < 16 && this.running; round++) {
        this.pumpAgain = false;
        const now = this.now();
        const free = this.config.delivery.concurrentDeliveries - this.inFlight;
        if (free <= 0) return;
        const plan = await this.claimPlan(now, free);
        if (plan.limit <= 0) return;
        const claimed = await this.store.claimDue({
          now,
          limit: plan.limit,
          leaseOwner: this.leaseOwner,
          leaseMs: Math.ceil(this.config.delivery.timeoutMs) + 10_000,
          skipEndpoints: plan.skip,
        });
        // Claimed during stop(): released by stop() once this pump settles.
        if (!this.running) return;
        if (claimed.length > 0) this.dispatch(claimed);
        if (claimed.length < plan.limit) return;
      }
      this.pumpAgain = true;
    } catch (err) {
      this.log.error({ err }, "claiming due deliveries failed; retrying shortly");
    }
  }

  /**
   * Which endpoints to leave out of this claim, and how many rows to claim at most so that
   * no endpoint can exceed its allowance (the store claims oldest-first across endpoints).
   * An endpoint with an open circuit is skipped unless it has a failover target: then its
   * due deliveries are claimed and handed to the failover at once.
   */
  private async claimPlan(now: number, free: number): Promise<{ skip: string[]; limit: number }> {
    const perEndpointCap = Math.max(1, this.config.delivery.perEndpointConcurrency);
    const skip: string[] = [];
    let limit = Math.min(free, perEndpointCap);
    const names = new Set([...this.perEndpoint.keys(), ...this.breaker.openEndpoints(now)]);
    for (const name of names) {
      const inFlight = this.perEndpoint.get(name) ?? 0;
      if (this.breaker.state(name, now) === "open") {
        const record = await this.endpoint(name);
        if (record?.failoverTo && record.enabled) continue; // each claimed row costs no request
        skip.push(name);
        continue;
      }
      const remaining = this.breaker.allowance(name, now, perEndpointCap) - inFlight;
      if (remaining <= 0) skip.push(name);
      else limit = Math.min(limit, remaining);
    }
    return { skip, limit };
  }

  private async armTimer(): Promise<void> {
    if (!this.running || this.timer) return;
    let delay = IDLE_POLL_MS;
    if (this.inFlight > 0) {
      // Completions pump as they come; this only covers retries falling due while every
      // attempt in flight is slow. Cheaper than asking the store for the next due time.
      delay = BLOCKED_POLL_MS;
    } else {
      try {
        const due = await this.store.nextDueAt();
        const now = this.now();
        // Due already but not claimed: held by an open circuit or by another owner's
        // lease. notify() pumps sooner; this is the backstop.
        if (due !== undefined) delay = due > now ? due - now : BLOCKED_POLL_MS;
        const transition = this.breaker.nextTransitionAt(now);
        if (transition !== undefined) delay = Math.min(delay, transition - now);
      } catch (err) {
        this.log.error({ err }, "reading the next due time failed");
        delay = 1_000;
      }
    }
    if (!this.running || this.timer || this.pumping) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.pump();
      },
      Math.min(IDLE_POLL_MS, Math.max(1, delay)),
    );
    this.timer.unref();
  }

  // ---- attempts -----------------------------------------------------------------------------

  /**
   * Takes a claim's in-flight slots at once (the next claim plan counts them), then sends
   * it to the pool. Each delivery gives its slots back when its own attempt is recorded.
   */
  private dispatch(claimed: ClaimedDelivery[]): void {
    for (const delivery of claimed) {
      this.inFlight++;
      this.perEndpoint.set(delivery.endpoint, (this.perEndpoint.get(delivery.endpoint) ?? 0) + 1);
    }
    const sent: Promise<void> = this.send(claimed)
      .catch((err: unknown) => {
        // Unreachable by design (send settles every delivery itself); the leases would expire.
        this.log.error({ err, deliveries: claimed.length }, "sending claimed deliveries failed");
      })
      .finally(() => this.attemptsInFlight.delete(sent));
    this.attemptsInFlight.add(sent);
  }

  /**
   * Prepares the claimed deliveries (one endpoint and key read per endpoint, not per
   * delivery), records those that need no request, and runs the rest in batches. Settles
   * when every delivery's attempt is recorded (or failed to be).
   */
  private async send(claimed: ClaimedDelivery[]): Promise<void> {
    const startedAt = this.now();
    const recordings: Promise<void>[] = [];
    const targets = await this.prepareTargets(claimed, startedAt);
    const { security, delivery: deliveryConfig } = this.config;
    const batches: { batch: DeliveryBatch; sent: SentAttempt[] }[] = [];
    let current: { batch: DeliveryBatch; sent: SentAttempt[]; destinations: Map<string, number> } | undefined;

    for (const delivery of claimed) {
      const name = delivery.endpoint;
      const target = targets.get(name);
      if (!target || "error" in target) {
        // The lease is still held; it expires and the delivery is claimed again.
        recordings.push(this.settle(delivery, Promise.reject(target?.error ?? new Error("endpoint not read"))));
        continue;
      }
      const { endpoint, secrets } = target;
      let skipReason: [string, AttemptOutcome] | undefined;
      let body = "";
      if (!endpoint) skipReason = [`endpoint "${name}" no longer exists`, { status: "failed" }];
      else if (!endpoint.enabled) {
        const why = endpoint.disabledReason ? `: ${endpoint.disabledReason}` : "";
        skipReason = [`endpoint "${name}" is disabled${why}`, { status: "failed" }];
      } else if (endpoint.failoverTo && this.breaker.state(name, startedAt) === "open") {
        skipReason = ["circuit open", deadLettered(endpoint.failoverTo)];
      } else if (typeof secrets === "object" && !Array.isArray(secrets)) {
        skipReason = [`cannot build the webhook: ${errorMessage(secrets.error)}`, { status: "failed" }];
      } else if (secrets.length === 0) {
        skipReason = [`endpoint "${name}" has no valid signing key`, { status: "failed" }];
      } else {
        try {
          body = JSON.stringify(webhookBody(delivery.event));
        } catch (err) {
          skipReason = [`cannot build the webhook: ${errorMessage(err)}`, { status: "failed" }];
        }
      }
      if (skipReason || !endpoint || !Array.isArray(secrets)) {
        const [error, outcome] = skipReason ?? ["endpoint not read", { status: "failed" }];
        recordings.push(this.settle(delivery, this.finishWithoutRequest(delivery, error, outcome)));
        continue;
      }

      if (!current || current.batch.items.length >= MAX_BATCH) {
        current = {
          batch: {
            destinations: [],
            items: [],
            signatureHeader: security.signatureHeader,
            timeoutMs: deliveryConfig.timeoutMs,
            requireHttps: security.requireHttps,
            allowedNetworks: [...security.allowedNetworks],
            userAgent: USER_AGENT,
          },
          sent: [],
          destinations: new Map(),
        };
        batches.push(current);
      }
      let destination = current.destinations.get(name);
      if (destination === undefined) {
        destination = current.batch.destinations.push({ url: endpoint.url, secrets }) - 1;
        current.destinations.set(name, destination);
      }
      current.batch.items.push({ destination, body, webhookId: delivery.eventId });
      current.sent.push({ delivery, endpoint });
      this.breaker.attemptStarted(name, startedAt);
    }

    await Promise.all(
      batches.map(async ({ batch, sent }) => {
        const pool = this.pool;
        const onResult = (index: number, result: AttemptResult) => {
          const attempt = sent[index];
          if (attempt) recordings.push(this.settle(attempt.delivery, this.record(attempt, startedAt, result)));
        };
        const failure = pool ? await pool.runBatch(batch, onResult) : closedPool(batch, onResult);
        // The pool itself failed (a worker died, shutdown): those attempts retry like network errors.
        if (failure && this.running) this.log.error({ err: failure, attempts: sent.length }, "delivery worker failed");
      }),
    );
    await Promise.all(recordings);
  }

  /** Each endpoint of a claim read once (cached briefly), with its signing secrets when it will be sent to. */
  private async prepareTargets(claimed: ClaimedDelivery[], now: number): Promise<Map<string, Target>> {
    const targets = new Map<string, Target>();
    const reads: Promise<void>[] = [];
    for (const { endpoint: name } of claimed) {
      if (targets.has(name)) continue;
      const target: Target = { endpoint: undefined, secrets: [] };
      targets.set(name, target);
      reads.push(
        (async () => {
          try {
            const endpoint = await this.endpoint(name);
            target.endpoint = endpoint;
            if (!endpoint?.enabled) return;
            try {
              target.secrets = await this.signingSecrets(name, now);
            } catch (error) {
              target.secrets = { error };
            }
          } catch (error) {
            targets.set(name, { error });
          }
        })(),
      );
    }
    await Promise.all(reads);
    return targets;
  }

  /** Gives a delivery's slots back once its attempt is recorded, or could not be. */
  private settle(delivery: ClaimedDelivery, recording: Promise<void>): Promise<void> {
    return recording.then(
      () => this.release(delivery.endpoint),
      (err: unknown) => {
        // The lease is still held; it expires and the delivery is claimed again.
        this.log.error(
          { err, deliveryId: delivery.id, endpoint: delivery.endpoint },
          "delivery attempt could not be recorded",
        );
        this.release(delivery.endpoint);
      },
    );
  }

  private release(name: string): void {
    this.inFlight--;
    const left = (this.perEndpoint.get(name) ?? 1) - 1;
    if (left > 0) this.perEndpoint.set(name, left);
    else this.perEndpoint.delete(name);
    // Refill in batches: one claim per completion would cost a store round trip per
    // delivery. The in-flight timer (BLOCKED_POLL_MS) bounds the wait below the mark.
    const cap = this.config.delivery.concurrentDeliveries;
    if (this.inFlight === 0 || cap - this.inFlight >= refillMark(cap)) this.schedulePump();
  }

  private async record({ delivery, endpoint }: SentAttempt, startedAt: number, result: AttemptResult): Promise<void> {
    const name = delivery.endpoint;
    const finishedAt = this.now();
    const attemptNumber = delivery.attemptCount + 1;
    const outcome = decideOutcome(result, this.config.retry, {
      attempt: attemptNumber,
      now: finishedAt,
      failoverTo: endpoint.failoverTo,
      endpoint: name,
    });
    this.trackCircuit(name, result, finishedAt);
    this.observeLatency(result.latencyMs);

    const error = describeAttempt(result);
    const record: NewAttempt = {
      startedAt,
      statusCode: result.statusCode,
      latencyMs: result.latencyMs,
      error,
      responseBody: result.responseBody,
    };
    await this.complete(delivery, record, outcome);
    if (this.log.isLevelEnabled("debug")) {
      this.log.debug(
        {
          deliveryId: delivery.id,
          endpoint: name,
          attempt: attemptNumber,
          status: result.statusCode,
          outcome: outcome.status,
        },
        "delivery attempt",
      );
    }
    if (outcome.status === "endpoint_gone") {
      this.endpoints.delete(name);
      this.log.warn({ endpoint: name }, "receiver answered 410 Gone; endpoint disabled");
    } else if (outcome.status === "dead_lettered") {
      this.log.warn(
        { deliveryId: delivery.id, endpoint: name, attempts: attemptNumber, error },
        "delivery dead-lettered",
      );
    } else if (outcome.status === "failed") {
      this.log.info({ deliveryId: delivery.id, endpoint: name, error }, "delivery failed");
    }
  }

  /** Records an attempt that made no request (disabled endpoint, open circuit) so last_error says why. */
  private async finishWithoutRequest(delivery: ClaimedDelivery, error: string, outcome: AttemptOutcome): Promise<void> {
    const record: NewAttempt = { startedAt: this.now(), statusCode: 0, latencyMs: 0, error, responseBody: "" };
    await this.complete(delivery, record, outcome);
    this.log.info(
      { deliveryId: delivery.id, endpoint: delivery.endpoint, outcome: outcome.status, error },
      "delivery not attempted",
    );
  }

  private async complete(delivery: ClaimedDelivery, attempt: NewAttempt, outcome: AttemptOutcome): Promise<void> {
    const result = await this.store.completeAttempt(delivery.id, this.leaseOwner, attempt, outcome);
    this.attemptCounts[outcome.status]++;
    if (!result.recorded) {
      this.log.warn(
        { deliveryId: delivery.id, endpoint: delivery.endpoint },
        "delivery lease lost; attempt not recorded",
      );
      return;
    }
    if (result.failoverDelivery) {
      this.log.info(
        {
          deliveryId: delivery.id,
          failoverDeliveryId: result.failoverDelivery.id,
          endpoint: result.failoverDelivery.endpoint,
        },
        "delivery failed over",
      );
      this.schedulePump();
    }
  }

  /**
   * Only failures that say the endpoint is unwell count towards opening its circuit:
   * retryable statuses, timeouts and network errors. A 4xx is the receiver answering.
   */
  private trackCircuit(name: string, result: AttemptResult, now: number): void {
    const verdict = classifyAttempt(result, this.config.retry);
    if (verdict === "delivered") {
      this.breaker.recordSuccess(name);
    } else if (verdict === "retryable" && this.breaker.recordFailure(name, now)) {
      this.log.warn(
        { endpoint: name, cooldownMs: this.config.delivery.circuitBreakerCooldownMs },
        "endpoint circuit opened after consecutive failures",
      );
    }
  }

  private observeLatency(ms: number): void {
    let i = LATENCY_BUCKETS_MS.findIndex((bound) => ms <= bound);
    if (i < 0) i = LATENCY_BUCKETS_MS.length;
    this.latencyCounts[i] = (this.latencyCounts[i] ?? 0) + 1;
    this.latencySumMs += ms;
    this.latencyCount++;
  }

  // Both caches hold promises: when a batch of deliveries to one endpoint starts together,
  // they share one store read instead of each missing the cache at once.
  private endpoint(name: string): Promise<EndpointRecord | undefined> {
    const cached = this.endpoints.get(name);
    if (cached) return cached;
    const read = this.store.getEndpoint(name);
    this.endpoints.set(name, read);
    read.catch(() => this.endpoints.delete(name));
    return read;
  }

  private signingSecrets(name: string, now: number): Promise<string[]> {
    const cached = this.secrets.get(name);
    if (cached) return cached;
    const read = this.store.activeSigningKeys(name, now).then((keys) => keys.map((k) => k.secret));
    this.secrets.set(name, read);
    // An endpoint without keys (mid-rotation, just created) is asked again next time.
    read.then(
      (secrets) => {
        if (secrets.length === 0) this.secrets.delete(name);
      },
      () => this.secrets.delete(name),
    );
    return read;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Results for a batch that found the pool already closed (stop() racing a claim). */
function closedPool(batch: DeliveryBatch, onResult: (index: number, result: AttemptResult) => void): Error {
  const error = new Error("delivery pool is closed");
  const result: AttemptResult = {
    statusCode: 0,
    latencyMs: 0,
    error: error.message,
    responseBody: "",
    timedOut: false,
    networkError: true,
    refused: false,
  };
  for (let i = 0; i < batch.items.length; i++) onResult(i, result);
  return error;
}

function breakerSettings(config: GatewayConfig) {
  return {
    threshold: config.delivery.circuitBreakerThreshold,
    cooldownMs: config.delivery.circuitBreakerCooldownMs,
  };
}
