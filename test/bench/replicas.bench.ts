// Signed durable deliveries per second by store and replica count, as users run them: real
// control-plane processes (the built CLI) drain a backlog already in the store (SQLite; one
// PostgreSQL replica; two replicas on one database) to a receiver process. Every delivery
// is signed, and recorded in the store before the next state is claimable. The rate runs
// from the first webhook's arrival to the last, so start-up is not in it; CPU per delivery
// is read from /proc for the control planes and for the PostgreSQL server, which shows
// what bounds the figures on a small machine.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import { newEventId, newRequestId } from "../../common/ids.js";
import { openPostgresStore } from "../../control-plane/store/postgres/store.js";
import { openSqliteStore } from "../../control-plane/store/sqlite/store.js";
import type { Store } from "../../control-plane/store/store.js";
import { type Event, EventSchema } from "../../gen/aigw/v1/events_pb.js";
import { createTestDatabase, postgresReachable, TEST_ENCRYPTION_KEY } from "../support/store.js";
import { aigw, type Child, node, port, RECEIVER_SOURCE } from "./bench-processes.js";
import type { BenchRow } from "./types.js";

const EVENTS = Number(process.env.AIGW_BENCH_REPLICA_DELIVERIES ?? 30_000);
const ENDPOINTS = 4;
const SECRET = `whsec_${Buffer.from("bench-replicas-secret-0123456789").toString("base64")}`;
const CONCURRENT = 64;
const PER_ENDPOINT = 32;
const TIME_LIMIT_MS = 300_000;
/** Which runs: any of `sqlite,pg1,pg2` (default all); a run left out reports 0. */
const PARTS = new Set((process.env.AIGW_BENCH_REPLICA_PARTS ?? "sqlite,pg1,pg2").split(",").map((p) => p.trim()));
const CP_NODE_OPTIONS = (process.env.AIGW_BENCH_CP_NODE_OPTIONS ?? "").split(" ").filter(Boolean);
const SKIPPED: Outcome = { perSecond: 0, aigwCpuMicros: 0, postgresCpuMicros: 0 };

const progress = (text: string) => process.stderr.write(`  ${text}\n`);

function completion(): Event {
  return create(EventSchema, {
    id: newEventId(),
    orgId: "org_bench",
    app: "bench",
    provider: "openai",
    time: timestampNow(),
    payload: {
      case: "completion",
      value: { requestId: newRequestId(), model: "gpt-4", tokensUsed: 150, promptTokens: 100, completionTokens: 50 },
    },
  });
}

/** user+system CPU (µs) of a process, all its threads; 0 when it is gone. */
function processCpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / 100;
  } catch {
    return 0;
  }
}

/**
 * CPU (µs) of the PostgreSQL server processes serving `database` (its backends), and of the
 * server's shared background processes (WAL writer, checkpointer…), which other databases
 * on the same server share: on a quiet server those are this benchmark's too.
 */
async function postgresCpuMicros(url: string): Promise<Map<number, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE (datname = current_database() OR backend_type <> 'client backend') AND pid <> pg_backend_pid()",
    );
    return new Map(rows.map((r) => [r.pid, processCpuMicros(r.pid)]));
  } finally {
    await client.end();
  }
}

const cpuSpent = (before: Map<number, number>, after: Map<number, number>): number => {
  let total = 0;
  for (const [pid, cpu] of after) total += cpu - (before.get(pid) ?? 0);
  return total;
};

interface Outcome {
  perSecond: number;
  aigwCpuMicros: number;
  postgresCpuMicros: number;
}

async function drain(
  backend: "sqlite" | "postgres",
  replicas: number,
  dir: string,
  receiverUrl: string,
  receiverBase: string,
): Promise<Outcome> {
  const label = `${backend}, ${replicas} replica${replicas > 1 ? "s" : ""}`;
  const db = backend === "postgres" ? await createTestDatabase() : undefined;
  const location = db ? db.url : `sqlite:${join(dir, `${replicas}.db`)}`;
  const children: Child[] = [];
  try {
    progress(`${label}: storing ${EVENTS} events`);
    const store: Store = db
      ? await openPostgresStore(db.url, { encryptionKey: TEST_ENCRYPTION_KEY })
      : await openSqliteStore(join(dir, `${replicas}.db`), { encryptionKey: TEST_ENCRYPTION_KEY });
    const names = Array.from({ length: ENDPOINTS }, (_, i) => `bench${i}`);
    for (const name of names) {
      await store.upsertEndpoint({ name, url: receiverUrl, enabled: true, eventTypes: [], failoverTo: "" }, SECRET);
    }
    let n = 0;
    for (let done = 0; done < EVENTS; done += 1_000) {
      await store.ingest(Array.from({ length: Math.min(1_000, EVENTS - done) }, completion), () => [
        names[n++ % ENDPOINTS] as string,
      ]);
    }
    await store.close();

    const configPath = join(dir, `config-${backend}-${replicas}.yaml`);
    writeFileSync(
      configPath,
      `webhooks:
${names.map((name) => `  ${name}:\n    url: "${receiverUrl}"\n    secret: "${SECRET}"\n`).join("")}events:
  subscribe: ["completion"]
security:
  require_https: false
  allowed_networks: ["127.0.0.0/8"]
delivery:
  timeout_ms: 10000
  concurrent_deliveries: ${CONCURRENT}
  per_endpoint_concurrency: ${PER_ENDPOINT}
storage:
  encryption_key: "${TEST_ENCRYPTION_KEY}"
`,
    );
    const count = async () => ((await (await fetch(`${receiverBase}/count`)).json()) as { count: number }).count;
    const before = await count();
    const planes: Child[] = [];
    for (let i = 0; i < replicas; i++) {
      const cp = aigw(
        [
          ...CP_NODE_OPTIONS,
          "control-plane",
          "--config",
          configPath,
          "--store",
          location,
          "--grpc",
          "127.0.0.1:0",
          "--http",
          "127.0.0.1:0",
        ],
        "warn",
      );
      children.push(cp);
      planes.push(cp);
    }
    const deadline = Date.now() + TIME_LIMIT_MS;
    const until = async (what: string, done: (delivered: number) => boolean, everyMs: number) => {
      for (;;) {
        const delivered = (await count()) - before;
        if (done(delivered)) return;
        if (Date.now() > deadline)
          throw new Error(`replica bench (${label}): ${what}; ${delivered} of ${EVENTS} arrived`);
        await new Promise((r) => setTimeout(r, everyMs));
      }
    };
    // CPU from the first delivery on: start-up (migrations, JIT of the config path) is not delivery.
    await until("no delivery arrived", (d) => d > 0, 5);
    const cpu = () => planes.reduce((sum, p) => sum + processCpuMicros(p.child.pid ?? 0), 0);
    const aigwBefore = cpu();
    const pgBefore = db ? await postgresCpuMicros(db.url) : new Map<number, number>();
    progress(`${label}: draining`);
    await until("the backlog did not drain in time", (d) => d >= EVENTS, 100);
    const aigwCpu = cpu() - aigwBefore;
    const pgCpu = db ? cpuSpent(pgBefore, await postgresCpuMicros(db.url)) : 0;
    const arrivals = Object.values((await (await fetch(`${receiverBase}/arrivals`)).json()) as Record<string, number>)
      .sort((a, b) => a - b)
      .slice(-EVENTS);
    const seconds = ((arrivals[arrivals.length - 1] ?? 0) - (arrivals[0] ?? 0)) / 1000;
    const sample = (await (await fetch(`${receiverBase}/sample`)).json()) as {
      body: string;
      headers: Record<string, string>;
    };
    new Webhook(SECRET).verify(sample.body, sample.headers); // throws if what was measured was not signed
    const perSecond = EVENTS / Math.max(seconds, 0.001);
    progress(`${label}: ${perSecond.toFixed(0)} deliveries/s`);
    return {
      perSecond,
      aigwCpuMicros: aigwCpu / EVENTS,
      postgresCpuMicros: db ? pgCpu / EVENTS : 0,
    };
  } finally {
    for (const c of children) await c.stop();
    await db?.drop();
  }
}

export async function benchReplicas(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), "aigw-bench-replicas-"));
  const receiver = node(RECEIVER_SOURCE);
  try {
    const base = `http://127.0.0.1:${await port(receiver)}`;
    const url = `${base}/hooks`;
    const sqlite = PARTS.has("sqlite") ? await drain("sqlite", 1, dir, url, base) : SKIPPED;
    const rows: BenchRow[] = [
      {
        name: `signed durable deliveries, SQLite, one control plane (${EVENTS} in the store, ${ENDPOINTS} endpoints, c=${CONCURRENT})`,
        value: sqlite.perSecond,
        unit: "deliveries/s",
      },
      { name: "  control-plane CPU per delivery", value: sqlite.aigwCpuMicros, unit: "µs" },
    ];
    if (!(await postgresReachable())) {
      rows.push({
        name: "PostgreSQL replicas: skipped, no PostgreSQL reachable (set AIGW_TEST_PG_URL)",
        value: 0,
        unit: "",
      });
      return rows;
    }
    const one = PARTS.has("pg1") ? await drain("postgres", 1, dir, url, base) : SKIPPED;
    const two = PARTS.has("pg2") ? await drain("postgres", 2, dir, url, base) : SKIPPED;
    rows.push(
      {
        name: "signed durable deliveries, PostgreSQL, one control plane",
        value: one.perSecond,
        unit: "deliveries/s",
        baseline: "SQLite, one control plane",
        baselineValue: sqlite.perSecond,
        ratio: one.perSecond / sqlite.perSecond,
        target: "≥ 3,000/s",
      },
      { name: "  control-plane CPU per delivery", value: one.aigwCpuMicros, unit: "µs" },
      {
        name: "  PostgreSQL server CPU per delivery (its backends and background processes)",
        value: one.postgresCpuMicros,
        unit: "µs",
      },
      {
        name: "signed durable deliveries, PostgreSQL, two control planes on one database",
        value: two.perSecond,
        unit: "deliveries/s",
        baseline: "PostgreSQL, one control plane",
        baselineValue: one.perSecond,
        ratio: two.perSecond / one.perSecond,
      },
      { name: "  control-plane CPU per delivery (both)", value: two.aigwCpuMicros, unit: "µs" },
      { name: "  PostgreSQL server CPU per delivery", value: two.postgresCpuMicros, unit: "µs" },
    );
    return rows;
  } finally {
    await receiver.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
