/**
 * The offset between two hosts' clocks, from NTP-style exchanges on an idle connection
 * (RFC 5905 §8): this side sends at t0, the peer receives at t1 and replies at t2, this side
 * receives at t3 (t0, t3 on this clock; t1, t2 on the peer's). Then
 *   offset θ = ((t1 − t0) + (t2 − t3)) / 2     (peer − here)
 *   delay  δ = (t3 − t0) − (t2 − t1)           (the round trip minus the peer's own time)
 * and the true offset lies within θ ± δ/2 whatever the asymmetry of the path. The sample with
 * the smallest δ gives the tightest bound. Pure: no sockets, nanoseconds as bigint.
 */
import { InvalidArgumentError } from '../errors.js';

export interface ClockSample {
  readonly t0: bigint;
  readonly t1: bigint;
  readonly t2: bigint;
  readonly t3: bigint;
}

export interface ClockOffset {
  /** Peer's clock minus this side's, ns. */
  readonly offsetNs: bigint;
  /** The true offset is within offsetNs ± errorNs. */
  readonly errorNs: bigint;
  readonly samples: number;
}

export function checkSample(s: ClockSample): void {
  if (s.t3 < s.t0) throw new InvalidArgumentError(`clock sample: received (${s.t3}) before sent (${s.t0})`);
  if (s.t2 < s.t1) throw new InvalidArgumentError(`clock sample: the peer replied (${s.t2}) before it received (${s.t1})`);
  if (s.t3 - s.t0 < s.t2 - s.t1) throw new InvalidArgumentError('clock sample: the peer took longer than the round trip');
}

/** The best estimate from `samples` (at least one). */
export function estimateOffset(samples: readonly ClockSample[]): ClockOffset {
  if (samples.length === 0) throw new InvalidArgumentError('estimateOffset: no samples');
  let best: ClockSample | undefined;
  let bestDelay = 0n;
  for (const s of samples) {
    checkSample(s);
    const delay = s.t3 - s.t0 - (s.t2 - s.t1);
    if (!best || delay < bestDelay) {
      best = s;
      bestDelay = delay;
    }
  }
  const b = best!;
  return { offsetNs: (b.t1 - b.t0 + (b.t2 - b.t3)) / 2n, errorNs: (bestDelay + 1n) / 2n, samples: samples.length };
}

/** A time on the peer's clock, on this side's clock. */
export function toLocal(peerNs: bigint, o: ClockOffset): bigint {
  return peerNs - o.offsetNs;
}
