import uPlot from "uplot";

const PALETTE = [
  "#2563eb",
  "#16a34a",
  "#dc2626",
  "#9333ea",
  "#ea580c",
  "#0891b2",
  "#ca8a04",
  "#db2777",
  "#4b5563",
  "#65a30d",
];

/** Named colours for values that mean something (outcomes). */
const FIXED: Record<string, string> = {
  delivered: "#16a34a",
  retrying: "#ca8a04",
  failed: "#dc2626",
  dead_lettered: "#7f1d1d",
  p50: "#2563eb",
  p95: "#ea580c",
  p99: "#dc2626",
};

export interface ChartSeries {
  label: string;
  values: (number | null)[];
}

/**
 * A time-series chart (uPlot) in a container; setData redraws, and rebuilds the plot only
 * when the set of series changes. The container's data-points attribute counts the non-zero
 * points drawn (what tests and people glancing at the markup can check).
 */
export class TimeChart {
  #plot: uPlot | undefined;
  #labels = "";
  readonly #box: HTMLElement;

  constructor(
    box: HTMLElement,
    private readonly unit: string,
    private readonly height = 180,
  ) {
    this.#box = box;
    new ResizeObserver(() => this.#plot?.setSize(this.#size())).observe(box);
  }

  setData(times: number[], series: ChartSeries[]): void {
    const labels = series.map((s) => s.label).join("\u0000");
    const data: uPlot.AlignedData = [times, ...series.map((s) => s.values)];
    let points = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v !== 0) points++;
    this.#box.dataset.points = String(points);
    this.#box.classList.toggle("empty", series.length === 0);
    if (this.#plot && labels === this.#labels) {
      this.#plot.setData(data);
      return;
    }
    this.#plot?.destroy();
    this.#labels = labels;
    const unit = this.unit;
    this.#plot = new uPlot(
      {
        ...this.#size(),
        legend: { live: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        axes: [
          { stroke: "#6b7280", grid: { stroke: "#f1f5f9" } },
          {
            stroke: "#6b7280",
            grid: { stroke: "#f1f5f9" },
            size: 60,
            values: (_u, ticks) => ticks.map((t) => formatValue(t, unit)),
          },
        ],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: FIXED[s.label] ?? FIXED[s.label.split(" ").pop() ?? ""] ?? PALETTE[i % PALETTE.length]!,
            width: 1.5,
            // Latency has no value where nothing was measured: the line spans those buckets
            // (and lone samples show as points); counts are 0 there and drawn as such.
            ...(unit === "ms" ? { spanGaps: true, points: { show: true, size: 5 } } : { points: { show: false } }),
            value: (_u: uPlot, v: number | null) => (v === null ? "–" : formatValue(v, unit)),
          })),
        ],
      },
      data,
      this.#box,
    );
  }

  #size(): { width: number; height: number } {
    return { width: Math.max(240, this.#box.clientWidth - 4), height: this.height };
  }
}

export function formatValue(v: number, unit: string): string {
  if (unit === "ms")
    return v >= 10_000
      ? `${(v / 1000).toFixed(0)} s`
      : v >= 1000
        ? `${(v / 1000).toFixed(1)} s`
        : `${Math.round(v)} ms`;
  if (unit === "$") return v === 0 ? "$0" : v < 0.01 ? `$${v.toPrecision(2)}` : `$${v.toFixed(2)}`;
  if (unit === "/s") return v === 0 ? "0" : v < 0.1 ? v.toPrecision(2) : v < 10 ? v.toFixed(1) : v.toFixed(0);
  return v >= 1e6
    ? `${(v / 1e6).toFixed(1)}M`
    : v >= 1e3
      ? `${(v / 1e3).toFixed(1)}k`
      : String(Math.round(v * 100) / 100);
}
