/**
 * `postcopy serve --record FILE`: the units each peer first faulted on, in order, in terms
 * of the memory file (unit = offset / unit size), so a record is independent of the host
 * addresses, which change with every restore. One peer (one connection: one Firecracker
 * restore) is one run of the record (working-set.ts): when it goes, its first faults are
 * merged into the file, as `snapshot restore --record` merges a restore's. A peer that
 * faulted on nothing adds no run (it would only lower every unit's share of the runs).
 */
import { type RecordLayout, type WorkingSet, mergeWorkingSet, writeWorkingSet } from '../snapshot/working-set.js';
import { UnitMap } from '../snapshot/unit-map.js';

/** One peer's first faults, by unit of the memory file. */
export class FirstFaults {
  readonly #seen: UnitMap;
  readonly order: number[] = [];

  constructor(units: number) {
    this.#seen = new UnitMap(units);
  }

  note(unit: number): void {
    if (this.#seen.has(unit)) return;
    this.#seen.set(unit);
    this.order.push(unit);
  }
}

/** The record file, owned by the server while it runs: each run merged into what it held. */
export class RecordFile {
  readonly path: string;
  readonly #layout: RecordLayout;
  #current: WorkingSet | undefined;

  /** `previous`: the file as read (and checked) at start, if it existed. */
  constructor(path: string, layout: RecordLayout, previous: WorkingSet | undefined) {
    this.path = path;
    this.#layout = layout;
    this.#current = previous;
  }

  /** Merges one run and writes the file (atomically: a rename). Returns the record as written. */
  add(run: FirstFaults): WorkingSet {
    const merged = mergeWorkingSet(this.#current, this.#layout, run.order);
    writeWorkingSet(this.path, merged);
    this.#current = merged;
    return merged;
  }
}
