/**
 * Pages as bits, at the unit pages move in: KVM logs dirty 4 KiB pages, a hugetlb backing
 * moves 2 MiB pages, so a unit is dirty when any 4 KiB page in it is.
 */
export class UnitBitmap {
  readonly units: number;
  readonly bytes: Uint8Array;

  constructor(units: number, bytes?: Uint8Array) {
    this.units = units;
    this.bytes = bytes ?? new Uint8Array(Math.ceil(units / 8));
  }

  /** The units with a dirty 4 KiB page in `words` (KVM's dirty bitmap), `pagesPerUnit` pages each. */
  static fromDirtyLog(words: BigUint64Array, pages: number, pagesPerUnit: number): UnitBitmap {
    const map = new UnitBitmap(Math.ceil(pages / pagesPerUnit));
    const halves = new Uint32Array(words.buffer, words.byteOffset, words.length * 2);
    for (let h = 0; h < halves.length; h++) {
      let v = halves[h]!;
      while (v !== 0) {
        const bit = 31 - Math.clz32(v & -v);
        v &= v - 1;
        const page = h * 32 + bit;
        if (page < pages) map.set(Math.floor(page / pagesPerUnit));
      }
    }
    return map;
  }

  has(u: number): boolean {
    return ((this.bytes[u >> 3]! >> (u & 7)) & 1) === 1;
  }

  set(u: number): void {
    this.bytes[u >> 3]! |= 1 << (u & 7);
  }

  clear(u: number): void {
    this.bytes[u >> 3]! &= ~(1 << (u & 7));
  }

  count(): number {
    let n = 0;
    for (let i = 0; i < this.bytes.length; i++) {
      let v = this.bytes[i]!;
      while (v !== 0) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }

  /** The next set unit at or after `from`, or -1. */
  next(from: number): number {
    for (let u = from; u < this.units; u++) {
      if ((u & 7) === 0 && this.bytes[u >> 3] === 0) {
        u += 7;
        continue;
      }
      if (this.has(u)) return u;
    }
    return -1;
  }

  /** Runs of set units, each at most `max` long: [first, count]. */
  *runs(max: number): Generator<[number, number]> {
    for (let u = this.next(0); u >= 0; ) {
      let n = 1;
      while (n < max && u + n < this.units && this.has(u + n)) n++;
      yield [u, n];
      u = this.next(u + n);
    }
  }
}
