/**
 * Which pages of the destination's memory hold the source's latest bytes, shared between
 * the main thread (which places arriving pages) and the fault reader (which decides
 * whether a fault can be resolved at once or must wait for the network). One byte per
 * page, read and written with Atomics: a page becomes PRESENT only after its bytes are in
 * place, and never goes back.
 */
import { InvalidArgumentError } from '../../errors.js';
import { nextNonZeroByte } from './stale-set.js';

export const PageState = {
  /**
   * The bytes are the source's latest (precopied and clean, or arrived in post-copy).
   * Zero, so that a new table is all PRESENT without a fill: filling a SharedArrayBuffer
   * goes element by element in V8 (13 ms for 4 GiB of guest, inside the blackout).
   */
  PRESENT: 0,
  /** Dirty at switchover: the source has newer bytes; a vCPU touching it must wait. */
  STALE: 1,
} as const;

export class PageStates {
  readonly buffer: SharedArrayBuffer;
  readonly #states: Uint8Array;
  #marked = false;

  constructor(pagesOrBuffer: number | SharedArrayBuffer) {
    this.buffer = typeof pagesOrBuffer === 'number' ? new SharedArrayBuffer(pagesOrBuffer) : pagesOrBuffer;
    this.#states = new Uint8Array(this.buffer);
  }

  get pages(): number {
    return this.#states.length;
  }

  present(page: number): boolean {
    return Atomics.load(this.#states, page) === PageState.PRESENT;
  }

  markPresent(page: number): void {
    Atomics.store(this.#states, page, PageState.PRESENT);
  }

  /**
   * Marks the pages whose bit is set in `stale` (one bit per page, LSB first) STALE, on a
   * table that is all PRESENT (new); returns how many. It runs in the blackout, so it walks
   * the set bits only.
   */
  setFromStaleBitmap(stale: Uint8Array): number {
    if (this.#marked) throw new InvalidArgumentError('setFromStaleBitmap: the stale set is marked once, on a new table');
    this.#marked = true;
    let count = 0;
    for (let byte = nextNonZeroByte(stale, 0); byte >= 0; byte = nextNonZeroByte(stale, byte + 1)) {
      let v = stale[byte]!;
      while (v !== 0) {
        const bit = 31 - Math.clz32(v & -v);
        v &= v - 1;
        const p = byte * 8 + bit;
        if (p >= this.#states.length) break;
        Atomics.store(this.#states, p, PageState.STALE);
        count++;
      }
    }
    return count;
  }
}
