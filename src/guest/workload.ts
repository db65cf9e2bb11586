/**
 * What a guest's workers touch, pass by pass: the one definition the workers, the oracle and
 * the restore's end-of-workload watch all read, so none of them can disagree about which
 * page a (pass, index) position names.
 *
 * - `sweep` (the migrate program): every pass writes every page of the worker's slice, in
 *   order. All memory is the working set.
 * - `working-set`: pass 1 writes every page in order (the guest coming up: all its memory
 *   written once, so a snapshot of it holds data everywhere), then every later pass writes
 *   only a fixed `permille`‰ of the slice, in a scattered order: the i-th access of a pass
 *   is page (i × m) mod P, m coprime with P near P/φ, so two consecutive accesses are never
 *   neighbours and sequential read-ahead has nothing to find (the serverless restore case:
 *   a function touches a tenth of a guest that booted over all of it).
 *
 * Counters follow from that: on pass p, the pages the pass has reached hold p, the ones it
 * has not reached hold p - 1, and (working-set, p ≥ 2) a page outside the set holds 1.
 */
import { InvalidArgumentError } from '../errors.js';

export type Workload = { readonly kind: 'sweep' } | { readonly kind: 'working-set'; readonly permille: number };

export const SWEEP: Workload = { kind: 'sweep' };

/** Checks a working-set size once (‰ of each slice, 1..1000). */
export function workingSet(permille: number): Workload {
  if (!Number.isInteger(permille) || permille < 1 || permille > 1000) {
    throw new InvalidArgumentError(`a working set is 0.1% to 100% of the memory, got ${permille / 10}%`);
  }
  return { kind: 'working-set', permille };
}

export function describeWorkload(w: Workload): string {
  return w.kind === 'sweep' ? 'every page, in order, every pass' : `${w.permille / 10}% of the pages in a scattered order after a first pass over all`;
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** (a × b) mod n for a, b < n, without losing bits: doubles while the product fits in 53 bits (slices up to 94,906,265 pages, 362 GiB), BigInt beyond. */
function mulMod(a: number, b: number, n: number): number {
  return n <= 94_906_265 ? (a * b) % n : Number((BigInt(a) * BigInt(b)) % BigInt(n));
}

/** The workload over one slice of `pages` guest pages. */
export class SlicePlan {
  readonly pages: number;
  readonly workload: Workload;
  /** Pages a pass after the first touches (all of them for a sweep). */
  readonly setPages: number;
  /** The step between two accesses of a working-set pass (1 for a sweep). */
  readonly step: number;
  /** step⁻¹ mod pages: a page's position in the scattered order. */
  readonly #inverse: number;

  constructor(workload: Workload, pages: number) {
    if (!Number.isSafeInteger(pages) || pages < 1) throw new InvalidArgumentError(`a slice needs at least one page, got ${pages}`);
    this.pages = pages;
    this.workload = workload;
    if (workload.kind === 'sweep') {
      this.setPages = pages;
      this.step = 1;
      this.#inverse = 1;
      return;
    }
    this.setPages = Math.max(1, Math.round((pages * workload.permille) / 1000));
    let step = Math.max(1, Math.floor(pages * 0.6180339887498949));
    while (gcd(step, pages) !== 1) step++;
    this.step = step % pages || 1;
    this.#inverse = inverseMod(this.step, pages);
  }

  /** Accesses in pass `pass`. */
  passLength(pass: bigint): number {
    return this.workload.kind === 'sweep' || pass <= 1n ? this.pages : this.setPages;
  }

  /** The page access `index` of pass `pass` writes. */
  page(pass: bigint, index: number): number {
    return this.workload.kind === 'sweep' || pass <= 1n ? index : mulMod(index, this.step, this.pages);
  }

  /** What page `page` must hold when the worker is at (pass, index): its next access. */
  expected(state: { readonly pass: bigint; readonly index: number }, page: number): bigint {
    return BigInt(this.expectedCount(Number(state.pass), state.index, page));
  }

  /** expected() in doubles, for the oracle's loop over every page (passes stay far below 2^53). */
  expectedCount(pass: number, index: number, page: number): number {
    if (this.workload.kind === 'sweep' || pass <= 1) return page < index ? pass : pass - 1;
    const position = mulMod(page, this.#inverse, this.pages);
    if (position >= this.setPages) return 1;
    return position < index ? pass : pass - 1;
  }

  /**
   * The watch that tells, from memory alone, that a worker resumed at `state` has since made
   * one whole pass (touched its whole working set once): the page it writes last on the way
   * and the count it writes there (counters only grow: a value at or past it means done).
   */
  endOfPass(state: { readonly pass: bigint; readonly index: number }): { page: number; value: bigint } {
    const { pass, index } = state;
    if (index === 0) return { page: this.page(pass, this.passLength(pass) - 1), value: pass };
    const next = pass + 1n;
    // Resumed inside the first pass of a working-set guest: the next pass is shorter, so
    // one whole pass since resuming ends with the next one.
    const last = this.passLength(next) === this.passLength(pass) ? index - 1 : this.passLength(next) - 1;
    return { page: this.page(next, last), value: next };
  }
}

function inverseMod(a: number, n: number): number {
  if (n === 1) return 0;
  let [r0, r1] = [BigInt(n), BigInt(a)];
  let [t0, t1] = [0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [t0, t1] = [t1, t0 - q * t1];
  }
  const bn = BigInt(n);
  return Number(((t0 % bn) + bn) % bn);
}
