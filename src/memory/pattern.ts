/**
 * The page pattern: the first 8 bytes of the page at (guest) address `a` hold `a ^ seed`
 * (little-endian u64). A page mapped at the wrong place, or never filled, shows. The host
 * writes it (fillPattern: the UFFDIO_COPY source for MISSING, the alias for MINOR); the
 * bench guest program and toucher threads check it (holdsPattern, patternMismatches).
 * The one definition: bench's guest program, its thread toucher and the tests use these.
 */

/** The pattern page `address` holds: address ^ seed. */
export function patternValue(address: number, seed: bigint): bigint {
  return BigInt.asUintN(64, BigInt(address) ^ seed);
}

/** A 32-bit seed as the 64-bit pattern seed: the 32 bits in both halves. */
export function seed64(seed: number): bigint {
  const s = BigInt(seed >>> 0);
  return (s << 32n) | s;
}

/** The seed as two u32 halves, for filling and checking without a BigInt per page. */
function seedHalves(seed: bigint): [lo: number, hi: number] {
  const s = BigInt.asUintN(64, seed);
  return [Number(s & 0xffff_ffffn), Number(s >> 32n)];
}

const lo32 = (a: number) => a % 2 ** 32;
const hi32 = (a: number) => Math.floor(a / 2 ** 32);

/**
 * Writes the pattern into host memory `bytes` that backs (guest) addresses starting at
 * `guestAddress`: the first 8 bytes of every `stride` bytes hold (their address) ^ seed.
 */
export function fillPattern(bytes: Uint8Array, guestAddress: number, seed: bigint, stride = 4096): void {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4));
  const [seedLo, seedHi] = seedHalves(seed);
  const step = stride / 4;
  for (let w = 0, a = guestAddress; w + 1 < words.length; w += step, a += stride) {
    words[w] = (lo32(a) ^ seedLo) >>> 0;
    words[w + 1] = (hi32(a) ^ seedHi) >>> 0;
  }
}

// holdsPattern runs once per page touched: the seed's halves are kept for the next call.
let lastSeed = 0n;
let [heldLo, heldHi] = seedHalves(0n);

/** Whether the 8 bytes at `off` of `view` hold the pattern of (guest) address `address`. */
export function holdsPattern(view: DataView, off: number, address: number, seed: bigint): boolean {
  if (seed !== lastSeed) [lastSeed, [heldLo, heldHi]] = [seed, seedHalves(seed)];
  return view.getUint32(off, true) === (lo32(address) ^ heldLo) >>> 0 && view.getUint32(off + 4, true) === (hi32(address) ^ heldHi) >>> 0;
}

/**
 * Addresses of the pages of `bytes` (backing memory from `guestAddress`) whose first 8
 * bytes do not hold the pattern (at most `limit` of them): the host-side check after a run.
 */
export function patternMismatches(bytes: Uint8Array, guestAddress: number, seed: bigint, stride = 4096, limit = 16): number[] {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4));
  const [seedLo, seedHi] = seedHalves(seed);
  const step = stride / 4;
  const out: number[] = [];
  for (let w = 0, a = guestAddress; w + 1 < words.length && out.length < limit; w += step, a += stride) {
    if (words[w] !== (lo32(a) ^ seedLo) >>> 0 || words[w + 1] !== (hi32(a) ^ seedHi) >>> 0) out.push(a);
  }
  return out;
}
