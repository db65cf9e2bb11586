/**
 * The page pattern the guest verifies: the first 8 bytes of the guest page at
 * guest-physical address `gpa` hold `gpa ^ seed64`, where seed64 repeats the 32-bit
 * seed in both halves. A page mapped at the wrong place, or not filled, shows. The host
 * writes it with fillPattern (kvm/guest/bench-program.ts); the guest program checks it.
 */
export function seed64(seed: number): bigint {
  const s = BigInt(seed >>> 0);
  return (s << 32n) | s;
}

/** Whether the page at offset `off` of `view` (guest-physical `gpa`) holds its pattern. */
export function holdsPattern(view: DataView, off: number, gpa: number, seed: number): boolean {
  const s = seed >>> 0;
  return view.getUint32(off, true) === (((gpa % 0x1_0000_0000) ^ s) >>> 0) && view.getUint32(off + 4, true) === ((Math.floor(gpa / 0x1_0000_0000) ^ s) >>> 0);
}
