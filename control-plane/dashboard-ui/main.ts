import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  DeliveryStatus,
  type GetSeriesResponse,
  ListBudgetsResponseSchema,
  SeriesBreakdown,
  SeriesMetric,
} from "../../gen/aigw/v1/admin_pb.js";
import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import { admin, feed, TOKEN_KEY } from "./client.js";
import { type ChartSeries, formatValue, TimeChart } from "./charts.js";

// The control plane's dashboard: charts from GetSeries (rollups in the store), tables from
// GetStats, ListQueues, ListBudgets, ListSidecars and ListDeliveries, the live feed from
// Feed.Watch, and actions (replay, test event, key rotation) through the Admin API.

const $ = <T extends HTMLElement = HTMLElement>(selector: string): T => {
  const el = document.querySelector<T>(selector);
  if (!el) throw new Error(`dashboard: ${selector} missing`);
  return el;
};

const WINDOWS = ["15m", "1h", "24h", "7d"] as const;
type Window = (typeof WINDOWS)[number];
const WINDOW_SECONDS: Record<Window, number> = { "15m": 900, "1h": 3600, "24h": 86_400, "7d": 604_800 };
let windowName: Window = (WINDOWS as readonly string[]).includes(location.hash.slice(1))
  ? (location.hash.slice(1) as Window)
  : "1h";

const esc = (s: unknown): string => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function showError(err: unknown): void {
  const message = err instanceof ConnectError ? err.rawMessage : err instanceof Error ? err.message : String(err);
  if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
    $("#auth").style.display = "block";
  }
  $("#error").textContent = message;
}

function clearError(): void {
  $("#error").textContent = "";
}

// ---- charts ------------------------------------------------------------------------------

const charts = {
  deliveries: new TimeChart($("#chart-deliveries"), "/s"),
  attemptLatency: new TimeChart($("#chart-attempt-latency"), "ms"),
  eventLatency: new TimeChart($("#chart-event-latency"), "ms"),
  events: new TimeChart($("#chart-events"), ""),
  tokensModel: new TimeChart($("#chart-tokens-model"), "", 150),
  tokensOrg: new TimeChart($("#chart-tokens-org"), "", 150),
  costModel: new TimeChart($("#chart-cost-model"), "$", 150),
  costOrg: new TimeChart($("#chart-cost-org"), "$", 150),
};

function times(r: GetSeriesResponse): number[] {
  const start = r.startTime ? timestampMs(r.startTime) / 1000 : 0;
  return Array.from({ length: r.bucketCount }, (_, i) => start + i * r.bucketSeconds);
}

function series(metric: SeriesMetric, breakdown: SeriesBreakdown): Promise<GetSeriesResponse> {
  return admin.getSeries({ metric, breakdown, window: windowName });
}

/** Percentile lines of one series; buckets without a sample are gaps, not zeros. */
function percentiles(r: GetSeriesResponse, key: string | undefined, prefix = ""): ChartSeries[] {
  const s = key === undefined ? r.series[0] : r.series.find((x) => x.key === key);
  if (!s) return [];
  const gap = (values: number[]) => values.map((v, i) => (Number(s.counts[i] ?? 0) > 0 ? v : null));
  return [
    { label: `${prefix}p50`, values: gap(s.p50) },
    { label: `${prefix}p95`, values: gap(s.p95) },
    { label: `${prefix}p99`, values: gap(s.p99) },
  ];
}

let latencyEndpoint = "";

/** What an org's token may not read (operator-only RPCs) shows as empty, not as an error. */
async function allowed<T>(call: Promise<T>, empty: T): Promise<T> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.PermissionDenied) return empty;
    throw err;
  }
}

let operator = true;

async function refreshCharts(): Promise<void> {
  if (!operator) return;
  const [deliveries, attemptLatency, eventLatency, events, tokensModel, tokensOrg, costModel, costOrg] =
    await Promise.all([
      series(SeriesMetric.DELIVERIES, SeriesBreakdown.OUTCOME),
      series(SeriesMetric.ATTEMPT_LATENCY, SeriesBreakdown.ENDPOINT),
      series(SeriesMetric.EVENT_LATENCY, SeriesBreakdown.UNSPECIFIED),
      series(SeriesMetric.EVENTS, SeriesBreakdown.EVENT_TYPE),
      series(SeriesMetric.TOKENS, SeriesBreakdown.MODEL),
      series(SeriesMetric.TOKENS, SeriesBreakdown.ORG),
      series(SeriesMetric.COST, SeriesBreakdown.MODEL),
      series(SeriesMetric.COST, SeriesBreakdown.ORG),
    ]);
  const perSecond = (r: GetSeriesResponse): ChartSeries[] =>
    r.series.map((s) => ({ label: s.key, values: s.values.map((v) => v / r.bucketSeconds) }));
  const plain = (r: GetSeriesResponse, name: (key: string) => string = (k) => k): ChartSeries[] =>
    r.series.map((s) => ({ label: name(s.key), values: s.values }));
  charts.deliveries.setData(times(deliveries), perSecond(deliveries));
  // Attempt latency: one endpoint at a time (the busiest unless one is chosen).
  const endpoints = attemptLatency.series.map((s) => s.key);
  const select = $<HTMLSelectElement>("#latency-endpoint");
  const options = endpoints.join("\u0000");
  if (select.dataset.options !== options) {
    select.dataset.options = options;
    select.innerHTML = endpoints.map((e) => `<option>${esc(e)}</option>`).join("");
  }
  if (!endpoints.includes(latencyEndpoint)) latencyEndpoint = endpoints[0] ?? "";
  select.value = latencyEndpoint;
  charts.attemptLatency.setData(times(attemptLatency), percentiles(attemptLatency, latencyEndpoint));
  charts.eventLatency.setData(times(eventLatency), percentiles(eventLatency, undefined));
  charts.events.setData(times(events), plain(events));
  const org = (k: string) => k || "(no org)";
  charts.tokensModel.setData(times(tokensModel), plain(tokensModel));
  charts.tokensOrg.setData(times(tokensOrg), plain(tokensOrg, org));
  charts.costModel.setData(times(costModel), plain(costModel));
  charts.costOrg.setData(times(costOrg), plain(costOrg, org));
  const totals = (r: GetSeriesResponse) => r.series.reduce((a, s) => a + s.total, 0);
  $("#total-deliveries").textContent = `${formatValue(totals(deliveries), "")} attempts`;
  $("#total-events").textContent = `${formatValue(totals(events), "")} events`;
  $("#total-tokens").textContent = `${formatValue(totals(tokensModel), "")} tokens`;
  $("#total-cost").textContent = formatValue(totals(costModel), "$");
  const limited = [deliveries, events].find((r) => r.retentionLimited);
  $("#retention").textContent =
    limited?.retainedSince !== undefined
      ? `History before ${new Date(timestampMs(limited.retainedSince)).toLocaleString()} is past delivery.retention_hours and was purged: the window starts empty there.`
      : "";
}

// ---- tables ------------------------------------------------------------------------------

function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}

async function refreshTables(): Promise<void> {
  const [stats, queues, budgets, sidecars, deliveries, endpoints] = await Promise.all([
    admin.getStats({ windowSeconds: WINDOW_SECONDS[windowName] }),
    admin.listQueues({}),
    allowed(admin.listBudgets({}), create(ListBudgetsResponseSchema)),
    admin.listSidecars({}),
    admin.listDeliveries({ pageSize: 15 }),
    admin.listEndpoints({}),
  ]);
  const endpointOf = new Map(endpoints.endpoints.map((e) => [e.name, e]));
  const queueOf = new Map(queues.queues.map((q) => [q.endpoint, q]));
  $("#stats tbody").innerHTML = stats.endpoints
    .map((e) => {
      const q = queueOf.get(e.endpoint);
      const finished = Number(e.delivered + e.failed + e.deadLettered);
      return `<tr><td>${esc(e.endpoint)}</td><td class="num">${finished === 0 ? "–" : `${(e.successRate * 100).toFixed(1)}%`}</td>
        <td class="num">${e.delivered}</td><td class="num">${e.failed}</td><td class="num">${e.deadLettered}</td>
        <td class="num">${e.latencyP50Ms}</td><td class="num">${e.latencyP99Ms}</td>
        <td class="${e.circuitOpen ? "bad" : "ok"}">${e.circuitOpen ? "open" : "closed"}</td>
        <td class="num">${q?.pending ?? 0n}</td><td>${endpointActions(endpointOf.get(e.endpoint))}</td></tr>`;
    })
    .join("");
  // Failure reasons over every endpoint, most frequent first.
  const reasons = stats.endpoints
    .flatMap((e) => e.failureReasons.map((r) => ({ endpoint: e.endpoint, reason: r.reason, count: Number(r.count) })))
    .sort((a, b) => b.count - a.count)
    .slice(0, 10);
  const most = reasons[0]?.count ?? 1;
  $("#failures tbody").innerHTML =
    reasons
      .map(
        (r, i) => `<tr><td class="num">${i + 1}</td><td>${esc(r.reason)}</td><td>${esc(r.endpoint)}</td>
        <td class="num">${r.count}</td><td class="barcell"><span class="bar bad" style="width:${(100 * r.count) / most}%"></span></td></tr>`,
      )
      .join("") || `<tr><td colspan="5" class="muted">no failed attempts in this window</td></tr>`;
  $("#queues tbody").innerHTML = queues.queues
    .map(
      (
        q,
      ) => `<tr><td>${esc(q.endpoint)}</td><td class="num">${q.pending}</td><td class="num ${q.deadLettered > 0n ? "bad" : ""}">${q.deadLettered}</td>
      <td>${q.oldestPendingTime ? ago(timestampMs(q.oldestPendingTime)) : "–"}</td>
      <td>${q.deadLettered > 0n ? `<button class="replay-dead" data-endpoint="${esc(q.endpoint)}">Replay dead letters</button>` : ""}</td></tr>`,
    )
    .join("");
  $("#budgets tbody").innerHTML =
    budgets.budgets
      .map((b) => {
        const share = b.budgetLimit > 0 ? b.currentSpend / b.budgetLimit : 0;
        const ticks = b.thresholds
          .map(
            (t) =>
              `<span class="tick ${b.firedThresholds.includes(t) ? "fired" : ""}" style="left:${Math.min(t, 100)}%" title="${t}%${b.firedThresholds.includes(t) ? " (fired)" : ""}"></span>`,
          )
          .join("");
        return `<tr><td>${esc(b.orgId)}</td><td>${esc(b.limitType)} ${esc(b.period)}</td>
        <td class="num">${formatValue(b.currentSpend, "$")} / ${formatValue(b.budgetLimit, "$")}</td>
        <td class="progress"><span class="bar ${share >= 1 ? "bad" : share >= 0.8 ? "warn" : "ok"}" style="width:${Math.min(100, share * 100)}%"></span>${ticks}</td>
        <td>${b.thresholds.map((t) => `${t}%${b.firedThresholds.includes(t) ? " ✓" : ""}`).join(" · ")}${b.enforce ? " · enforced" : ""}</td></tr>`;
      })
      .join("") || `<tr><td colspan="5" class="muted">no budgets</td></tr>`;
  $("#sidecars tbody").innerHTML =
    sidecars.sidecars
      .map(
        (
          s,
        ) => `<tr><td>${esc(s.orgId) || '<span class="muted">(none)</span>'}</td><td>${esc(s.app)}</td><td>${esc(s.version)}</td>
        <td class="num ${s.spoolBatches > 0n ? "warn" : ""}">${s.spoolBatches}</td><td class="num">${formatValue(Number(s.spoolBytes), "")} B</td>
        <td>${s.lastSeenTime ? ago(timestampMs(s.lastSeenTime)) : ""} ago</td><td><code>${esc(s.sidecarId)}</code></td></tr>`,
      )
      .join("") || `<tr><td colspan="7" class="muted">no sidecar connected</td></tr>`;
  $("#deliveries tbody").innerHTML = deliveries.deliveries
    .map((d) => {
      const status = DeliveryStatus[d.status]?.toLowerCase() ?? "";
      return `<tr><td><code>${esc(d.id)}</code></td><td>${esc(d.endpoint)}</td><td>${esc(eventTypeLabel(d.eventType))}</td>
      <td class="status-${esc(status)}">${esc(status)}</td><td class="num">${d.attemptCount}</td><td>${esc(d.lastError)}</td>
      <td>${d.originDeliveryId ? `<span class="muted">replay of ${esc(d.originDeliveryId.slice(-6))}</span>` : ""}</td>
      <td><button class="replay" data-id="${esc(d.id)}">Replay</button></td></tr>`;
    })
    .join("");
  const names = stats.endpoints.map((e) => e.endpoint);
  for (const id of ["#test-endpoint", "#rotate-endpoint"]) {
    const sel = $<HTMLSelectElement>(id);
    const joined = names.join("\u0000");
    if (sel.dataset.options === joined) continue;
    const keep = sel.value;
    sel.dataset.options = joined;
    sel.innerHTML = `${id === "#test-endpoint" ? '<option value="">every subscribed endpoint</option>' : ""}${names.map((n) => `<option>${esc(n)}</option>`).join("")}`;
    if (keep) sel.value = keep;
  }
}

/** Pause/resume and disable/enable buttons for an endpoint, as its state allows. */
function endpointActions(e: { name: string; enabled: boolean; paused: boolean } | undefined): string {
  if (!e) return "";
  const name = esc(e.name);
  const state = !e.enabled ? '<span class="bad">disabled</span>' : e.paused ? '<span class="warn">paused</span>' : "";
  const pause = e.paused
    ? `<button class="endpoint-action" data-action="resume" data-endpoint="${name}">Resume</button>`
    : `<button class="endpoint-action" data-action="pause" data-endpoint="${name}">Pause</button>`;
  const disable = e.enabled
    ? `<button class="endpoint-action" data-action="disable" data-endpoint="${name}">Disable</button>`
    : `<button class="endpoint-action" data-action="enable" data-endpoint="${name}">Enable</button>`;
  return `${state} ${pause} ${disable}`;
}

function eventTypeLabel(t: EventType): string {
  return (EventType[t] ?? "").toLowerCase();
}

// ---- refresh loop ------------------------------------------------------------------------

let refreshing: Promise<void> | undefined;
let again = false;

/** Refreshes everything; calls while one runs fold into one more run after it. */
function refresh(): void {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = Promise.all([refreshCharts(), refreshTables()])
    .then(clearError, showError)
    .finally(() => {
      refreshing = undefined;
      $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (again) {
        again = false;
        refresh();
      }
    });
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
/** After live events: at most one refresh a second. */
function refreshSoon(): void {
  if (refreshTimer !== undefined) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = undefined;
    refresh();
  }, 1000);
}

// ---- live feed ---------------------------------------------------------------------------

function eventSummary(e: Event): string {
  const p = e.payload;
  switch (p.case) {
    case "completion":
      return `${p.value.model} · ${p.value.tokensUsed} tokens · $${p.value.costUsd.toFixed(4)} · ${p.value.latencyMs} ms`;
    case "error":
      return `${p.value.errorType} ${p.value.statusCode || ""} · ${p.value.severity} · ${p.value.errorMessage.slice(0, 60)}`;
    case "streaming":
      return `#${p.value.tokenIndex} ${JSON.stringify(p.value.content.slice(0, 30))}${p.value.finishReason ? ` (${p.value.finishReason})` : ""}`;
    case "budget":
      return `${p.value.limitType} ${p.value.usagePercent}% · $${p.value.currentSpend.toFixed(2)} of $${p.value.budgetLimit.toFixed(2)}`;
    case "rateLimit":
      return `${p.value.source} ${p.value.limitType} · ${p.value.remaining}/${p.value.limit} left`;
    default:
      return "";
  }
}

function addEvent(e: Event): void {
  const row = document.createElement("tr");
  const time = e.time ? new Date(timestampMs(e.time)).toLocaleTimeString() : "";
  const kind = e.payload.case === "rateLimit" ? "rate_limit" : (e.payload.case ?? "?");
  row.innerHTML = `<td>${esc(time)}</td><td>${esc(kind)}</td><td>${esc(e.orgId)} / ${esc(e.app)}</td><td>${esc(eventSummary(e))}</td>`;
  const body = $<HTMLTableSectionElement>("#feed tbody");
  body.prepend(row);
  while (body.rows.length > 50) body.deleteRow(-1);
}

let cursor = "";
let backoffMs = 500;

/** Feed.Watch as a server stream; resumes after its last cursor when cut off. */
async function watch(): Promise<void> {
  for (;;) {
    try {
      // The first response (no event) is the stream's start: live from there on.
      for await (const res of feed.watch({ cursor })) {
        $("#live").className = "live on";
        backoffMs = 500;
        if (res.cursor) cursor = res.cursor;
        if (res.event) {
          addEvent(res.event);
          refreshSoon();
        }
      }
    } catch (err) {
      showError(err);
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
        $("#live").className = "live off";
        return;
      }
    }
    $("#live").className = "live off";
    await new Promise((resolve) => setTimeout(resolve, backoffMs));
    backoffMs = Math.min(backoffMs * 2, 10_000);
  }
}

// ---- actions -----------------------------------------------------------------------------

function actionResult(text: string, bad = false): void {
  const el = $("#action-result");
  el.textContent = text;
  el.className = bad ? "bad" : "ok";
}

async function act(what: string, fn: () => Promise<string>): Promise<void> {
  try {
    actionResult(await fn());
    refresh();
  } catch (err) {
    actionResult(`${what}: ${err instanceof ConnectError ? err.rawMessage : String(err)}`, true);
  }
}

document.addEventListener("click", (ev) => {
  const target = ev.target as HTMLElement;
  if (target.matches("button.replay")) {
    const id = target.dataset.id ?? "";
    void act("replay", async () => {
      const r = await admin.replayDelivery({ id });
      return `replayed ${id} as ${r.delivery?.id ?? "?"}`;
    });
  } else if (target.matches("button.replay-dead")) {
    const endpoint = target.dataset.endpoint ?? "";
    void act("replay dead letters", async () => {
      const r = await admin.replayDeliveries({ endpoint });
      return `replayed ${r.replayed} dead-lettered deliveries of ${endpoint}`;
    });
  } else if (target.matches("button.endpoint-action")) {
    const name = target.dataset.endpoint ?? "";
    const action = target.dataset.action;
    void act(`${action} ${name}`, async () => {
      if (action === "pause")
        return `paused ${name}: ${(await admin.pauseEndpoint({ name })).heldDeliveries} deliveries held`;
      if (action === "resume")
        return `resumed ${name}: ${(await admin.resumeEndpoint({ name })).releasedDeliveries} deliveries released`;
      if (action === "disable") {
        const r = await admin.disableEndpoint({ name, reason: "disabled from the dashboard" });
        return `disabled ${name}: ${r.failedDeliveries} pending deliveries fail without an attempt`;
      }
      await admin.enableEndpoint({ name });
      return `enabled ${name}`;
    });
  } else if (target.matches(".windows button")) {
    windowName = target.dataset.window as Window;
    location.hash = windowName;
    markWindow();
    refresh();
  }
});

$("#test-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const endpoint = $<HTMLSelectElement>("#test-endpoint").value;
  const eventType = Number($<HTMLSelectElement>("#test-type").value) as EventType;
  void act("test event", async () => {
    const r = await admin.sendTestEvent({ endpoint, eventType });
    return `test event ${r.event?.id ?? ""} sent: ${r.deliveryIds.length} ${r.deliveryIds.length === 1 ? "delivery" : "deliveries"}`;
  });
});

$("#rotate-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const endpoint = $<HTMLSelectElement>("#rotate-endpoint").value;
  if (!confirm(`Rotate the signing key of ${endpoint}? The current keys keep signing for 24 hours.`)) return;
  void act("rotate key", async () => {
    const r = await admin.rotateSigningKey({ endpoint });
    $("#secret").textContent = r.secret;
    $("#secret-box").style.display = "block";
    const until = r.previousKeysExpireTime ? new Date(timestampMs(r.previousKeysExpireTime)).toLocaleString() : "";
    return `new signing key for ${endpoint}; previous keys sign until ${until}`;
  });
});

$("#replay-window-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const since = Date.now() - WINDOW_SECONDS[windowName] * 1000;
  void act("replay window", async () => {
    const r = await admin.replayDeliveries({ since: timestampFromMs(since) });
    return `replayed ${r.replayed} failed and dead-lettered deliveries of the last ${windowName}`;
  });
});

$("#secret-done").addEventListener("click", () => {
  $("#secret").textContent = "";
  $("#secret-box").style.display = "none";
});

$<HTMLSelectElement>("#latency-endpoint").addEventListener("change", (ev) => {
  latencyEndpoint = (ev.target as HTMLSelectElement).value;
  refresh();
});

$("#auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $<HTMLInputElement>("#token").value);
  $("#auth").style.display = "none";
  showScope().then(refresh, showError);
  void watch();
});

function markWindow(): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>(".windows button")) {
    b.classList.toggle("active", b.dataset.window === windowName);
  }
}

/** Says whose data this is: every org (an operator token) or one org. */
async function showScope(): Promise<void> {
  const me = await admin.whoAmI({});
  operator = me.orgId === "";
  $("#scope").textContent = operator ? "operator: every org" : `scoped to org ${me.orgId}`;
  $("#charts-note").textContent = operator
    ? ""
    : `Charts show org ${me.orgId}'s events, and deliveries to its own endpoints.`;
}

markWindow();
showScope().then(refresh, showError);
setInterval(refresh, 5000);
void watch();
