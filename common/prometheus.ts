/** The Prometheus text exposition format, shared by the control plane's and the sidecar's /metrics. */
/** One metric family in the Prometheus text exposition format. */
export interface MetricFamily {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  /** `suffix` names a histogram's series: "_bucket", "_sum", "_count". */
  samples: { labels?: Record<string, string>; value: number; suffix?: string }[];
}

export function renderMetrics(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      lines.push(`${f.name}${s.suffix ?? ""}${renderLabels(s.labels)} ${Number.isFinite(s.value) ? s.value : 0}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function renderLabels(labels: Record<string, string> | undefined): string {
  if (!labels) return "";
  const parts = Object.entries(labels).map(
    ([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`,
  );
  return parts.length > 0 ? `{${parts.join(",")}}` : "";
}

/** A Prometheus histogram from cumulative bucket counts (the last count is +Inf). */
export function histogram(
  name: string,
  help: string,
  h: { bucketsMs: readonly number[]; counts: readonly number[]; sumMs: number; count: number },
): MetricFamily {
  return {
    name,
    help,
    type: "histogram",
    samples: [
      ...h.counts.map((value, i) => ({
        suffix: "_bucket",
        labels: { le: i < h.bucketsMs.length ? String(h.bucketsMs[i]) : "+Inf" },
        value,
      })),
      { suffix: "_sum", value: h.sumMs },
      { suffix: "_count", value: h.count },
    ],
  };
}

/** A family of one unlabelled sample. */
export function single(name: string, help: string, type: "counter" | "gauge", value: number): MetricFamily {
  return { name, help, type, samples: [{ value }] };
}
