/**
 * A latency histogram with log-linear buckets: 8 sub-buckets per power of two, so any
 * value is within 9% of its bucket's bounds, from 1 ns to ~1 hour, in 2 KiB. Plain data
 * (counts in a Float64Array), so worker threads can send theirs to be merged.
 *
 * Values are nanoseconds. Beside the fine buckets it counts QEMU's form (the
 * postcopy-latency-dist of QEMU 10.1): bucket N holds values in [2^N, 2^(N+1)) µs, bucket 0
 * also everything under 1 µs. Counted exactly at record time: the fine buckets' power-of-two
 * bounds are in ns, and 1 µs is not a power of two of them.
 */
const SUB = 8;
const BUCKETS = 42 * SUB;
/** log2 µs buckets: up to 2^32 µs (~71 minutes); longer values count in the last. */
export const LOG2_US_BUCKETS = 32;

export class Histogram {
  readonly counts: Float64Array;
  /** QEMU's buckets: log2Us[N] counts values in [2^N, 2^(N+1)) µs. */
  readonly log2Us: Float64Array;
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  constructor(counts?: Float64Array, log2Us?: Float64Array) {
    this.counts = counts ?? new Float64Array(BUCKETS);
    this.log2Us = log2Us ?? new Float64Array(LOG2_US_BUCKETS);
  }

  /** The log2 µs bucket of `ns`: N where 2^N <= µs < 2^(N+1); 0 below 2 µs. */
  static log2UsOf(ns: number): number {
    const us = Math.floor(ns / 1000);
    if (us < 1) return 0;
    return us >= 2 ** 32 ? LOG2_US_BUCKETS - 1 : Math.min(LOG2_US_BUCKETS - 1, 31 - Math.clz32(us));
  }

  static bucketOf(value: number): number {
    if (value < 1) return 0;
    const exp = Math.floor(Math.log2(value));
    const sub = Math.floor((value / 2 ** exp - 1) * SUB);
    return Math.min(BUCKETS - 1, exp * SUB + sub);
  }

  /** The lower bound of bucket `b`. */
  static lowerBound(b: number): number {
    const exp = Math.floor(b / SUB);
    return 2 ** exp * (1 + (b % SUB) / SUB);
  }

  record(value: number): void {
    this.counts[Histogram.bucketOf(value)]!++;
    this.log2Us[Histogram.log2UsOf(value)]!++;
    this.count++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }

  merge(other: HistogramData): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    // Data from before log2Us was kept (older JSON) has none: its fine buckets stand in.
    if (other.log2Us) for (let i = 0; i < LOG2_US_BUCKETS; i++) this.log2Us[i]! += other.log2Us[i]!;
    else for (let b = 0; b < BUCKETS; b++) if (other.counts[b]) this.log2Us[Histogram.log2UsOf(Histogram.lowerBound(b))]! += other.counts[b]!;
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
  }

  /** The value below which fraction `q` of the samples fall (bucket lower bound, clamped to [min, max]). */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = q * this.count;
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += this.counts[b]!;
      if (seen >= rank && this.counts[b]! > 0) return Math.min(this.max, Math.max(this.min, Histogram.lowerBound(b)));
    }
    return this.max;
  }

  toData(): HistogramData {
    return { counts: this.counts, log2Us: this.log2Us, count: this.count, sum: this.sum, min: this.min, max: this.max };
  }

  /**
   * QEMU's form, for JSON: counts[N] = values in [2^N, 2^(N+1)) µs (bucket 0 also holds
   * those under 1 µs), up to the last non-empty bucket.
   */
  log2UsCounts(): number[] {
    let last = LOG2_US_BUCKETS - 1;
    while (last >= 0 && this.log2Us[last] === 0) last--;
    return Array.from(this.log2Us.subarray(0, last + 1));
  }

  static from(data: HistogramData): Histogram {
    const h = new Histogram();
    h.merge(data);
    return h;
  }

  summary(): { count: number; mean: number; p50: number; p90: number; p99: number; max: number } {
    return {
      count: this.count,
      mean: this.count ? this.sum / this.count : 0,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.count ? this.max : 0,
    };
  }
}

export interface HistogramData {
  counts: Float64Array;
  /** QEMU's log2 µs buckets (absent in data made before they were kept). */
  log2Us?: Float64Array;
  count: number;
  sum: number;
  min: number;
  max: number;
}
