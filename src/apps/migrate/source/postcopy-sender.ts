/**
 * What the source still has to send in post-copy, and in what order (QEMU's
 * get_queued_page): a page a destination worker waits for goes at once, on the urgent
 * connection; the background stream takes the pending pages in runs, starting after the
 * last requested page, so a worker walking its slice finds the pages ahead of it sent.
 */
import { UnitBitmap } from '../stale-set.js';

export class PostcopySender {
  #pending: UnitBitmap;
  readonly #units: number;
  #cursor = 0;
  remaining: number;
  onDemandPages = 0;
  backgroundPages = 0;
  /** Requests for pages the background stream had already sent (they crossed on the wire). */
  lateRequests = 0;
  /** Pages sent again after a recovery: they were on the wire when the link was lost. */
  resentPages = 0;

  /** `stale` is taken over: its bits are cleared as pages go. */
  constructor(stale: UnitBitmap, stalePages: number) {
    this.#pending = stale;
    this.#units = stale.units;
    this.remaining = stalePages;
  }

  /**
   * After a recovery: the destination's word on what it still needs replaces what this side
   * thought pending. Pages it needs that were sent already were lost on the wire with the link.
   */
  resume(needed: UnitBitmap, count: number): void {
    for (let u = needed.next(0); u >= 0; u = needed.next(u + 1)) if (!this.#pending.has(u)) this.resentPages++;
    this.#pending = needed;
    this.remaining = count;
  }

  /** A request for unit `u`: true if it must be sent now (it was still pending). */
  request(u: number): boolean {
    if (!this.#pending.has(u)) {
      this.lateRequests++;
      return false;
    }
    this.#pending.clear(u);
    this.remaining--;
    this.onDemandPages++;
    this.#cursor = u + 1;
    return true;
  }

  /** The next background run, at most `max` units, taken off the pending set; undefined when none is left. */
  nextRun(max: number): [first: number, count: number] | undefined {
    let u = this.#pending.next(this.#cursor);
    if (u < 0) u = this.#pending.next(0);
    if (u < 0) return undefined;
    let n = 0;
    while (n < max && u + n < this.#units && this.#pending.has(u + n)) this.#pending.clear(u + n++);
    this.remaining -= n;
    this.backgroundPages += n;
    this.#cursor = u + n;
    return [u, n];
  }
}
