/**
 * The pages a destination has asked the source for and who waits on them: a fault on a
 * stale page becomes one REQUEST however many workers touch it; when the page arrives,
 * each waiter's wait counts towards the fault latency and its worker's blocktime (QEMU's
 * postcopy blocktime).
 */
import { Histogram } from '../../../metrics/histogram.js';
import type { FaultMessage } from '../fault-reader.js';

export class PageRequests {
  readonly #requested = new Map<number, { at: number; tids: number[] }>();
  readonly #tidToWorker = new Map<number, number>();
  readonly latency = new Histogram();
  readonly blocktimeMs: number[];
  onDemandPages = 0;
  backgroundPages = 0;

  constructor(workers: number) {
    this.blocktimeMs = new Array<number>(workers).fill(0);
  }

  /** The kernel thread ids of the workers, by worker: blocktime is kept per worker. */
  setWorkers(tids: readonly number[]): void {
    tids.forEach((tid, i) => this.#tidToWorker.set(tid, i));
  }

  /** A fault on a stale page. True when the page must be asked for (the first fault on it). */
  fault(m: FaultMessage): boolean {
    const r = this.#requested.get(m.page);
    if (r) {
      r.tids.push(m.tid);
      return false;
    }
    this.#requested.set(m.page, { at: m.at, tids: [m.tid] });
    this.onDemandPages++;
    return true;
  }

  /** The pages asked for and not yet in, in the order they were asked (a Map keeps it). */
  outstanding(): number[] {
    return [...this.#requested.keys()];
  }

  /** Unit `u` is in at `now` (epoch ms): the waits on it end. */
  arrived(u: number, now: number): void {
    const r = this.#requested.get(u);
    if (!r) {
      this.backgroundPages++;
      return;
    }
    this.#requested.delete(u);
    const waited = now - r.at;
    this.latency.record(waited * 1e6);
    for (const tid of r.tids) {
      const v = this.#tidToWorker.get(tid);
      if (v !== undefined) this.blocktimeMs[v]! += waited;
    }
  }

  /** Fault read → page placed, for faults that waited on the network (ms). */
  latencySummary(): { count: number; p50: number; p99: number; max: number; log2Us: number[] } {
    const s = this.latency.summary();
    // log2Us: QEMU's form beside the percentiles, log2Us[N] waits in [2^N, 2^(N+1)) µs.
    return { count: s.count, p50: s.p50 / 1e6, p99: s.p99 / 1e6, max: s.max / 1e6, log2Us: this.latency.log2UsCounts() };
  }
}
