/** One line of `npm run bench`: a measurement, and the same-run baseline it is compared with. */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  /** What the baseline is, e.g. "raw undici POST, same receiver, concurrency 64". */
  baseline?: string;
  baselineValue?: number;
  /** value / baselineValue. */
  ratio?: number;
  /** The goal, as text ("≥ 5,000/s"). */
  target?: string;
}
