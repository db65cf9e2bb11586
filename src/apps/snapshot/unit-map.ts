/**
 * A bit per unit of guest memory (data or hole in the snapshot file; placed or not during a
 * restore), with the walk every user needs: the runs of consecutive units that have a bit
 * set. Over a SharedArrayBuffer when threads share it (the restore's fault reader marks
 * the units it places; the main thread reads).
 */
const POPCOUNT = Uint8Array.from({ length: 256 }, (_, b) => {
  let n = 0;
  for (let x = b; x !== 0; x &= x - 1) n++;
  return n;
});

export class UnitMap {
  readonly units: number;
  readonly bits: Uint8Array;

  constructor(units: number, bits?: Uint8Array) {
    this.units = units;
    this.bits = bits ?? new Uint8Array(Math.ceil(units / 8));
    if (this.bits.byteLength !== Math.ceil(units / 8)) throw new RangeError(`a map of ${units} units needs ${Math.ceil(units / 8)} bytes, got ${this.bits.byteLength}`);
  }

  static shared(units: number): UnitMap {
    return new UnitMap(units, new Uint8Array(new SharedArrayBuffer(Math.ceil(units / 8))));
  }

  has(u: number): boolean {
    return (this.bits[u >> 3]! & (1 << (u & 7))) !== 0;
  }

  /** Sets bit u; atomically, so threads setting neighbours' bits lose none. */
  set(u: number): void {
    if (this.bits.buffer instanceof SharedArrayBuffer) Atomics.or(this.bits, u >> 3, 1 << (u & 7));
    else this.bits[u >> 3]! |= 1 << (u & 7);
  }

  /** Sets [first, first+count): whole bytes at once in the middle (a GiB placed eagerly is 32 Ki stores, not 256 Ki). */
  setRange(first: number, count: number): void {
    const end = first + count;
    let u = first;
    for (; u < end && (u & 7) !== 0; u++) this.set(u);
    const shared = this.bits.buffer instanceof SharedArrayBuffer;
    for (; u + 8 <= end; u += 8) {
      if (shared) Atomics.store(this.bits, u >> 3, 0xff);
      else this.bits[u >> 3] = 0xff;
    }
    for (; u < end; u++) this.set(u);
  }

  /** Bits set, a byte at a time (the map of a 4 GiB snapshot is 128 KiB: read at open). */
  count(): number {
    let n = 0;
    const full = this.units >> 3;
    for (let i = 0; i < full; i++) n += POPCOUNT[this.bits[i]!]!;
    for (let u = full * 8; u < this.units; u++) if (this.has(u)) n++;
    return n;
  }

  /** Calls fn(first, count) for every run of units within [from, to) whose bit is `value`. */
  runs(value: boolean, fn: (first: number, count: number) => void, from = 0, to = this.units): void {
    let start = -1;
    for (let u = from; u < to; u++) {
      if (this.has(u) === value) {
        if (start < 0) start = u;
      } else if (start >= 0) {
        fn(start, u - start);
        start = -1;
      }
    }
    if (start >= 0) fn(start, to - start);
  }

  toBase64(): string {
    return Buffer.from(this.bits.buffer, this.bits.byteOffset, this.bits.byteLength).toString('base64');
  }

  /** Undefined when the text is not base64 of the right length. */
  static fromBase64(units: number, text: string): UnitMap | undefined {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
    const b = Buffer.from(text, 'base64');
    if (b.byteLength !== Math.ceil(units / 8)) return undefined;
    return new UnitMap(units, new Uint8Array(b));
  }
}
