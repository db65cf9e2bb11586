/**
 * Is precopy getting anywhere? Each round is measured as it goes: the link's bandwidth
 * (the round's bytes over its time, acknowledgement included) and the guest's dirty rate
 * (pages the next look finds dirty over the time since the last). From them, what sending
 * the dirty set would take now: the blackout QEMU predicts for a precopy-only switchover,
 * and the longest a post-copy worker would wait for the set. Precopy stops converging when
 * a round no longer shrinks the dirty set: on a link slower than the guest dirties memory
 * it never will (QEMU's auto-converge then throttles the guest; here post-copy takes over).
 */

/** One precopy round as the estimate needs it. */
export interface RoundSample {
  /** Bytes the round sent (zero runs count as their header only). */
  readonly bytes: number;
  /** Its time, start to acknowledgement, ms. */
  readonly ms: number;
  /** Pages it sent. */
  readonly pages: number;
}

export interface Estimate {
  /** The last round's bandwidth, bytes per ms (÷ 1000: MB/s). */
  readonly bandwidthBytesPerMs: number;
  /** Pages dirtied per ms while the last round ran. */
  readonly dirtyPagesPerMs: number;
  /** Sending the set found dirty now, at that bandwidth, ms. */
  readonly predictedMs: number;
}

/** A round shrinks the dirty set by less than this share: no progress. */
export const CONVERGENCE_SHRINK = 0.1;

export function estimate(last: RoundSample, dirtyNow: number, unit: number, sinceLastLookMs: number): Estimate {
  const bandwidthBytesPerMs = last.ms > 0 ? last.bytes / last.ms : Infinity;
  return {
    bandwidthBytesPerMs,
    dirtyPagesPerMs: sinceLastLookMs > 0 ? dirtyNow / sinceLastLookMs : Infinity,
    predictedMs: (dirtyNow * unit) / bandwidthBytesPerMs,
  };
}

/**
 * True when the set found dirty now is not meaningfully smaller than what the last round
 * sent: the guest dirtied, during that round, about as much as the round could send. Round
 * one sends everything, so the first look after it already tells for a guest that writes
 * all of its memory faster than the link carries it.
 */
export function stoppedConverging(last: RoundSample, dirtyNow: number): boolean {
  return last.pages > 0 && dirtyNow >= (1 - CONVERGENCE_SHRINK) * last.pages;
}
