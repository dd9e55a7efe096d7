import { hostname } from "node:os";
import { LRUCache } from "lru-cache";
import { steadyNow } from "../../common/clock.js";
import { errorCodeOf } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { ulid } from "../../common/ids.js";
import { USER_AGENT } from "../../common/version.js";
import type { GatewayConfig } from "../config/types.js";
import type {
  AttemptOutcome,
  AutoDisableEffects,
  ClaimedDelivery,
  CompleteResult,
  EndpointRecord,
  LaneClaim,
  NewAttempt,
  OperatorEffects,
  Store,
} from "../store/store.js";
import { failingDetail } from "../store/operator-events.js";
import { isStoreUnavailable } from "../store/unavailable.js";
import { endpointLabel, type TrafficMetrics } from "../http/labelled-metrics.js";
import { ONE_OFF_PREFIX } from "../routing/one-off.js";
import { CircuitBreaker } from "./circuit-breaker.js";
import { type LaneDecision, type LaneView, laneViews, planClaims, type SettleReason } from "./claim-planner.js";
import { type Lane, type LaneCounts, LaneTable } from "./lanes.js";
import { createDeliveryPool, type DeliveryPool } from "./pool.js";
import { classifyAttempt, deadLettered, decideOutcome, describeAttempt, type AttemptResult } from "./retry-policy.js";
import type { DeliveryBatch } from "./task.js";
import { withoutControlCharacters } from "../../common/text.js";
import { MAX_INT_COLUMN } from "../store/store.js";

/**
 * The main-thread half of delivery. Each endpoint with pending work is a lane
 * (lanes.ts); a claim round takes ready lanes round-robin, lets the planner decide what
 * each may take (claim-planner.ts: its own concurrency, its circuit, the global cap), and
 * claims each lane's due rows from that endpoint's own index range, so a claim costs what
 * it returns: never another endpoint's backlog, never an endpoint at its cap. Attempts run
 * in the worker pool, which renders and signs the webhooks; results are recorded as they
 * come (group-committed by the store). The only awaits here are the store and the pool, so
 * a hanging receiver costs its own lane's slots and nothing else.
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
  lanes: LaneCounts;
  /** Claim rounds run, and the rows they claimed. */
  claims: { rounds: number; rows: number };
}

/** What the scheduler is doing, for the watchdog's report of a stalled main thread. */
export interface SchedulerActivity {
  phase: "idle" | "rescan" | "plan" | "claim" | "dispatch";
  inFlight: number;
  lanes: LaneCounts;
  lastClaim: { at: number; lanes: number; rows: number; ms: number } | undefined;
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
  /** How long stop() waits for attempts in flight; default 10 s (`--drain-timeout`). */
  stopTimeoutMs?: number;
  /** Deliveries per endpoint and outcome, event→delivered latency (for /metrics). */
  traffic?: TrafficMetrics;
  /**
   * Operator events the store made while recording this scheduler's results (endpoint
   * disabled, recovered, delivery exhausted): for the live feed. Their lanes are woken here.
   */
  onOperatorEvents?: (effects: OperatorEffects) => void;
  /** An endpoint was disabled by aigw (410, a run of failures): routing changes. */
  onEndpointDisabled?: (endpoint: string) => void;
}

/** A run of failed attempts of one endpoint (delivery.auto_disable_after_ms). */
interface FailingRun {
  /** Scheduler clock of the first failure of the run. */
  since: number;
  attempts: number;
  disabling: boolean;
}

/** Lanes looked at per claim round, and rows claimed per round (bounds one transaction). */
const MAX_LANES_PER_ROUND = 64;
const MAX_ROWS_PER_ROUND = 512;
/** Claim rounds before yielding the event loop. */
const MAX_ROUNDS = 8;
/**
 * Attempts per worker task. A task round trip costs far more main-thread CPU than one
 * delivery's bookkeeping; results still come back one by one as each attempt ends.
 */
const MAX_BATCH = 32;
/** Rows recorded without a request (failover, disabled or deleted endpoint) per lane per round. */
const SETTLE_BATCH = 128;
/**
 * How often the scheduler asks the store which lanes have pending work. Every write this
 * process makes wakes its lane directly; this catches the rest (leases of a crashed
 * process, another replica's writes) and costs one index seek per lane.
 */
const RESCAN_EVERY_MS = 10_000;
const RESCAN_PAGE = 256;
/** Drop circuit failure counts this old (closed circuits only). */
const CIRCUIT_IDLE_MS = 10 * 60_000;
const CACHE_TTL_MS = 1_000;
/** A lane whose due rows could not be claimed (held by another claim) is looked at again after this. */
const BUSY_RETRY_MS = 50;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
/** Backoff while the store refuses writes (locked, disk full), and after an unexpected claim failure. */
const STORE_BACKOFF_FIRST_MS = 100;
const STORE_BACKOFF_MAX_MS = 5_000;
const CLAIM_FAILURE_BACKOFF_MS = 1_000;

/** Free slots that trigger a new claim: one claim (a write transaction) refills many. */
function refillMark(cap: number): number {
  return Math.max(1, Math.floor(cap / 4));
}

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
  private readonly lanes = new LaneTable();
  // Both caches hold promises: deliveries to one endpoint share one store read.
  private readonly endpoints = new LRUCache<string, Promise<EndpointRecord | undefined>>({
    max: 10_000,
    ttl: CACHE_TTL_MS,
  });
  // Brief caching keeps a key rotation visible within a second without a query per attempt.
  private readonly secrets = new LRUCache<string, Promise<string[]>>({ max: 10_000, ttl: CACHE_TTL_MS });
  private pool: DeliveryPool | undefined;
  private readonly ownsPool: boolean;
  private readonly stopTimeoutMs: number;
  private readonly onOperatorEvents: ((effects: OperatorEffects) => void) | undefined;
  private readonly onEndpointDisabled: ((endpoint: string) => void) | undefined;
  /** Endpoints whose attempts all failed since their first failure here; bounded like circuits (pruned when idle). */
  private readonly failing = new Map<string, FailingRun>();
  private failingRunsRestored = false;
  private readonly runWrites = new Map<string, Promise<void>>();

  private running = false;
  private pumping: Promise<void> | undefined;
  private pumpAgain = false;
  private pumpQueued = false;
  private timer: NodeJS.Timeout | undefined;
  private lastRescanAt = 0;
  private rescanRequested = true;
  /** Requests in flight (settlements without a request are not counted here). */
  private inFlight = 0;
  private readonly attemptsInFlight = new Set<Promise<void>>();
  private phase: SchedulerActivity["phase"] = "idle";
  private lastClaim: SchedulerActivity["lastClaim"];
  private claimRounds = 0;
  private claimedRows = 0;
  /** Endpoints whose open circuit was logged, so a circuit that stays open is logged once. */
  private readonly loggedOpen = new Set<string>();
  /** Failovers since the stretch was logged, by "from\0to"; cleared when the circuit closes. */
  private readonly failovers = new Map<string, number>();
  /**
   * While the store refuses writes (locked by another process, disk full): no claims before
   * `until` (performance.now()), and attempt results wait for it too; `delayMs` doubles per
   * failure up to STORE_BACKOFF_MAX_MS. One log line when it starts, one when it ends.
   */
  private storeOutage: { since: number; until: number; delayMs: number; failures: number } | undefined;

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

  private readonly traffic: TrafficMetrics | undefined;

  constructor(options: DeliverySchedulerOptions) {
    this.store = options.store;
    this.config = options.config;
    this.log = options.logger;
    // Retries, leases and circuits on a clock that a wall clock step does not move.
    this.now = options.now ?? steadyNow;
    this.leaseOwner = options.leaseOwner ?? `${hostname()}/${process.pid}/${ulid().slice(-8)}`;
    this.breaker = new CircuitBreaker(breakerSettings(options.config));
    this.pool = options.pool;
    this.ownsPool = options.pool === undefined;
    this.stopTimeoutMs = options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    this.traffic = options.traffic;
    this.onOperatorEvents = options.onOperatorEvents;
    this.onEndpointDisabled = options.onEndpointDisabled;
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
      {
        leaseOwner: this.leaseOwner,
        concurrency: this.config.delivery.concurrentDeliveries,
        perEndpoint: this.config.delivery.perEndpointConcurrency,
      },
      "delivery scheduler started",
    );
    this.rescanRequested = true;
    this.schedulePump();
  }

  /**
   * New deliveries were stored for `endpoints` (ingest, replay, test events): claim them
   * promptly. Without endpoints, the store is asked which lanes have work.
   */
  notify(endpoints?: readonly string[]): void {
    if (endpoints === undefined) this.rescanRequested = true;
    else {
      const now = this.now();
      for (const name of endpoints) this.lanes.wake(name, now, now);
    }
    this.schedulePump();
  }

  updateConfig(config: GatewayConfig): void {
    this.config = config;
    this.breaker.updateSettings(breakerSettings(config));
    this.endpoints.clear();
    this.secrets.clear();
    this.rescanRequested = true;
    this.schedulePump();
  }

  /**
   * Takes the circuit states recorded in the store (by any process): at start, and when
   * another replica opened or closed one.
   */
  async syncCircuits(): Promise<void> {
    const circuits = await this.store.listCircuits();
    for (const c of circuits) this.breaker.applyShared(c.endpoint, c.open, c.openedAt);
    // Runs of failed attempts recorded before this process started go on (once, at start:
    // later, this process's own attempts say more than a read that may be older than them).
    if (!this.failingRunsRestored) {
      this.failingRunsRestored = true;
      for (const c of circuits) {
        if (!c.failingSince || this.failing.has(c.endpoint)) continue;
        // At least one attempt failed; the rule's "two attempts" needs one more here.
        this.failing.set(c.endpoint, { since: c.failingSince, attempts: 1, disabling: false });
      }
    }
    this.schedulePump();
  }

  /**
   * Records a circuit this process opened or closed, for the other processes on the store.
   * Closing one recorded open makes endpoint.recovered (store side, once over replicas).
   */
  private shareCircuit(endpoint: string, open: boolean, openedAt = this.breaker.openedAt(endpoint)): void {
    this.store.putCircuit({ endpoint, open, openedAt: open ? openedAt : 0 }).then(
      (effects) => this.operatorEvents(effects),
      (err: unknown) => {
        this.log.warn({ err, endpoint }, "recording the circuit state in the store failed");
      },
    );
  }

  /** Operator events the store made: their lanes woken, the feed told. */
  private operatorEvents(effects: OperatorEffects | undefined): void {
    if (!effects || effects.generated.length === 0) return;
    if (effects.endpoints.length > 0) this.notify(effects.endpoints);
    this.onOperatorEvents?.(effects);
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
      lanes: this.lanes.counts(),
      claims: { rounds: this.claimRounds, rows: this.claimedRows },
    };
  }

  activity(): SchedulerActivity {
    return { phase: this.phase, inFlight: this.inFlight, lanes: this.lanes.counts(), lastClaim: this.lastClaim };
  }

  /**
   * Stops claiming, waits up to `timeoutMs` (default: the constructor's stopTimeoutMs) for
   * attempts in flight to be recorded, then gives every unfinished lease back so another
   * process (or the next start) takes them at once. Nothing acked is lost either way: an
   * attempt cut short is simply made again.
   */
  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.pumping;
    const bound = options.timeoutMs ?? this.stopTimeoutMs;
    let boundTimer: NodeJS.Timeout | undefined;
    const inFlightAtStop = this.inFlight;
    await Promise.race([
      Promise.allSettled([...this.attemptsInFlight]),
      new Promise<void>((resolve) => {
        boundTimer = setTimeout(resolve, bound);
      }),
    ]);
    clearTimeout(boundTimer);
    if (this.inFlight > 0) {
      this.log.warn(
        { inFlight: this.inFlight, waitedMs: bound },
        "stopping with attempts still in flight; their deliveries are retried",
      );
    } else if (inFlightAtStop > 0) this.log.info({ finished: inFlightAtStop }, "attempts in flight finished");
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
    // Waiting out a store that refuses writes: the timer runs the next pump.
    if (this.storeOutage && performance.now() < this.storeOutage.until) return this.armTimer();
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
      this.phase = "idle";
    }
    if (this.pumpAgain) {
      this.pumpAgain = false;
      this.schedulePump();
    } else {
      this.armTimer();
    }
  }

  private async claimAndDispatch(): Promise<void> {
    try {
      if (this.rescanRequested || this.now() - this.lastRescanAt >= RESCAN_EVERY_MS) await this.rescan();
      for (let round = 0; round < MAX_ROUNDS && this.running; round++) {
        this.pumpAgain = false;
        const now = this.now();
        const ready = this.lanes.due(now, MAX_LANES_PER_ROUND);
        if (ready.length === 0) return;
        this.phase = "plan";
        const views = await this.laneViews(ready, now);
        const decisions = planClaims(views, {
          globalFree: this.config.delivery.concurrentDeliveries - this.inFlight,
          maxBatch: MAX_BATCH,
          settleBatch: SETTLE_BATCH,
          maxRows: MAX_ROWS_PER_ROUND,
        });
        const claiming: { lane: Lane; decision: LaneDecision & { limit: number } }[] = [];
        decisions.forEach((decision, i) => {
          const lane = ready[i] as Lane;
          if (decision.action === "send" || decision.action === "settle") claiming.push({ lane, decision });
          else if (decision.action === "wait") {
            if (decision.reason === "circuit_open") this.lanes.defer(lane, decision.until ?? now + 1_000);
            // Paused: not a lane until resumed (resume wakes it; the store claims nothing for it meanwhile).
            else if (decision.reason === "paused") this.lanes.forget(lane.endpoint);
            else this.lanes.park(lane);
          }
        });
        if (claiming.length === 0) return;
        this.phase = "claim";
        const started = performance.now();
        const claims = await this.store.claim({
          now,
          leaseOwner: this.leaseOwner,
          leaseMs: Math.ceil(this.config.delivery.timeoutMs) + 10_000,
          lanes: claiming.map(({ decision }) => ({ endpoint: decision.endpoint, limit: decision.limit })),
          // With replicas the store holds the caps over all of them (this process's are above).
          caps: {
            perEndpoint: Math.max(1, this.config.delivery.perEndpointConcurrency),
            total: this.config.delivery.concurrentDeliveries,
          },
        });
        this.storeWritable();
        let rows = 0;
        for (const claim of claims) rows += claim.deliveries.length;
        this.claimRounds++;
        this.claimedRows += rows;
        this.lastClaim = { at: now, lanes: claiming.length, rows, ms: performance.now() - started };
        // Claimed during stop(): released by stop() once this pump settles.
        if (!this.running) return;
        this.phase = "dispatch";
        claims.forEach((claim, i) => {
          const { lane, decision } = claiming[i] as (typeof claiming)[number];
          const got = claim.deliveries.length;
          // Due but not claimable (rows another replica holds locked): look again shortly, not at once.
          const nextDueAt =
            got === 0 && claim.nextDueAt !== undefined && claim.nextDueAt <= now
              ? now + BUSY_RETRY_MS
              : claim.nextDueAt;
          this.lanes.claimed(lane, got, decision.limit, nextDueAt, now);
          if (claim.deliveries.length === 0) return;
          if (decision.action === "send") this.dispatchSend(claim);
          else if (decision.action === "settle") this.dispatchSettle(claim, decision.reason);
        });
      }
      this.pumpAgain = true;
    } catch (err) {
      this.rescanRequested = true;
      if (isStoreUnavailable(err)) this.storeRefused(err);
      else {
        this.log.error({ err }, "claiming due deliveries failed; retrying shortly");
        const now = performance.now();
        this.storeOutage ??= { since: now, until: now, delayMs: CLAIM_FAILURE_BACKOFF_MS, failures: 0 };
        this.storeOutage.until = now + CLAIM_FAILURE_BACKOFF_MS;
      }
    }
  }

  /** The store refused a write: back off (doubling), saying so once per outage. */
  private storeRefused(err: unknown): void {
    const now = performance.now();
    const outage = this.storeOutage;
    if (outage === undefined) {
      this.storeOutage = {
        since: now,
        until: now + STORE_BACKOFF_FIRST_MS,
        delayMs: STORE_BACKOFF_FIRST_MS,
        failures: 1,
      };
      this.log.warn(
        { code: errorCodeOf(err), err },
        "the store refuses writes; deliveries wait (their leases kept) and are tried again with backoff",
      );
      return;
    }
    outage.failures++;
    // Many refusals in one backoff period (results of attempts that were in flight) count once.
    if (now < outage.until) return;
    outage.delayMs = Math.min(STORE_BACKOFF_MAX_MS, outage.delayMs * 2);
    outage.until = now + outage.delayMs;
  }

  private storeWritable(): void {
    const outage = this.storeOutage;
    if (outage === undefined) return;
    this.storeOutage = undefined;
    if (outage.failures > 0) {
      this.log.info(
        { refusedWrites: outage.failures, outageMs: Math.round(performance.now() - outage.since) },
        "the store takes writes again; deliveries resume",
      );
    }
  }

  /** Asks the store which lanes have pending work, a page at a time; wakes each at its due time. */
  private async rescan(): Promise<void> {
    this.phase = "rescan";
    this.rescanRequested = false;
    this.lastRescanAt = this.now();
    this.breaker.prune(this.lastRescanAt, CIRCUIT_IDLE_MS);
    // A run with no attempt for a long while is not "every attempt failing" any more.
    const idleFor = Math.max(CIRCUIT_IDLE_MS, this.config.delivery.autoDisableAfterMs);
    for (const [name, run] of this.failing)
      if (!run.disabling && this.lastRescanAt - run.since > 2 * idleFor) this.endFailingRun(name);
    let after = "";
    for (;;) {
      const page = await this.store.pendingLanes(after, RESCAN_PAGE);
      const now = this.now();
      for (const { endpoint, dueAt } of page) this.lanes.wake(endpoint, dueAt, now);
      const last = page[page.length - 1];
      if (page.length < RESCAN_PAGE || last === undefined || !this.running) break;
      after = last.endpoint;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** Each ready lane as the planner sees it: endpoint records from a short cache, circuits from the breaker. */
  private async laneViews(ready: readonly Lane[], now: number): Promise<LaneView[]> {
    const records = new Map<string, EndpointRecord | undefined>();
    const read = async (name: string) => {
      if (!records.has(name)) records.set(name, await this.endpoint(name));
    };
    await Promise.all(ready.map((lane) => read(lane.endpoint)));
    const targets = new Set<string>();
    for (const record of records.values()) if (record?.failoverTo) targets.add(record.failoverTo);
    await Promise.all([...targets].map(read));
    return laneViews(
      ready,
      (name) => records.get(name),
      (name) => this.breaker.describe(name, now),
      this.config.delivery.perEndpointConcurrency,
    );
  }

  private armTimer(): void {
    if (!this.running || this.timer || this.pumping) return;
    const now = this.now();
    let delay = this.lastRescanAt + RESCAN_EVERY_MS - now;
    const next = this.lanes.nextTimerAt();
    if (next !== undefined) delay = Math.min(delay, next - now);
    if (this.storeOutage) delay = Math.max(delay, this.storeOutage.until - performance.now());
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.pump();
      },
      Math.min(RESCAN_EVERY_MS, Math.max(1, delay)),
    );
    this.timer.unref();
  }

  // ---- attempts -----------------------------------------------------------------------------

  /** Sends a lane's claimed deliveries through the pool; each gives its slot back when recorded. */
  private dispatchSend(claim: LaneClaim): void {
    this.inFlight += claim.deliveries.length;
    this.track(
      this.send(claim).catch((err: unknown) => {
        // Unreachable by design (send settles every delivery itself); the leases would expire.
        this.log.error({ err, endpoint: claim.endpoint }, "sending claimed deliveries failed");
      }),
    );
  }

  /** Records a lane's claimed deliveries without a request: the endpoint is gone, disabled, or failing over. */
  private dispatchSettle(claim: LaneClaim, reason: SettleReason): void {
    this.track(
      (async () => {
        const endpoint = reason === "missing" ? undefined : await this.endpoint(claim.endpoint).catch(() => undefined);
        let error: string;
        let outcome: AttemptOutcome;
        if (reason === "failover" && endpoint?.failoverTo) {
          error = "circuit open";
          outcome = deadLettered(endpoint.failoverTo);
        } else if (reason === "disabled" && endpoint) {
          error = `endpoint "${claim.endpoint}" is disabled${endpoint.disabledReason ? `: ${endpoint.disabledReason}` : ""}`;
          outcome = { status: "failed" };
        } else {
          error = `endpoint "${claim.endpoint}" no longer exists`;
          outcome = { status: "failed" };
        }
        await Promise.all(
          claim.deliveries.map((delivery) =>
            this.settle(delivery, false, this.finishWithoutRequest(delivery, error, outcome)),
          ),
        );
        this.log.info(
          { endpoint: claim.endpoint, deliveries: claim.deliveries.length, reason: error },
          "deliveries not attempted",
        );
      })(),
    );
  }

  private track(work: Promise<void>): void {
    const tracked: Promise<void> = work.finally(() => this.attemptsInFlight.delete(tracked));
    this.attemptsInFlight.add(tracked);
  }

  /**
   * Reads the lane's endpoint and keys once, then runs its deliveries in worker batches.
   * Settles when every delivery's attempt is recorded (or failed to be).
   */
  private async send(claim: LaneClaim): Promise<void> {
    const startedAt = this.now();
    const name = claim.endpoint;
    let endpoint: EndpointRecord | undefined;
    let secrets: string[] | undefined;
    let problem: string | undefined;
    try {
      endpoint = await this.endpoint(name);
      if (!endpoint) problem = `endpoint "${name}" no longer exists`;
      else if (!endpoint.enabled) problem = `endpoint "${name}" is disabled`;
      else {
        // Key expiry is wall-clock time, as the Admin API that sets it reads it.
        secrets = await this.signingSecrets(name, Date.now());
        if (secrets.length === 0) problem = `endpoint "${name}" has no valid signing key`;
      }
    } catch (err) {
      // The leases are still held; they expire and the deliveries are claimed again.
      await Promise.all(claim.deliveries.map((d) => this.settle(d, true, Promise.reject(err))));
      return;
    }
    if (problem !== undefined || !endpoint || !secrets) {
      const why = problem ?? "endpoint not read";
      await Promise.all(
        claim.deliveries.map((d) => this.settle(d, true, this.finishWithoutRequest(d, why, { status: "failed" }))),
      );
      return;
    }

    const { security, delivery: deliveryConfig } = this.config;
    const recordings: Promise<void>[] = [];
    const runs: Promise<void>[] = [];
    for (let start = 0; start < claim.deliveries.length; start += MAX_BATCH) {
      const chunk = claim.deliveries.slice(start, start + MAX_BATCH);
      const batch: DeliveryBatch = {
        destinations: [{ url: endpoint.url, secrets }],
        items: chunk.map((d) => ({ destination: 0, event: d.eventBody })),
        signatureHeader: security.signatureHeader,
        timeoutMs: deliveryConfig.timeoutMs,
        requireHttps: security.requireHttps,
        allowedNetworks: [...security.allowedNetworks],
        userAgent: USER_AGENT,
      };
      for (let i = 0; i < chunk.length; i++) this.breaker.attemptStarted(name, startedAt);
      const sent: SentAttempt[] = chunk.map((delivery) => ({ delivery, endpoint: endpoint as EndpointRecord }));
      const onResult = (index: number, result: AttemptResult) => {
        const attempt = sent[index];
        if (!attempt) return;
        if (this.store.claimsSeeSubmittedResults === true) {
          // The slot is free once the request has ended: the next claim (its pump queued here,
          // ahead of the result's own commit) records this result in the claim's transaction.
          this.release(name, true);
          recordings.push(this.settle(attempt.delivery, undefined, this.record(attempt, startedAt, result)));
        } else recordings.push(this.settle(attempt.delivery, true, this.record(attempt, startedAt, result)));
      };
      runs.push(
        (async () => {
          const pool = this.pool;
          const failure = pool ? await pool.runBatch(batch, onResult) : closedPool(batch, onResult);
          // The pool itself failed (a worker died, shutdown): those attempts retry like network errors.
          if (failure && this.running)
            this.log.error({ err: failure, attempts: chunk.length }, "delivery worker failed");
        })(),
      );
    }
    await Promise.all(runs);
    await Promise.all(recordings);
  }

  /**
   * Gives a delivery's slot back once its attempt is recorded, or could not be
   * (`request` says whether it held a request slot; undefined: given back already).
   */
  private settle(delivery: ClaimedDelivery, request: boolean | undefined, recording: Promise<void>): Promise<void> {
    return recording.then(
      () => {
        if (request !== undefined) this.release(delivery.endpoint, request);
      },
      (err: unknown) => {
        // The lease is still held; it expires and the delivery is claimed again.
        this.log.error(
          { err, deliveryId: delivery.id, endpoint: delivery.endpoint },
          "delivery attempt could not be recorded",
        );
        this.breaker.trialAbandoned(delivery.endpoint);
        if (request !== undefined) this.release(delivery.endpoint, request);
      },
    );
  }

  private release(name: string, request: boolean): void {
    const lane = this.lanes.get(name);
    if (lane) {
      this.lanes.finished(lane);
      // A parked lane claims again once a quarter of its slots are free (or all are):
      // one claim (a write transaction) then refills many.
      const cap = Math.max(1, this.config.delivery.perEndpointConcurrency);
      if (lane.place === "parked" && (lane.inFlight === 0 || cap - lane.inFlight >= refillMark(cap))) {
        this.lanes.unpark(lane);
        this.schedulePump();
      }
    }
    if (!request) return;
    this.inFlight--;
    const globalCap = this.config.delivery.concurrentDeliveries;
    if (this.inFlight === 0 || globalCap - this.inFlight >= refillMark(globalCap)) this.schedulePump();
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
      this.endFailingRun(name);
      this.onEndpointDisabled?.(name);
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
  }

  /** Records the attempt, then wakes the lanes it gave work to. */
  private async complete(delivery: ClaimedDelivery, attempt: NewAttempt, outcome: AttemptOutcome): Promise<void> {
    const result = await this.recordOrPlainly(delivery, attempt, outcome);
    this.attemptCounts[outcome.status]++;
    const traffic = this.traffic;
    if (traffic && result.recorded) {
      traffic.deliveries.add([endpointLabel(delivery.endpoint, ONE_OFF_PREFIX), outcome.status]);
      if (result.eventLatencyMs !== undefined) traffic.eventLatency.observe(result.eventLatencyMs);
    }
    if (!result.recorded) {
      this.log.warn(
        { deliveryId: delivery.id, endpoint: delivery.endpoint },
        "delivery lease lost; attempt not recorded",
      );
      return;
    }
    this.operatorEvents(
      result.generated ? { generated: result.generated, endpoints: result.endpoints ?? [] } : undefined,
    );
    const now = this.now();
    if (outcome.status === "retry") this.lanes.wake(delivery.endpoint, outcome.nextAttemptAt, now);
    // The next token of a stream may be due now that this one is done.
    else if (delivery.orderKey !== "") this.lanes.wake(delivery.endpoint, now, now);
    // A slot given back before this result was recorded (claimsSeeSubmittedResults) has had
    // its pump already: the lane woken here needs the next one (or its timer armed).
    if (outcome.status === "retry" || delivery.orderKey !== "") this.schedulePump();
    if (result.failoverDelivery) {
      if (this.log.isLevelEnabled("debug")) {
        this.log.debug(
          {
            deliveryId: delivery.id,
            failoverDeliveryId: result.failoverDelivery.id,
            endpoint: result.failoverDelivery.endpoint,
          },
          "delivery failed over",
        );
      }
      this.failedOver(delivery.endpoint, result.failoverDelivery.endpoint);
      this.lanes.wake(result.failoverDelivery.endpoint, now, now);
      this.schedulePump();
    }
  }

  /**
   * Records the attempt as it was or, when the store refuses that for what it holds (any
   * error but the store being unavailable: a value a column cannot take, say), plainly: the
   * same outcome, status code and start, the reason as its error, no response body. Left
   * pending, the delivery would be sent again at every lease expiry and refused again each
   * time. What the store refuses even then goes as before (the lease expires).
   */
  private async recordOrPlainly(
    delivery: ClaimedDelivery,
    attempt: NewAttempt,
    outcome: AttemptOutcome,
  ): Promise<CompleteResult> {
    try {
      return await this.recordAttempt(delivery, attempt, outcome);
    } catch (err) {
      if (isStoreUnavailable(err) || !this.running) throw err;
      this.log.error(
        { err, deliveryId: delivery.id, endpoint: delivery.endpoint, code: "AIGW_RESULT_UNRECORDABLE" },
        "the store refused a delivery attempt's result; recording it without its details",
      );
      const why = withoutControlCharacters(String((err as Error)?.message ?? err)).slice(0, 200);
      const plain: NewAttempt = {
        startedAt: attempt.startedAt,
        statusCode: attempt.statusCode,
        latencyMs: Math.min(Math.max(0, Math.round(attempt.latencyMs)), MAX_INT_COLUMN),
        error: `the store refused this attempt's record (${why}); recorded without its details`,
        responseBody: "",
      };
      return this.recordAttempt(delivery, plain, outcome);
    }
  }

  /**
   * Records an attempt; while the store refuses writes (locked, disk full) the result waits
   * and is tried again, as long as the delivery's lease lasts. Past that it gives up: the
   * delivery is claimed again and the attempt made again (at least once), never lost.
   */
  private async recordAttempt(
    delivery: ClaimedDelivery,
    attempt: NewAttempt,
    outcome: AttemptOutcome,
  ): Promise<CompleteResult> {
    for (;;) {
      try {
        const result = await this.store.completeAttempt(delivery, attempt, outcome);
        this.storeWritable();
        return result;
      } catch (err) {
        if (!isStoreUnavailable(err) || !this.running) throw err;
        this.storeRefused(err);
        const waitMs = Math.max(1, (this.storeOutage?.until ?? 0) - performance.now());
        if (this.now() + waitMs >= delivery.leaseUntil) throw err;
        await new Promise((resolve) => setTimeout(resolve, waitMs));
      }
    }
  }

  /** One log line per failover stretch of an endpoint (not per delivery), with a count when it ends. */
  private failedOver(from: string, to: string): void {
    const key = `${from}\u0000${to}`;
    const count = this.failovers.get(key);
    if (count === undefined) {
      this.log.info({ endpoint: from, failoverTo: to }, "delivery failed over");
      this.failovers.set(key, 1);
    } else this.failovers.set(key, count + 1);
  }

  /**
   * Only failures that say the endpoint is unwell count towards opening its circuit:
   * retryable statuses, timeouts and network errors. A 4xx is the receiver answering.
   */
  private trackCircuit(name: string, result: AttemptResult, now: number): void {
    const verdict = classifyAttempt(result, this.config.retry);
    if (verdict === "delivered") this.endFailingRun(name);
    // A request never sent (refused) says nothing of the receiver.
    else if (result.statusCode > 0 || !result.refused) this.trackFailing(name, result, now);
    if (verdict === "delivered") {
      this.recordHealthy(name);
    } else if (verdict === "retryable" && this.breaker.recordFailure(name, now) && !this.loggedOpen.has(name)) {
      // Logged (and shared) when it opens, not again each time a failed trial re-opens it.
      this.loggedOpen.add(name);
      this.shareCircuit(name, true);
      this.log.warn(
        { endpoint: name, cooldownMs: this.config.delivery.circuitBreakerCooldownMs },
        "endpoint circuit opened after consecutive failures",
      );
    } else if (verdict !== "retryable") {
      // A definite answer (a 4xx, 410) says the receiver is up, so it closes the circuit
      // like a success; a request never sent (refused) says nothing, and frees the trial.
      if (result.statusCode > 0) this.recordHealthy(name);
      else this.breaker.trialAbandoned(name);
    }
  }

  /**
   * Auto-disable (delivery.auto_disable_after_ms): an endpoint every attempt of which has
   * failed for that long, with at least two attempts, is disabled, and endpoint.disabled
   * made (by the store, once over replicas). A success anywhere in between starts over.
   */
  private trackFailing(name: string, result: AttemptResult, now: number): void {
    const windowMs = this.config.delivery.autoDisableAfterMs;
    if (windowMs <= 0) return;
    let run = this.failing.get(name);
    if (!run) {
      const started: FailingRun = { since: now, attempts: 0, disabling: false };
      run = started;
      this.failing.set(name, started);
      // Recorded in the store: a restart (or another replica) goes on with this run, and a
      // run recorded before (by another replica) is the one that counts.
      this.runWrite(name, async () => {
        const since = await this.store.startFailingRun(name, now);
        if (this.failing.get(name) === started && since < started.since) started.since = since;
      });
    }
    run.attempts++;
    if (run.disabling || run.attempts < 2 || now - run.since < windowMs) return;
    run.disabling = true;
    const failedFor = now - run.since;
    const why = {
      detail: failingDetail(windowMs, run.attempts),
      statusCode: result.statusCode,
      lastError: describeAttempt(result),
      // Wall-clock time for people and receivers.
      failingSince: Date.now() - failedFor,
      failedAttempts: run.attempts,
      // The store decides: a run another process ended (a success there) disables nothing.
      runStartedAt: run.since,
    };
    const disabling = run;
    // After this run's own start is recorded (the same queue of writes).
    this.runWrite(name, async () => {
      let effects: AutoDisableEffects;
      try {
        effects = await this.store.autoDisableEndpoint(name, why);
      } catch (err) {
        disabling.disabling = false;
        this.log.error({ err, endpoint: name }, "disabling a failing endpoint failed; tried again at its next failure");
        return;
      }
      if (effects.runInStore !== undefined) {
        this.runEndedElsewhere(name, disabling, effects.runInStore);
        return;
      }
      this.endFailingRun(name);
      this.endpoints.delete(name);
      this.log.warn(
        { endpoint: name, failedForMs: failedFor, attempts: why.failedAttempts, code: "AIGW_ENDPOINT_AUTO_DISABLED" },
        "every attempt failed for delivery.auto_disable_after_ms; endpoint disabled",
      );
      this.onEndpointDisabled?.(name);
      this.operatorEvents(effects);
      // Its pending deliveries now fail without an attempt.
      this.notify([name]);
    });
  }

  /**
   * The store's run of failures is not the one this process counted (another replica's
   * success ended it, and maybe a new one began): nothing disabled; this process goes on
   * from the store's run, or from none.
   */
  private runEndedElsewhere(name: string, run: FailingRun, runInStore: number): void {
    if (this.failing.get(name) === run) {
      if (runInStore === 0) this.failing.delete(name);
      else Object.assign(run, { since: runInStore, attempts: 1, disabling: false });
    }
    this.log.info(
      { endpoint: name, runInStore },
      "not disabled: the run of failed attempts ended elsewhere (a success on another replica)",
    );
  }

  /** The endpoint's run of failures is over, here and in the store (when this process had one). */
  private endFailingRun(name: string): void {
    if (!this.failing.delete(name)) return;
    this.runWrite(name, () => this.store.endFailingRun(name));
  }

  /**
   * Writes of an endpoint's failing run, one after another in the order made (PostgreSQL's
   * pooled connections would not keep a start and the end that follows it in order).
   */
  private runWrite(name: string, write: () => Promise<void>): void {
    const previous = this.runWrites.get(name) ?? Promise.resolve();
    const next = previous.then(write).catch((err: unknown) => {
      this.log.warn({ err, endpoint: name }, "recording a run of failed attempts in the store failed");
    });
    this.runWrites.set(name, next);
    void next.then(() => {
      if (this.runWrites.get(name) === next) this.runWrites.delete(name);
    });
  }

  private recordHealthy(name: string): void {
    if (!this.breaker.recordSuccess(name)) return;
    this.shareCircuit(name, false);
    if (!this.loggedOpen.delete(name)) return;
    let failedOver = 0;
    for (const [key, count] of this.failovers) {
      if (key.startsWith(`${name}\u0000`)) {
        failedOver += count;
        this.failovers.delete(key);
      }
    }
    this.log.info({ endpoint: name, failedOver }, "endpoint circuit closed; deliveries resume");
  }

  private observeLatency(ms: number): void {
    let i = LATENCY_BUCKETS_MS.findIndex((bound) => ms <= bound);
    if (i < 0) i = LATENCY_BUCKETS_MS.length;
    this.latencyCounts[i] = (this.latencyCounts[i] ?? 0) + 1;
    this.latencySumMs += ms;
    this.latencyCount++;
  }

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
