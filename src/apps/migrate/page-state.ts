/**
 * Which pages of the destination's memory hold the source's latest bytes, shared between
 * the main thread (which places arriving pages) and the fault reader (which decides
 * whether a fault can be resolved at once or must wait for the network). One byte per
 * page, read and written with Atomics: a page becomes PRESENT only after its bytes are in
 * place, and never goes back.
 */
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

  /** Marks every page PRESENT but those whose bit is set in `stale` (one bit per page, LSB first). */
  setFromStaleBitmap(stale: Uint8Array): number {
    let count = 0;
    for (let p = 0; p < this.#states.length; p++) {
      const isStale = (stale[p >> 3]! >> (p & 7)) & 1;
      Atomics.store(this.#states, p, isStale ? PageState.STALE : PageState.PRESENT);
      count += isStale;
    }
    return count;
  }
}
