/**
 * Which pages of the destination's memory hold the source's latest bytes, shared between
 * the main thread (which places arriving pages) and the fault reader (which decides
 * whether a fault can be resolved at once or must wait for the network). One byte per
 * page, read and written with Atomics: a page becomes PRESENT only after its bytes are in
 * place, and never goes back.
 */
import { nextNonZeroByte } from './stale-set.js';

export const PageState = {
  /** Dirty at switchover: the source has newer bytes; a vCPU touching it must wait. */
  STALE: 0,
  /** The bytes are the source's latest (precopied and clean, or arrived in post-copy). */
  PRESENT: 1,
} as const;

export class PageStates {
  readonly buffer: SharedArrayBuffer;
  readonly #states: Uint8Array;

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
   * Marks every page PRESENT but those whose bit is set in `stale` (one bit per page, LSB
   * first); returns how many are stale. Called before any reader looks (the guest has not
   * resumed), so the bulk fill needs no atomics; it runs in the blackout, so it is a fill
   * and a walk of the set bits, not a walk of every page.
   */
  setFromStaleBitmap(stale: Uint8Array): number {
    this.#states.fill(PageState.PRESENT);
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
