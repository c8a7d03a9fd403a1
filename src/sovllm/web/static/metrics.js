// Latency percentiles from the server's Prometheus histograms, as Prometheus computes them.
// Two scrapes subtracted give the histogram of the requests between them ("the last minutes").

/** One histogram from Prometheus text: cumulative buckets summed over all label sets. */
export function parseHistogram(text, name) {
  const buckets = new Map();
  let count = 0;
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([^\s{]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, metric, labels = "", raw] = m;
    const value = Number(raw);
    if (metric === `${name}_bucket`) {
      const le = /(?:^|[{,])le="([^"]+)"/.exec(labels);
      if (!le) continue;
      const bound = le[1] === "+Inf" ? Infinity : Number(le[1]);
      buckets.set(bound, (buckets.get(bound) ?? 0) + value);
    } else if (metric === `${name}_count`) {
      count += value;
    } else if (metric === `${name}_sum`) {
      sum += value;
    }
  }
  return { buckets: [...buckets].sort((a, b) => a[0] - b[0]), count, sum };
}

/** A gauge's values from Prometheus text, by the value of one label ("" where it is absent). */
export function parseGauge(text, name, label) {
  const values = new Map();
  const labelled = new RegExp(`(?:^|[{,])${label}="([^"]*)"`);
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([^\s{]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const found = labelled.exec(m[2] ?? "");
    values.set(found ? found[1] : "", Number(m[3]));
  }
  return values;
}

/** later - earlier, bucket by bucket; null if a counter went down (the server restarted). */
export function subtract(later, earlier) {
  const before = new Map(earlier.buckets);
  const buckets = later.buckets.map(([bound, n]) => [bound, n - (before.get(bound) ?? 0)]);
  if (later.count < earlier.count || buckets.some(([, n]) => n < 0)) return null;
  return { buckets, count: later.count - earlier.count, sum: later.sum - earlier.sum };
}

/** The q-quantile (0..1) by linear interpolation inside its bucket; null with no observations. */
export function quantile(q, histogram) {
  const { buckets } = histogram;
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, cumulative] of buckets) {
    if (cumulative >= rank) {
      if (bound === Infinity) return prevBound; // beyond the last finite bucket
      if (cumulative === prevCount) return bound;
      const lower = prevBound > bound ? 0 : prevBound;
      return lower + ((bound - lower) * (rank - prevCount)) / (cumulative - prevCount);
    }
    prevBound = bound;
    prevCount = cumulative;
  }
  return prevBound;
}

export function formatSeconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value < 1) return `${(value * 1000).toFixed(value < 0.01 ? 1 : 0)} ms`;
  return `${value.toFixed(2)} s`;
}
