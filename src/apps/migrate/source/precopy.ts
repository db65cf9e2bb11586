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
}

export interface RoundFigures {
  readonly round: number;
  readonly pages: number;
  readonly ms: number;
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

export type SwitchoverReason = 'postcopy-now' | 'max-rounds' | 'small-dirty-set' | 'postcopy-after';

/** Why precopy stops before `round`, or undefined to go on. */
export function switchoverReason(p: SwitchoverPolicy, round: number, dirty: number, elapsedMs: number): SwitchoverReason | undefined {
  if (round === 1) return undefined;
  if (p.postcopyNow) return 'postcopy-now';
  if (dirty <= p.maxStalePages) return 'small-dirty-set';
  if (p.postcopyAfterMs !== undefined && elapsedMs >= p.postcopyAfterMs) return 'postcopy-after';
  if (round > p.maxRounds) return 'max-rounds';
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
  for (let round = 1; ; round++) {
    await x.roundTaken(round - 1);
    const r0 = process.hrtime.bigint();
    const set = UnitBitmap.fromDirtyLog(tracker.collect(), tracker.pages, pagesPerUnit);
    const elapsedMs = ms(r0 - t0);
    if (round > 1) {
      const dirty = set.count();
      const reason = switchoverReason(p, round, dirty, elapsedMs);
      if (reason) return { rounds, precopyPages, zeroPages, firstRoundBytes, firstRoundNs, unsent: set, reason, lastDirty: dirty };
    }
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
    const figures = { round, pages: sent, ms: ms(roundNs) };
    rounds.push(figures);
    x.onRound?.(figures);
  }
}
