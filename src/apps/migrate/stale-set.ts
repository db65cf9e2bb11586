/** Bytes compared at once when looking for set bits: 2048 pages a compare. */
const CHUNK = 256;
const ZERO = new Uint8Array(CHUNK);

/**
 * The index of the first non-zero byte of `bytes` at or after `from`, or -1. The blackout
 * runs this once over the whole bitmap, in code the JIT has not seen yet: a byte loop there
 * costs ~50 ns a byte (6 ms for 4 GiB of guest), so zero stretches are skipped with a
 * native compare, and the blackout's work follows the dirty pages, not the memory size.
 */
export function nextNonZeroByte(bytes: Uint8Array, from: number): number {
  let i = from;
  for (; i < bytes.length && i % CHUNK !== 0; i++) if (bytes[i] !== 0) return i;
  for (; i < bytes.length; i += CHUNK) {
    const end = Math.min(i + CHUNK, bytes.length);
    if (Buffer.compare(bytes.subarray(i, end), ZERO.subarray(0, end - i)) === 0) continue;
    for (let j = i; j < end; j++) if (bytes[j] !== 0) return j;
  }
  return -1;
}

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

  /** Sets every unit set in `other` (same size). */
  or(other: UnitBitmap): void {
    if (other.units !== this.units) throw new RangeError(`or: a bitmap of ${other.units} units into one of ${this.units}`);
    const a = this.bytes;
    const b = other.bytes;
    for (let i = nextNonZeroByte(b, 0); i >= 0; i = nextNonZeroByte(b, i + 1)) a[i]! |= b[i]!;
  }

  count(): number {
    let n = 0;
    for (let i = nextNonZeroByte(this.bytes, 0); i >= 0; i = nextNonZeroByte(this.bytes, i + 1)) {
      for (let v = this.bytes[i]!; v !== 0; v &= v - 1) n++;
    }
    return n;
  }

  /** The next set unit at or after `from`, or -1. */
  next(from: number): number {
    if (from >= this.units) return -1;
    const first = this.bytes[from >> 3]! >> (from & 7);
    if (first !== 0) {
      const u = from + 31 - Math.clz32(first & -first);
      return u < this.units ? u : -1;
    }
    const i = nextNonZeroByte(this.bytes, (from >> 3) + 1);
    if (i < 0) return -1;
    const v = this.bytes[i]!;
    const u = i * 8 + 31 - Math.clz32(v & -v);
    return u < this.units ? u : -1;
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
