// The Prometheus text format lives in common/ (the sidecar's /metrics uses it too).
export { histogram, type MetricFamily, renderMetrics, single } from "../../common/prometheus.js";
