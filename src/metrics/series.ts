/**
 * A bounded time series for a run's JSON: named columns sampled at a fixed interval, and
 * timestamped events. Memory is bounded whatever the run's length: when `maxSamples` are
 * held, every second sample is dropped and the interval doubles (columns are meant to be
 * cumulative counters, so the kept samples still give exact rates between them; a gauge
 * loses detail, never correctness). Events are kept up to `maxEvents`; later ones are
 * counted, not stored.
 *
 * Times are ms since `t0`, the first sample or event (unless given), taken from
 * process.hrtime (CLOCK_MONOTONIC); t0 is written out as `t0Ns`, so that two processes'
 * series on one machine can be lined up.
 */
export interface SeriesEvent {
  readonly atMs: number;
  readonly name: string;
  readonly detail?: Readonly<Record<string, number | string>>;
}

/** A series as it goes into a run's JSON. */
export interface SeriesData {
  /** The interval between kept samples at the end of the run, ms (the base interval × 2^decimations). */
  readonly intervalMs: number;
  /** CLOCK_MONOTONIC of t = 0, ns, as a decimal string. */
  readonly t0Ns: string;
  readonly columns: readonly string[];
  /** Sample times, ms since t0. */
  readonly t: readonly number[];
  /** values[c][i]: column c at t[i]. */
  readonly values: readonly (readonly number[])[];
  readonly events: readonly SeriesEvent[];
  readonly droppedEvents: number;
}

export interface SeriesOptions {
  /** Base sampling interval, ms (default 10). */
  readonly intervalMs?: number;
  /** Never hold more samples than this (default 2048; at least 16). */
  readonly maxSamples?: number;
  readonly maxEvents?: number;
  /** CLOCK_MONOTONIC ns of t = 0 (default: the first sample or event). */
  readonly t0Ns?: bigint;
}

export const DEFAULT_INTERVAL_MS = 10;
export const DEFAULT_MAX_SAMPLES = 2048;

export class Series {
  #t0Ns: bigint | undefined;
  #columns: string[] = [];
  #intervalMs: number;
  readonly #maxSamples: number;
  readonly #maxEvents: number;
  #t: number[] = [];
  #values: number[][] = [];
  readonly #events: SeriesEvent[] = [];
  #droppedEvents = 0;

  constructor(options: SeriesOptions = {}) {
    this.#t0Ns = options.t0Ns;
    this.#intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.#maxSamples = Math.max(16, options.maxSamples ?? DEFAULT_MAX_SAMPLES);
    this.#maxEvents = options.maxEvents ?? 1000;
  }

  get t0Ns(): bigint {
    this.#t0Ns ??= process.hrtime.bigint();
    return this.#t0Ns;
  }

  /** ms since t0, now (the first call sets t0 if it was not given). */
  now(): number {
    const now = process.hrtime.bigint();
    this.#t0Ns ??= now;
    return Number(now - this.#t0Ns) / 1e6;
  }

  get intervalMs(): number {
    return this.#intervalMs;
  }

  get length(): number {
    return this.#t.length;
  }

  /** Names the columns; only before the first sample (samples of other widths are refused). */
  setColumns(columns: readonly string[]): void {
    if (this.#t.length > 0) throw new Error('Series.setColumns after the first sample');
    this.#columns = [...columns];
    this.#values = columns.map(() => []);
  }

  /**
   * Adds a sample at `atMs` (default now). The last sample is always the freshest state: a
   * sample less than an interval after the one before the last replaces the last, so kept
   * samples are about an interval apart and the final one is the run's final state.
   */
  add(values: readonly number[], atMs = this.now()): void {
    if (values.length !== this.#columns.length) throw new Error(`Series.add: ${values.length} values for ${this.#columns.length} columns`);
    const n = this.#t.length;
    if (n > 1 && atMs - this.#t[n - 2]! < this.#intervalMs) {
      this.#t[n - 1] = atMs;
      values.forEach((v, c) => (this.#values[c]![n - 1] = v));
      return;
    }
    this.#t.push(atMs);
    values.forEach((v, c) => this.#values[c]!.push(v));
    if (this.#t.length >= this.#maxSamples) this.#decimate();
  }

  /** Keeps samples 0, 2, 4, … and the last; the interval doubles. */
  #decimate(): void {
    const keep = (a: number[]) => a.filter((_, i) => i % 2 === 0 || i === a.length - 1);
    this.#t = keep(this.#t);
    this.#values = this.#values.map(keep);
    this.#intervalMs *= 2;
  }

  event(name: string, detail?: Record<string, number | string>, atMs = this.now()): void {
    if (this.#events.length >= this.#maxEvents) {
      this.#droppedEvents++;
      return;
    }
    this.#events.push(detail ? { atMs, name, detail } : { atMs, name });
  }

  toJSON(): SeriesData {
    return {
      intervalMs: this.#intervalMs,
      t0Ns: String(this.t0Ns),
      columns: this.#columns,
      t: this.#t.map(round3),
      values: this.#values,
      // In time order: some events are known only once over (recorded later, dated earlier).
      events: [...this.#events].sort((a, b) => a.atMs - b.atMs).map((e) => ({ ...e, atMs: round3(e.atMs) })),
      droppedEvents: this.#droppedEvents,
    };
  }
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Samples a probe into a Series on a timer (unref'd: it never keeps a process alive). The
 * probe runs on the caller's event loop, so it reads counters others update (shared memory
 * of worker threads, fields of objects in this thread) and must be cheap.
 */
export class Recorder {
  readonly series: Series;
  #probe: (() => readonly number[]) | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: SeriesOptions = {}) {
    this.series = new Series(options);
  }

  /** Starts sampling `read` (one value per column) now and every interval; a second call replaces the first (before any sample only). */
  watch(columns: readonly string[], read: () => readonly number[]): void {
    this.#stopTimer();
    this.series.setColumns(columns);
    this.#probe = read;
    this.sample();
    const tick = () => {
      this.sample();
      // After a decimation the interval has doubled: sample at the new rate.
      if (this.#timer && this.#timerMs !== this.series.intervalMs) {
        this.#stopTimer();
        this.#start(tick);
      }
    };
    this.#start(tick);
  }

  #timerMs = 0;

  #start(tick: () => void): void {
    this.#timerMs = this.series.intervalMs;
    this.#timer = setInterval(tick, this.#timerMs);
    this.#timer.unref();
  }

  #stopTimer(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  sample(): void {
    if (this.#probe) this.series.add(this.#probe());
  }

  /** An event now, or `agoMs` before now (an event known only once it is over: a round that took agoMs). */
  event(name: string, detail?: Record<string, number | string>, agoMs = 0): void {
    this.series.event(name, detail, this.series.now() - agoMs);
  }

  /** Takes a last sample and stops the timer; the series stays readable. Safe twice. */
  stop(): SeriesData {
    if (this.#timer) this.sample();
    this.#stopTimer();
    return this.series.toJSON();
  }
}

/**
 * Whether runs record time series: yes unless POSTCOPY_NO_SERIES=1 (kept so that a run can
 * be measured with and without recording, BENCHMARKS.md).
 */
export function seriesEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.POSTCOPY_NO_SERIES !== '1';
}
