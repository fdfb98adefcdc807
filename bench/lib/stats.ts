/**
 * Percentiles and summaries, computed from sorted arrays (no histogram library: a benchmark keeps
 * every sample, so the exact order statistic is cheap).
 */

export interface Summary {
  n: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  min_ms: number;
  max_ms: number;
  mean_ms: number;
}

/**
 * Nearest-rank percentile (the smallest sample with at least p% of the samples at or below it):
 * always a value that was actually observed, which is what a reader of "p99 = 12 ms" expects.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    p50_ms: round(percentile(sorted, 50)),
    p90_ms: round(percentile(sorted, 90)),
    p99_ms: round(percentile(sorted, 99)),
    min_ms: round(sorted[0] ?? Number.NaN),
    max_ms: round(sorted[sorted.length - 1] ?? Number.NaN),
    mean_ms: round(sorted.length ? sum / sorted.length : Number.NaN),
  };
}

export function median(samples: readonly number[]): number {
  return percentile([...samples].sort((a, b) => a - b), 50);
}

/** Three significant digits at most, so JSON and tables stay readable. */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  if (x === 0) return 0;
  const scale = 10 ** Math.max(0, digits - 1 - Math.floor(Math.log10(Math.abs(x))));
  return Math.round(x * scale) / scale;
}

export function ratio(value: number, floor: number): number {
  return floor > 0 && Number.isFinite(value) && Number.isFinite(floor) ? round(value / floor) : Number.NaN;
}
