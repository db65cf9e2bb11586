/**
 * Precopy on the source: rounds of pages while the guest runs. Round one sends every page
 * (each tracker's first collection is "all"); each later round sends what the tracker
 * collected since, until the switchover policy says stop. Each round starts once the
 * destination has taken in the last (its ROUND_END acknowledgement): the pipe is empty,
 * so the dirty set is as small as it gets, and SWITCHOVER never waits behind precopy data.
 *
 * The set collected by the round that decided to stop is not sent here: it goes to the
 * blackout, joined with the last collection, as the stale set.
 */
import type { Backing } from '../../../memory/backing.js';
import type { DirtyTracker } from '../../../tracking/tracker.js';
import type { Channel } from '../../../transport/channel.js';
import { FrameType, encodeJson, encodeZero, pagesHeader } from '../protocol.js';
import { UnitBitmap } from '../stale-set.js';
import { type Estimate, estimate, type RoundSample, stoppedConverging } from './convergence.js';

/** When precopy stops and post-copy starts. */
export interface SwitchoverPolicy {
  /** Right after the first round. */
  readonly postcopyNow: boolean;
  /** Once precopy has run this long (ms), whatever the dirty set. */
  readonly postcopyAfterMs: number | undefined;
  /** At most this many rounds. */
  readonly maxRounds: number;
  /** As soon as a round would send no more than this many pages. */
  readonly maxStalePages: number;
  /** As soon as the dirty set would take no longer than this to send at the measured bandwidth (ms; QEMU's downtime-limit). */
  readonly downtimeLimitMs?: number | undefined;
  /** Go on with precopy when a round no longer shrinks the dirty set (default: switch to post-copy then). */
  readonly keepPrecopyWhenNotConverging?: boolean;
  /** When precopy stops converging, throttle the guest (harder each time) before giving up on it (QEMU's auto-converge). */
  readonly autoConverge?: boolean;
}

export interface RoundFigures {
  readonly round: number;
  readonly pages: number;
  readonly ms: number;
  /** Bytes it put on the wire. */
  readonly bytes: number;
  /** What the look after it found: the dirty set, the link's and the guest's rates, the time to send the set. */
  readonly next?: { readonly dirty: number; readonly bandwidthMBps: number; readonly dirtyPagesPerSecond: number; readonly predictedMs: number };
}

/** Frames at most this long in precopy and in the background stream. */
export const RUN_BYTES = 256 * 1024;

/**
 * Backing.nextData for offsets that only grow within a round: one SEEK_DATA per hole, not
 * one per run inside it (the kernel scans the whole hole each time). A page that gains
 * data after the answer was written after the round's collection: the next round sends it.
 */
class HoleCursor {
  #from = 0;
  #data = 0;
  constructor(private readonly backing: Backing) {}

  nextData(offset: number): number {
    if (offset >= this.#from && offset < this.#data) return this.#data;
    this.#from = offset;
    this.#data = this.backing.nextData(offset);
    return this.#data;
  }
}

export interface PrecopyContext {
  readonly main: Channel;
  readonly backing: Backing;
  readonly tracker: DirtyTracker;
  readonly unit: number;
  readonly guestAddress: number;
  readonly policy: SwitchoverPolicy;
  /** Resolves once the destination has taken in `round` (0: at once). */
  readonly roundTaken: (round: number) => Promise<void>;
  /** Waits while the socket holds too much. */
  readonly drain: () => Promise<void>;
  readonly onRound?: (r: RoundFigures) => void;
  /** Precopy stopped converging and the policy throttles: take more from the guest; false when it cannot. */
  readonly throttle?: () => boolean;
}

export interface PrecopyResult {
  readonly rounds: readonly RoundFigures[];
  readonly precopyPages: number;
  readonly zeroPages: number;
  readonly firstRoundBytes: number;
  readonly firstRoundNs: bigint;
  /** Collected by the last look and not sent: stale, with whatever the blackout collects. */
  readonly unsent: UnitBitmap;
  /** Which part of the policy ended precopy, and the size of the set that last look found. */
  readonly reason: SwitchoverReason;
  readonly lastDirty: number;
}

export type SwitchoverReason = 'postcopy-now' | 'max-rounds' | 'small-dirty-set' | 'postcopy-after' | 'downtime-limit' | 'not-converging';

/** Why precopy stops before `round`, or undefined to go on. `last` and `e` describe the round before and the look now (absent before round 2). */
export function switchoverReason(p: SwitchoverPolicy, round: number, dirty: number, elapsedMs: number, last?: RoundSample, e?: Estimate): SwitchoverReason | undefined {
  if (round === 1) return undefined;
  if (p.postcopyNow) return 'postcopy-now';
  if (dirty <= p.maxStalePages) return 'small-dirty-set';
  if (p.downtimeLimitMs !== undefined && e && e.predictedMs <= p.downtimeLimitMs) return 'downtime-limit';
  if (p.postcopyAfterMs !== undefined && elapsedMs >= p.postcopyAfterMs) return 'postcopy-after';
  if (round > p.maxRounds) return 'max-rounds';
  if (!p.keepPrecopyWhenNotConverging && last && stoppedConverging(last, dirty)) return 'not-converging';
  return undefined;
}

const ms = (ns: bigint) => Number(ns) / 1e6;

/** Sends units [first, first+count) as PAGES frames of `memory` on `c`. */
export function sendRun(c: Channel, memory: Uint8Array, unit: number, guestAddress: number, first: number, count: number): void {
  const offset = first * unit;
  c.send(FrameType.PAGES, 0, pagesHeader(guestAddress + offset), memory.subarray(offset, offset + count * unit));
}

export async function runPrecopy(x: PrecopyContext): Promise<PrecopyResult> {
  const { main, backing, tracker, unit, guestAddress: base, policy: p } = x;
  const memory = backing.primary.bytes();
  const pagesPerUnit = unit / 4096;
  const unitsPerRun = Math.max(1, RUN_BYTES / unit);
  const t0 = process.hrtime.bigint();
  const rounds: RoundFigures[] = [];
  let precopyPages = 0;
  let zeroPages = 0;
  let firstRoundBytes = 0;
  let firstRoundNs = 0n;
  let lastLook = t0;
  for (let round = 1; ; round++) {
    await x.roundTaken(round - 1);
    const r0 = process.hrtime.bigint();
    const set = UnitBitmap.fromDirtyLog(tracker.collect(), tracker.pages, pagesPerUnit);
    const elapsedMs = ms(r0 - t0);
    if (round > 1) {
      const dirty = set.count();
      const last = rounds.at(-1)!;
      const e = estimate(last, dirty, unit, ms(r0 - lastLook));
      rounds[rounds.length - 1] = { ...last, next: { dirty, bandwidthMBps: e.bandwidthBytesPerMs / 1e3, dirtyPagesPerSecond: e.dirtyPagesPerMs * 1e3, predictedMs: e.predictedMs } };
      let reason = switchoverReason(p, round, dirty, elapsedMs, last, e);
      // Auto-converge: throttle and try another round, until the throttle is at its limit.
      if (reason === 'not-converging' && p.autoConverge && x.throttle?.()) reason = undefined;
      if (reason) return { rounds, precopyPages, zeroPages, firstRoundBytes, firstRoundNs, unsent: set, reason, lastDirty: dirty };
    }
    lastLook = r0;
    const bytes0 = main.bytesSent;
    let sent = 0;
    const holes = new HoleCursor(backing);
    for (const [first, count] of set.runs(unitsPerRun)) {
      // Pages the guest never wrote are holes in shared memory: say so instead of reading
      // them (which would allocate them here) and sending zeros.
      const at = first * unit;
      const end = (first + count) * unit;
      const data = Math.min(end, holes.nextData(at));
      if (data > at) {
        main.send(FrameType.ZERO, 0, encodeZero(base + at, data - at));
        zeroPages += (data - at) / unit;
      }
      if (end > data) sendRun(main, memory, unit, base, data / unit, (end - data) / unit);
      sent += count;
      await x.drain();
    }
    main.send(FrameType.ROUND_END, 0, encodeJson({ round, pages: sent }));
    await x.drain();
    const roundNs = process.hrtime.bigint() - r0;
    if (round === 1) {
      firstRoundBytes = sent * unit;
      firstRoundNs = roundNs;
    }
    precopyPages += sent;
    const figures: RoundFigures = { round, pages: sent, ms: ms(roundNs), bytes: main.bytesSent - bytes0 };
    rounds.push(figures);
    x.onRound?.(figures);
  }
}
