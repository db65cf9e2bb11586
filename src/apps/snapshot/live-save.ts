/**
 * A live (background) snapshot: the guest's memory is written into DIR/memory while the
 * guest runs, in rounds driven by its dirty tracker, as precopy sends memory to a
 * destination (apps/migrate/source/precopy.ts; its stop rules and estimate are used here
 * as they are). Round one writes every unit; each later round writes the units the tracker
 * saw written since the round before; when the rounds stop shrinking the set, or it is
 * small, or there were enough of them, the guest is paused only for the units dirtied
 * since, and its state. The checksums are computed over the final file after that, with
 * the guest free to run again (hooks.atPause), and the state file is written last: the
 * result is an ordinary snapshot (manifest.ts), restored like any other.
 *
 * Sparseness as the paused save has it, where it comes for free: a unit that is a hole in
 * shared memory, or reads as zeros, and has never been written into the file stays a hole.
 * A unit once written that reads as zeros later is written as zeros (the file must not
 * keep older bytes). Trackers report 4 KiB pages; hugetlb memory is written in whole huge
 * pages (a unit is dirty when any of its 4 KiB pages is).
 */
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
import { setImmediate as turn } from 'node:timers/promises';
import { InvalidArgumentError, UnsupportedError } from '../../errors.js';
import type { MigratableGuest } from '../../guest/guest.js';
import { MapFlag } from '../../memory/constants.js';
import { Mapping } from '../../memory/mapping.js';
import type { TrackerName } from '../../tracking/tracker.js';
import { estimate, type RoundSample } from '../migrate/source/convergence.js';
import type { Backing } from '../../memory/backing.js';
import { RUN_BYTES, switchoverReason } from '../migrate/source/precopy.js';
import { Throttle } from '../migrate/source/throttle.js';
import { UnitBitmap } from '../migrate/stale-set.js';
import type { Region } from './manifest.js';
import { captureState, commitFiles, isZero, manifestFor, memoryEntry, REGION_BYTES, type SaveReport, temporaryMemoryPath } from './save.js';
import { UnitMap } from './unit-map.js';
import { LIVE_DEFAULTS, type LivePolicy } from './live-policy.js';

export { LIVE_DEFAULTS, type LivePolicy } from './live-policy.js';

/** What ended the rounds (the policy's rules, named as migrate names them). */
export type LiveStopReason = 'small-dirty-set' | 'max-rounds' | 'not-converging';

export interface LiveRound {
  readonly round: number;
  /** Units the round covered (the dirty set it was given; round one: all of them), and their 4 KiB pages. */
  readonly units: number;
  readonly pages: number;
  /** Of those, units copied into the file (the rest were holes or zeros never written). */
  readonly writtenUnits: number;
  readonly ms: number;
  /** What the look after it found: the dirty set, the write rate, the guest's dirty rate, the time writing the set would take. */
  readonly next?: { readonly dirty: number; readonly writeMBps: number; readonly dirtyPagesPerSecond: number; readonly predictedMs: number };
}

export interface LiveFigures {
  readonly tracker: TrackerName;
  readonly policy: LivePolicy;
  readonly rounds: readonly LiveRound[];
  readonly reason: LiveStopReason;
  /** The share of time auto-converge took from the guest at the end (0: not throttled). */
  readonly throttlePercent: number;
  /** Start of round one → the pause: the guest ran all along. */
  readonly roundsMs: number;
  /**
   * Asking the guest to pause → the last units and the state written (ms); of it, the
   * workers stopping (stopMs); the units written then (the last collection joined with the
   * set the rounds left unwritten), as units and 4 KiB pages.
   */
  readonly pause: { readonly ms: number; readonly stopMs: number; readonly units: number; readonly pages: number; readonly writtenUnits: number };
  /** SHA-256 of the final file's regions, after the pause. */
  readonly hashMs: number;
  /** Start → both files in place, without the time the caller spent in hooks.atPause. */
  readonly totalMs: number;
}

/** A paused save's figures (scanMs is 0: each round looks at the units it writes), with the rounds and the pause. */
export interface LiveSaveReport extends SaveReport {
  readonly live: LiveFigures;
}

export interface LiveSaveHooks {
  /**
   * Called once the last units and the state are written, the guest still paused: check
   * it, let it run on. The checksums and the state file come after, from the file alone.
   */
  readonly atPause?: () => void | Promise<void>;
  readonly onRound?: (r: LiveRound) => void;
}

const ms = (ns: bigint) => Number(ns) / 1e6;
/** Rounds give the event loop a turn this often (auto-converge's timers run there). */
const RUNS_PER_TURN = 16;

/**
 * Where the guest's shared memory holds data, for offsets that only grow within one pass:
 * each answer is a whole extent (a hole up to the next data, or data up to the next hole),
 * so a pass asks twice per extent, not at every unit. An extent learnt while the guest runs
 * may gain data after the answer: that write came after the round's collection, so the
 * next round has it. (Data never turns back into a hole: nothing punches guest memory.)
 */
class ExtentCursor {
  #from = 0;
  #data = 0;
  #hole = 0;
  constructor(private readonly backing: Backing) {}

  /** [offset, end) is all hole (hole: true) or all data. */
  at(offset: number): { hole: boolean; end: number } {
    if (offset < this.#from || offset >= this.#hole) {
      this.#from = offset;
      this.#data = this.backing.nextData(offset);
      this.#hole = this.#data >= this.backing.size ? this.backing.size : this.backing.nextHole(this.#data);
    }
    return offset < this.#data ? { hole: true, end: this.#data } : { hole: false, end: this.#hole };
  }
}

/** Copies dirty units of the guest's memory into the file, keeping holes where it can. */
class UnitWriter {
  /** Units the file holds data for. */
  readonly written: UnitMap;

  constructor(
    private readonly guest: MigratableGuest,
    private readonly view: Uint8Array,
    private readonly out: Uint8Array,
  ) {
    this.written = new UnitMap(guest.shape.size / guest.unit);
  }

  /** Writes units [first, first+count); returns how many were copied (or zeroed). `extents` answers for growing offsets within one pass. */
  run(first: number, count: number, extents: ExtentCursor): number {
    const { unit } = this.guest;
    const { view, out, written } = this;
    let copied = 0;
    let pending = -1;
    const flush = (end: number) => {
      if (pending < 0) return;
      out.set(view.subarray(pending * unit, end * unit), pending * unit);
      pending = -1;
    };
    const end = first + count;
    for (let u = first; u < end; ) {
      const e = extents.at(u * unit);
      if (e.hole) {
        // A hole in shared memory reads as zeros and is not read (that would allocate it).
        // A unit partly data (a huge page is never partly anything) counts as data.
        const holeEnd = Math.min(end, Math.floor(e.end / unit));
        if (holeEnd > u) {
          flush(u);
          for (; u < holeEnd; u++) {
            if (!written.has(u)) continue;
            out.fill(0, u * unit, (u + 1) * unit);
            copied++;
          }
          continue;
        }
      }
      const dataEnd = e.hole ? u + 1 : Math.min(end, Math.max(u + 1, Math.ceil(e.end / unit)));
      for (; u < dataEnd; u++) {
        if (written.has(u) || !isZero(view, u * unit, unit)) {
          if (pending < 0) pending = u;
          written.set(u);
          copied++;
        } else flush(u);
      }
    }
    flush(end);
    return copied;
  }
}

/**
 * Saves `guest` (running, made with a dirty tracker) into `dir` while it runs; pauses it
 * for the last dirty units and its state, and leaves it paused (hooks.atPause may resume it).
 */
export async function saveSnapshotLive(guest: MigratableGuest, dir: string, policy: LivePolicy = LIVE_DEFAULTS, hooks: LiveSaveHooks = {}): Promise<LiveSaveReport> {
  const tracker = guest.tracker;
  if (!tracker) {
    throw new UnsupportedError(
      `a live snapshot needs the guest's dirty tracker, and this ${guest.backend} guest was made without one`,
      `Make the guest with tracking (${guest.trackers.join(' or ')}: createGuest(backend, shape, { tracking })), or pause it and save it with saveSnapshot`,
    );
  }
  if (!guest.running) throw new InvalidArgumentError('saveSnapshotLive: the guest is not running; a paused guest is saved with saveSnapshot');
  mkdirSync(dir, { recursive: true });
  const { unit } = guest;
  const size = guest.shape.size;
  const units = size / unit;
  const pagesPerUnit = unit / 4096;
  const unitsPerRun = Math.max(1, RUN_BYTES / unit);
  const rules = { postcopyNow: false, postcopyAfterMs: undefined, maxRounds: policy.maxRounds, maxStalePages: policy.maxStaleUnits, autoConverge: policy.autoConverge };

  const tmpMemory = temporaryMemoryPath(dir);
  const fd = openSync(tmpMemory, 'w+', 0o600);
  let out: Mapping | undefined;
  let throttle: Throttle | undefined;
  let committed = false;
  try {
    ftruncateSync(fd, size);
    out = Mapping.map(size, { flags: MapFlag.SHARED, fd });
    // Read through the primary mapping: the guest writes through it, so its page tables
    // hold the pages already (an alias would take a minor fault per page, in the pause
    // too). Reads do not disturb either tracker, and a guest with a tracker is a source,
    // never one whose primary mapping waits on a userfaultfd for missing pages.
    const writer = new UnitWriter(guest, guest.backing.primary.bytes(), out.bytes());
    throttle = policy.autoConverge ? new Throttle(guest) : undefined;

    const t0 = process.hrtime.bigint();
    const rounds: LiveRound[] = [];
    let writeNs = 0n;
    let lastLook = t0;
    let stale: UnitBitmap;
    let reason: LiveStopReason;
    for (let round = 1; ; round++) {
      const r0 = process.hrtime.bigint();
      let set = UnitBitmap.fromDirtyLog(tracker.collect(), tracker.pages, pagesPerUnit);
      // Round one covers every unit whatever the tracker says: one collected before this
      // save would otherwise hide the pages written until then.
      if (round === 1) set = new UnitBitmap(units, new Uint8Array(Math.ceil(units / 8)).fill(0xff));
      else {
        const dirty = set.count();
        const last = rounds.at(-1)!;
        const sample: RoundSample = { bytes: last.writtenUnits * unit, ms: last.ms, pages: last.units };
        const e = estimate(sample, dirty, unit, ms(r0 - lastLook));
        rounds[rounds.length - 1] = { ...last, next: { dirty, writeMBps: e.bandwidthBytesPerMs / 1e3, dirtyPagesPerSecond: e.dirtyPagesPerMs * pagesPerUnit * 1e3, predictedMs: e.predictedMs } };
        let why = switchoverReason(rules, round, dirty, ms(r0 - t0), sample, e) as LiveStopReason | undefined;
        if (why === 'not-converging' && throttle?.raise()) why = undefined;
        if (why) {
          stale = set;
          reason = why;
          break;
        }
      }
      lastLook = r0;
      let covered = 0;
      let written = 0;
      let runs = 0;
      const extents = new ExtentCursor(guest.backing);
      for (const [first, count] of set.runs(unitsPerRun)) {
        written += writer.run(first, count, extents);
        covered += count;
        if (++runs % RUNS_PER_TURN === 0) await turn();
      }
      const roundNs = process.hrtime.bigint() - r0;
      writeNs += roundNs;
      const figures: LiveRound = { round, units: covered, pages: covered * pagesPerUnit, writtenUnits: written, ms: ms(roundNs) };
      rounds.push(figures);
      hooks.onRound?.(figures);
    }

    // The pause: the guest stops, the set it dirtied since the last look joins the one the
    // rounds left, and those units and the state are all the pause writes.
    const throttlePercent = throttle?.percent ?? 0;
    await throttle?.stop();
    throttle = undefined;
    const p0 = process.hrtime.bigint();
    await guest.pause();
    const p1 = process.hrtime.bigint();
    stale.or(UnitBitmap.fromDirtyLog(tracker.collect(), tracker.pages, pagesPerUnit));
    let pauseUnits = 0;
    let pauseWritten = 0;
    const extents = new ExtentCursor(guest.backing);
    for (const [first, count] of stale.runs(unitsPerRun)) {
      pauseWritten += writer.run(first, count, extents);
      pauseUnits += count;
    }
    const captured = captureState(guest);
    const p2 = process.hrtime.bigint();
    writeNs += p2 - p1;
    await hooks.atPause?.();
    const hookNs = process.hrtime.bigint() - p2;

    // Checksums of the final file (the guest may be running again: the file no longer changes).
    const h0 = process.hrtime.bigint();
    const bytes = out.bytes();
    const data = writer.written;
    const regions: Region[] = [];
    const regionBytes = Math.max(unit, Math.floor(REGION_BYTES / unit) * unit);
    for (let offset = 0; offset < size; offset += regionBytes) {
      const length = Math.min(regionBytes, size - offset);
      const hash = createHash('sha256');
      data.runs(true, (first, count) => hash.update(bytes.subarray(first * unit, (first + count) * unit)), offset / unit, (offset + length) / unit);
      regions.push({ offset, length, sha256: hash.digest('hex') });
    }
    const h1 = process.hrtime.bigint();
    out.unmap();
    out = undefined;
    const dataUnits = data.count();
    const manifest = manifestFor(guest, captured, memoryEntry(size, unit, data, regions));
    const memoryPath = commitFiles(dir, tmpMemory, manifest, data);
    committed = true;
    const t1 = process.hrtime.bigint();
    return {
      dir,
      size,
      unit,
      units,
      dataUnits,
      holeUnits: units - dataUnits,
      allocatedBytes: statSync(memoryPath).blocks * 512,
      scanMs: 0,
      writeMs: ms(writeNs),
      regions: regions.length,
      live: {
        tracker: tracker.name,
        policy,
        rounds,
        reason,
        throttlePercent,
        roundsMs: ms(p0 - t0),
        pause: { ms: ms(p2 - p0), stopMs: ms(p1 - p0), units: pauseUnits, pages: pauseUnits * pagesPerUnit, writtenUnits: pauseWritten },
        hashMs: ms(h1 - h0),
        totalMs: ms(t1 - t0 - hookNs),
      },
    };
  } finally {
    await throttle?.stop().catch(() => undefined);
    out?.unmap();
    closeSync(fd);
    if (!committed) {
      try {
        unlinkSync(tmpMemory);
      } catch {
        // Already renamed, or never made.
      }
    }
  }
}
