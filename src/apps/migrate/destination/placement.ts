/**
 * Where arriving pages go on the destination, and the page states the fault reader reads.
 *
 * Precopy: MINOR writes through the alias (never registered); MISSING writes the guest's
 * own mapping, which is registered already, so a page's first bytes go in with
 * UFFDIO_COPY (a store to an absent page would fault into our own reader) and later
 * rounds overwrite it in place.
 *
 * Post-copy: each stale page is placed once, in runs: one UFFDIO_CONTINUE (MINOR, after
 * writing the bytes through the alias) or UFFDIO_COPY straight from the received bytes
 * (MISSING) per run of pages not yet present, which also wakes whoever waits on them. A
 * page already present is never written again: the guest may have written it since.
 */
import { hva } from '../../../address.js';
import type { MigratableGuest } from '../../../guest/guest.js';
import { MapFlag } from '../../../memory/constants.js';
import { Mapping } from '../../../memory/mapping.js';
import { native } from '../../../native/binding.js';
import { fillAll } from '../../../uffd/fill.js';
import type { Userfaultfd } from '../../../uffd/userfaultfd.js';
import { PageStates } from '../page-state.js';
import type { MigrationMode } from '../protocol.js';
import { UnitBitmap } from '../stale-set.js';

export class PagePlacer {
  readonly mode: MigrationMode;
  readonly unit: number;
  readonly units: number;
  readonly states: PageStates;
  readonly #guest: MigratableGuest;
  readonly #uffd: Userfaultfd;
  readonly #primary: number;
  /** Where arriving bytes are written: the alias (MINOR) or the guest's own mapping (MISSING). */
  readonly #fill: Uint8Array;
  /** MISSING: which pages of the (registered) guest mapping hold bytes; all of them once populated. */
  readonly #populated: Uint8Array;
  /** A page of zeros to UFFDIO_COPY from (MISSING, memory not populated), made when first needed. */
  #zeros: Mapping | undefined;
  /** Stale pages not yet placed. */
  remaining = 0;
  precopyPages = 0;
  duplicatePages = 0;

  constructor(guest: MigratableGuest, uffd: Userfaultfd, mode: MigrationMode, populated: boolean) {
    this.#guest = guest;
    this.#uffd = uffd;
    this.mode = mode;
    this.unit = guest.unit;
    this.units = guest.shape.size / guest.unit;
    this.states = new PageStates(this.units);
    this.#primary = guest.backing.primary.address;
    this.#fill = (mode === 'minor' ? guest.backing.alias! : guest.backing.primary).bytes();
    this.#populated = new Uint8Array(mode === 'missing' ? this.units : 0).fill(populated ? 1 : 0);
  }

  /** Host address of unit `u` in the guest's (registered) mapping. */
  host(u: number): number {
    return this.#primary + u * this.unit;
  }

  /** A precopy run of pages starting at unit `first`. */
  precopy(first: number, data: Uint8Array): void {
    const n = data.byteLength / this.unit;
    if (this.mode === 'minor') this.#fill.set(data, first * this.unit);
    else {
      for (let i = 0; i < n; i++) {
        const u = first + i;
        const page = data.subarray(i * this.unit, (i + 1) * this.unit);
        if (this.#populated[u]) this.#fill.set(page, u * this.unit);
        else {
          this.#copy(u, native.addressOf(page), 1);
          this.#populated[u] = 1;
        }
      }
    }
    this.precopyPages += n;
  }

  /** A precopy run of `count` zero pages from unit `first` (pages the source never wrote). */
  precopyZero(first: number, count: number): void {
    if (this.mode === 'minor') this.#fill.fill(0, first * this.unit, (first + count) * this.unit);
    else {
      for (let u = first; u < first + count; u++) {
        if (this.#populated[u]) this.#fill.fill(0, u * this.unit, (u + 1) * this.unit);
        else {
          // Unpopulated and registered: only an ioctl may fill it.
          this.#copy(u, (this.#zeros ??= Mapping.map(this.unit, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS })).address, 1);
          this.#populated[u] = 1;
        }
      }
    }
    this.precopyPages += count;
  }

  /**
   * The switchover: marks the stale pages (returns how many) and, for MISSING, drops them so
   * that a worker's touch faults. Runs in the blackout: its work follows the stale pages.
   */
  markStale(stale: Uint8Array): number {
    this.remaining = this.states.setFromStaleBitmap(stale);
    if (this.mode === 'missing') {
      for (const [first, count] of new UnitBitmap(this.units, stale).runs(this.units)) this.#guest.backing.discard(first * this.unit, count * this.unit);
    }
    return this.remaining;
  }

  /**
   * A post-copy run from unit `first`: places the pages not yet present, in runs, and calls
   * `arrived` for each. Returns how many it placed.
   */
  place(first: number, data: Uint8Array, arrived: (u: number) => void): number {
    const unit = this.unit;
    const n = data.byteLength / unit;
    let placed = 0;
    for (let i = 0; i < n; ) {
      if (this.states.present(first + i)) {
        this.duplicatePages++;
        i++;
        continue;
      }
      let j = i + 1;
      while (j < n && !this.states.present(first + j)) j++;
      const run = data.subarray(i * unit, j * unit);
      if (this.mode === 'minor') {
        this.#fill.set(run, (first + i) * unit);
        fillAll((a, _s, len) => this.#uffd.continue(hva(a), len), this.host(first + i), 0, run.byteLength);
      } else {
        this.#copy(first + i, native.addressOf(run), j - i);
      }
      for (let k = i; k < j; k++) {
        this.states.markPresent(first + k);
        arrived(first + k);
      }
      placed += j - i;
      this.remaining -= j - i;
      i = j;
    }
    return placed;
  }

  #copy(u: number, src: number, count: number): void {
    fillAll((a, s, len) => this.#uffd.copy(hva(a), hva(s), len), this.host(u), src, count * this.unit);
  }

  close(): void {
    this.#zeros?.unmap();
    this.#zeros = undefined;
  }
}
