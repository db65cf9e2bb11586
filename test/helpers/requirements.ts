import { BACKING_INFO, type BackingSourceName } from '../../src/memory/backing.js';
import { hugepagePool, reserveHugepages } from '../../src/memory/hugepages.js';

// Pools this test process grew, and their size before: put back when the process exits,
// whichever test file or suite asked first (suites are defined before any test runs, so
// a per-suite release would empty the pool under a later suite).
const grown = new Map<number, () => void>();
process.on('exit', () => {
  for (const release of grown.values()) release();
});

/**
 * Makes the machine ready for `source` at `bytes` (reserving hugepages when root, released
 * after this test file) and returns why a test must be skipped, or undefined when it can run.
 * A skip reason always says what to do.
 */
export function prepare(source: BackingSourceName, bytes: number): string | undefined {
  const info = BACKING_INFO[source];
  if (!info.hugetlb) return undefined;
  const need = Math.ceil(bytes / info.pageSize);
  if (!hugepagePool(info.pageSize).exists) return `no ${info.pageSize / 2 ** 20} MiB hugepage pool in this kernel`;
  try {
    const r = reserveHugepages(info.pageSize, need);
    if (r.grew && !grown.has(info.pageSize)) grown.set(info.pageSize, r.release);
    if (r.available < need) return `only ${r.available} of ${need} hugepages could be reserved (memory fragmented?)`;
    return undefined;
  } catch (e) {
    return `${(e as Error).message}`;
  }
}

/** A per-page pattern: page p's words hold p and the word index, so a misplaced page shows. */
export function pattern(bytes: number, pageSize: number, seed = 0x5eed): Uint8Array {
  const out = new Uint8Array(bytes);
  const words = new Uint32Array(out.buffer);
  const perPage = pageSize / 4;
  for (let i = 0; i < words.length; i += 2) {
    words[i] = Math.floor(i / perPage);
    words[i + 1] = (seed ^ i) >>> 0;
  }
  return out;
}

/** Touches (reads) one byte in every 4 KiB page of `view`, in order. */
export function touchEachPage(view: Uint8Array, write = false): number {
  let sum = 0;
  for (let off = 0; off < view.length; off += 4096) {
    if (write) view[off] = view[off]!;
    else sum += view[off]!;
  }
  return sum;
}

/** Index of the first byte where `a` and `b` differ, or -1. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}
