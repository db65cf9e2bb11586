/**
 * Placing snapshot pages into registered guest memory, in runs: one ioctl per run of
 * consecutive units that are not placed yet and of one kind.
 *
 * - `copy` (MISSING faults, private or shared memory of its own): a data unit is copied
 *   with UFFDIO_COPY, from a bounce buffer the file was read into (FileReader), or from the
 *   snapshot file's mapping; a hole (never written) is mapped
 *   with UFFDIO_ZEROPAGE, or copied from the file (zeros, without reading a disk block) on
 *   hugetlb, which has no zero page.
 * - `continue` (MINOR faults, the guest's memory is the file itself mapped private):
 *   UFFDIO_CONTINUE maps the file's page-cache pages, nothing is copied. Holes are never
 *   placed: they are not in the page cache, so they do not fault as MINOR, and the kernel
 *   gives them zeros itself.
 *
 * A unit someone else placed first (EEXIST, or a COPY that stopped short at it) is done.
 * Used by the main thread (eager, the fill after the run) and by the page server's thread
 * (faults, prefetch, background); the placed map and counters are shared between them.
 */
import { readSync } from 'node:fs';
import { hva } from '../../address.js';
import { MapFlag, Prot } from '../../memory/constants.js';
import { Mapping } from '../../memory/mapping.js';
import { isSystemError } from '../../native/errors.js';
import type { FillResult, Userfaultfd } from '../../uffd/userfaultfd.js';
import type { UnitMap } from './unit-map.js';

export type PlaceMode = 'copy' | 'continue';

/** Float64 slots of the shared counters (what the report shows). */
export const Counter = {
  FAULTS: 0,
  MISSING: 1,
  MINOR: 2,
  /** Units copied from the file (UFFDIO_COPY of data). */
  COPIED: 3,
  /** Units mapped from the page cache (UFFDIO_CONTINUE). */
  CONTINUED: 4,
  /** Holes mapped as zeros. */
  ZEROED: 5,
  /** Placements that found the unit already there. */
  EXISTS: 6,
  /** Units placed, by why. */
  BY_FAULT: 7,
  BY_PREFETCH: 8,
  BY_BACKGROUND: 9,
  BY_EAGER: 10,
  BY_FILL: 11,
  /** Fill ioctls issued. */
  IOCTLS: 12,
  /** epoch ms when the prefetch list, and the background fill, were done (0: not yet). */
  PREFETCH_DONE_AT: 13,
  BACKGROUND_DONE_AT: 14,
  /** Sum of fault service times (read → placed), ns. */
  SERVICE_NS: 15,
  /** Fills deferred on EAGAIN (the mm was changing). */
  DEFERRED: 16,
  /** Set by the main thread once the guest runs: bulk work (prefetch, background) starts then, faults are served from the start. */
  GO: 17,
  WORDS: 18,
} as const;

export type PlacedBy = typeof Counter.BY_FAULT | typeof Counter.BY_PREFETCH | typeof Counter.BY_BACKGROUND | typeof Counter.BY_EAGER | typeof Counter.BY_FILL;

/**
 * Reads the snapshot file into a bounce buffer of this thread's for UFFDIO_COPY to copy from.
 * Why not straight from the file's mapping: the kernel's copy then touches each source page
 * through a mapping no one touched before, and on a host whose paging is virtualised in
 * software (this kind of machine: kvm-pvm) every first touch costs an exit; pread reads the
 * page cache through the kernel's own mapping into a buffer that stays hot. Measured here:
 * 9.5 µs a page against 15–40 µs from the mapping (scattered 4 KiB pages, 1 GiB file).
 */
export class FileReader {
  readonly fd: number;
  readonly bytes: number;
  readonly #bounce: Mapping;
  readonly #view: Uint8Array;

  /** A reader of `fd` (not owned) with a bounce buffer of `bytes` (a whole number of units). */
  constructor(fd: number, bytes: number) {
    this.fd = fd;
    this.bytes = bytes;
    this.#bounce = Mapping.map(bytes, { prot: Prot.READ | Prot.WRITE, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    this.#view = this.#bounce.bytes();
  }

  /** Reads [offset, offset+length) of the file (length ≤ bytes) into the buffer; returns its address. */
  read(offset: number, length: number): number {
    for (let done = 0; done < length; ) {
      const n = readSync(this.fd, this.#view, done, length - done, offset + done);
      if (n === 0) throw new RangeError(`the snapshot's memory file ended at ${offset + done} (truncated while restoring?)`);
      done += n;
    }
    return this.#bounce.address;
  }

  close(): void {
    this.#bounce.unmap();
  }
}

/** Bounce buffers of 2 MiB: a 4 KiB run of up to 512 units, or one 2 MiB huge page, per copy. Larger units copy from the mapping. */
export const READER_BYTES = 2 ** 21;
export const readerFor = (fd: number, unit: number): FileReader | undefined => (unit <= READER_BYTES ? new FileReader(fd, READER_BYTES) : undefined);

export interface PlaceTarget {
  readonly uffd: Userfaultfd;
  readonly mode: PlaceMode;
  /** Host address of the guest memory's first byte (registered). */
  readonly regionStart: number;
  /** Host address of the snapshot file's read-only mapping (copy mode). */
  readonly fileStart: number;
  /** Copy from the file read into this thread's bounce buffer instead of from fileStart (see FileReader). */
  readonly reader?: FileReader | undefined;
  readonly unit: number;
  /** Zero pages exist for this memory (not hugetlb). */
  readonly zeropage: boolean;
  readonly data: UnitMap;
  readonly placed: UnitMap;
  readonly counters: Float64Array;
}

/**
 * Places the units of [first, first+count) that are not placed yet. Returns false if the
 * kernel stopped with EAGAIN at a unit no one had placed (the mm is changing: the caller
 * defers, or waits, and calls again); true once every unit of the range is placed or not
 * to be placed (holes in continue mode).
 */
export function placeRange(t: PlaceTarget, first: number, count: number, by: PlacedBy): boolean {
  const end = first + count;
  let u = first;
  while (u < end) {
    if (t.placed.has(u) || (t.mode === 'continue' && !t.data.has(u))) {
      u++;
      continue;
    }
    const isData = t.data.has(u);
    let n = 1;
    while (u + n < end && !t.placed.has(u + n) && t.data.has(u + n) === isData) n++;
    const done = placeRun(t, u, n, isData, by);
    if (done < 0) return false;
    u += done;
  }
  return true;
}

/** One run of n units of one kind: returns the units it got through (placed, or found placed), or -1 on a bare EAGAIN. */
function placeRun(t: PlaceTarget, u: number, n: number, isData: boolean, by: PlacedBy): number {
  const dst = hva(t.regionStart + u * t.unit);
  const length = n * t.unit;
  let r: FillResult;
  let kind: number;
  try {
    t.counters[Counter.IOCTLS]!++;
    if (t.mode === 'continue') {
      r = t.uffd.continue(dst, length);
      kind = Counter.CONTINUED;
    } else if (isData || !t.zeropage) {
      if (t.reader) {
        const len = Math.min(length, t.reader.bytes);
        r = t.uffd.copy(dst, hva(t.reader.read(u * t.unit, len)), len);
      } else r = t.uffd.copy(dst, hva(t.fileStart + u * t.unit), length);
      kind = isData ? Counter.COPIED : Counter.ZEROED;
    } else {
      r = t.uffd.zeropage(dst, length);
      kind = Counter.ZEROED;
    }
  } catch (e) {
    if (!isSystemError(e, 'EEXIST')) throw e;
    // Placed by another path (a fault raced the background fill): done, and whoever
    // waits on it is woken by the placement that won, or by this wake.
    t.counters[Counter.EXISTS]!++;
    t.uffd.wake(dst, t.unit);
    t.placed.set(u);
    return 1;
  }
  const units = Math.floor(r.bytes / t.unit);
  t.placed.setRange(u, units);
  t.counters[kind]! += units;
  t.counters[by]! += units;
  if (r.complete) return units;
  // Stopped short: at a unit already there (the next call gets EEXIST for it), or a bare
  // EAGAIN with nothing done while the mm changes.
  return units > 0 ? units : -1;
}
