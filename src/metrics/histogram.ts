/**
 * A latency histogram with log-linear buckets: 8 sub-buckets per power of two, so any
 * value is within 9% of its bucket's bounds, from 1 ns to ~1 hour, in 2 KiB. Plain data
 * (counts in a Float64Array), so worker threads can send theirs to be merged.
 */
const SUB = 8;
const BUCKETS = 42 * SUB;

export class Histogram {
  readonly counts: Float64Array;
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  constructor(counts?: Float64Array) {
    this.counts = counts ?? new Float64Array(BUCKETS);
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
    this.count++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }

  merge(other: HistogramData): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
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
    return { counts: this.counts, count: this.count, sum: this.sum, min: this.min, max: this.max };
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
  count: number;
  sum: number;
  min: number;
  max: number;
}
