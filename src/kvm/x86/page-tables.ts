/**
 * Identity-mapped 4-level page tables (guest-virtual == guest-physical) built by the host
 * in guest memory it writes directly: PML4 -> PDPT -> PD, the PDs mapping 2 MiB pages
 * (PS bit), like the selftests' __virt_pg_map at PG_LEVEL_2M, or PTs mapping 4 KiB pages
 * where a range asks for them. 2 MiB pages keep the tables small (4 KiB of PD per GiB);
 * 4 KiB pages are what memstress maps test memory with ("4K pages" in the guest mode),
 * and with shadow paging (this host's page-table based KVM) the guest's page size changes
 * what every first touch costs, so a benchmark comparable with the kernel's uses them.
 */
import { InvalidArgumentError } from '../../errors.js';
import { formatRange, hex } from '../../util/format.js';

export const PAGE_SIZE = 4096;
export const LARGE_PAGE_SIZE = 2 * 2 ** 20;
const ENTRIES = 512;

/** x86 PTE bits (the selftests' pte_masks). */
export const Pte = {
  PRESENT: 1n << 0n,
  WRITABLE: 1n << 1n,
  USER: 1n << 2n,
  /** Set in advance: otherwise the first walk makes the CPU (or, with shadow paging, KVM) write it back. */
  ACCESSED: 1n << 5n,
  DIRTY: 1n << 6n,
  /** PS: this PDE maps a 2 MiB page (a PDPTE, 1 GiB). */
  LARGE: 1n << 7n,
} as const;

/** Where page-table pages come from: consecutive 4 KiB pages of guest memory the host can write. */
export interface PageTableArena {
  /** A zeroed 4 KiB page: its guest-physical address. */
  allocPage(): number;
  /** Writes entry `index` of the table at guest-physical `table`. */
  writeEntry(table: number, index: number, value: bigint): void;
}

/** A guest-physical range to map, in 2 MiB pages unless `pageSize` says 4 KiB. */
export interface IdentityRange {
  readonly start: number;
  readonly size: number;
  readonly pageSize?: typeof PAGE_SIZE | typeof LARGE_PAGE_SIZE;
}

/**
 * The page-table pages an identity map of `ranges` needs: the PML4, one PDPT per 512 GiB
 * and one PD per GiB touched. Lets the caller size the memory before building.
 */
export function identityMapPages(ranges: readonly IdentityRange[]): number {
  const pdpts = new Set<number>();
  const pds = new Set<number>();
  const pts = new Set<number>();
  for (const r of ranges) {
    if (r.size <= 0) continue;
    for (let gib = Math.floor(r.start / 2 ** 30); gib <= Math.floor((r.start + r.size - 1) / 2 ** 30); gib++) {
      pds.add(gib);
      pdpts.add(Math.floor(gib / ENTRIES));
    }
    if (r.pageSize === PAGE_SIZE) {
      for (let l = Math.floor(r.start / LARGE_PAGE_SIZE); l <= Math.floor((r.start + r.size - 1) / LARGE_PAGE_SIZE); l++) pts.add(l);
    }
  }
  return 1 + pdpts.size + pds.size + pts.size;
}

/**
 * Builds the identity map of every 2 MiB page that `ranges` touch and returns the PML4's
 * guest-physical address (CR3). `physicalBits` is the guest's MAXPHYADDR: addresses at or
 * above 2^physicalBits would set reserved bits in a PTE, and 4-level paging stops at 2^47.
 */
export function buildIdentityMap(arena: PageTableArena, ranges: readonly IdentityRange[], physicalBits: number): number {
  const limit = 2 ** Math.min(physicalBits, 47);
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.size) || r.start < 0 || r.size < 0 || r.start + r.size > limit) {
      throw new InvalidArgumentError(
        `cannot identity-map ${formatRange(r.start, r.size)}: guest addresses must be below ${hex(limit)} (MAXPHYADDR ${physicalBits}, 4-level paging)`,
      );
    }
  }
  const upper = Pte.PRESENT | Pte.WRITABLE | Pte.ACCESSED;
  const leaf = Pte.PRESENT | Pte.WRITABLE | Pte.ACCESSED | Pte.DIRTY | Pte.LARGE;
  const leaf4k = Pte.PRESENT | Pte.WRITABLE;
  const pml4 = arena.allocPage();
  const pdpts = new Map<number, number>(); // PML4 index -> PDPT gpa
  const pds = new Map<number, number>(); // GiB number -> PD gpa
  const mapped = new Set<number>(); // 2 MiB page numbers
  const pts = new Map<number, number>(); // 2 MiB page number -> PT gpa

  for (const r of ranges) {
    if (r.size === 0) continue;
    const first = Math.floor(r.start / LARGE_PAGE_SIZE);
    const last = Math.floor((r.start + r.size - 1) / LARGE_PAGE_SIZE);
    for (let page = first; page <= last; page++) {
      if (mapped.has(page)) continue;
      mapped.add(page);
      const address = page * LARGE_PAGE_SIZE;
      const gib = Math.floor(page / ENTRIES); // PDPT entry, counted from 0
      const l4 = Math.floor(gib / ENTRIES); // PML4 entry
      let pdpt = pdpts.get(l4);
      if (pdpt === undefined) {
        pdpt = arena.allocPage();
        pdpts.set(l4, pdpt);
        arena.writeEntry(pml4, l4, BigInt(pdpt) | upper);
      }
      let pd = pds.get(gib);
      if (pd === undefined) {
        pd = arena.allocPage();
        pds.set(gib, pd);
        arena.writeEntry(pdpt, gib % ENTRIES, BigInt(pd) | upper);
      }
      if (r.pageSize !== PAGE_SIZE) {
        arena.writeEntry(pd, page % ENTRIES, BigInt(address) | leaf);
        continue;
      }
      // 4 KiB pages: a page table for this 2 MiB, mapping just the range's pages in it.
      let pt = pts.get(page);
      if (pt === undefined) {
        pt = arena.allocPage();
        pts.set(page, pt);
        arena.writeEntry(pd, page % ENTRIES, BigInt(pt) | upper);
      }
      const from = Math.max(r.start, address);
      const to = Math.min(r.start + r.size, address + LARGE_PAGE_SIZE);
      for (let a = from - (from % PAGE_SIZE); a < to; a += PAGE_SIZE) {
        arena.writeEntry(pt, (a - address) / PAGE_SIZE, BigInt(a) | leaf4k);
      }
    }
  }
  return pml4;
}
