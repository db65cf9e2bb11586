/**
 * The "system" memory of a guest: code, descriptor tables, stacks and page tables, in one
 * slot that the host writes directly and never registers with userfaultfd (memstress's
 * slot 0). Its layout, in 4 KiB pages from the slot's start:
 *
 *   GDT | IDT | TSS | control | code (program) | stacks (STACK_PAGES per vCPU) | page tables
 *
 * rounded up to 2 MiB: the page tables map in 2 MiB pages, and a slot that fills its
 * large pages lets KVM map it with large pages too.
 */
import { InvalidArgumentError } from '../../errors.js';
import { formatRange } from '../../util/format.js';
import { GDT_ENTRIES, code64Segment, data64Segment, gdtDescriptor, idtGate, IDT_VECTORS, tss64Segment } from '../x86/descriptors.js';
import { type IdentityRange, LARGE_PAGE_SIZE, PAGE_SIZE, buildIdentityMap, identityMapPages } from '../x86/page-tables.js';
import type { LongModeTables } from '../x86/long-mode.js';
import type { GuestProgram } from './program.js';

/** Stack pages per vCPU: our programs use none but the exception frame (and room for growth). */
export const STACK_PAGES = 2;

/** Where everything is, as guest addresses (identity-mapped: also virtual addresses). */
export interface SystemLayout extends LongModeTables {
  /** The slot's guest-physical start and size. */
  readonly guestAddress: number;
  readonly size: number;
  /**
   * A page the host writes and the guest reads: word 0 is the pause request of programs
   * that run until told (see migrate-program.ts). Never written by the guest.
   */
  readonly control: number;
  /** Where the program's code starts, and its entry point. */
  readonly code: number;
  readonly entry: number;
  /** Initial RSP of each vCPU (top of its stack), by vCPU index. */
  readonly stackTops: readonly number[];
  /** Page-table pages used. */
  readonly pageTablePages: number;
}

const pagesFor = (bytes: number) => Math.ceil(bytes / PAGE_SIZE);

function fixedPages(program: GuestProgram, vcpus: number): number {
  return 4 + pagesFor(program.code.length) + vcpus * STACK_PAGES;
}

/**
 * The size of the system memory at `guestAddress` for `program` on `vcpus` vCPUs whose
 * page tables map `ranges` (the other slots) and the system memory itself.
 */
export function systemImageSize(guestAddress: number, program: GuestProgram, vcpus: number, ranges: readonly IdentityRange[]): number {
  // The page tables map the system memory too, so its size depends on itself: grow until it fits.
  for (let size = LARGE_PAGE_SIZE; ; size += LARGE_PAGE_SIZE) {
    const tables = identityMapPages([...ranges, { start: guestAddress, size }]);
    if ((fixedPages(program, vcpus) + tables) * PAGE_SIZE <= size) return size;
  }
}

/**
 * Writes the system image into `bytes` (the host view of the whole system slot, zeroed),
 * which the guest sees at `guestAddress`. `physicalBits` is the guest's MAXPHYADDR.
 */
export function buildSystemImage(
  bytes: Uint8Array,
  guestAddress: number,
  options: { program: GuestProgram; vcpus: number; ranges: readonly IdentityRange[]; physicalBits: number },
): SystemLayout {
  const { program, vcpus, ranges, physicalBits } = options;
  const size = bytes.length;
  if (guestAddress % LARGE_PAGE_SIZE !== 0 || size % LARGE_PAGE_SIZE !== 0) {
    throw new InvalidArgumentError(`system memory ${formatRange(guestAddress, size)} must be aligned to 2 MiB and a multiple of it`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let next = 0; // offset of the next free page
  const alloc = (pages: number): number => {
    const at = next;
    next += pages * PAGE_SIZE;
    if (next > size) throw new InvalidArgumentError(`system memory ${formatRange(guestAddress, size)} is too small (use systemImageSize)`);
    return at;
  };
  const write64 = (offset: number, value: bigint) => view.setBigUint64(offset, value, true);

  // GDT: null, code, data, TSS (16 bytes). Only consulted when a selector is reloaded.
  const gdt = alloc(1);
  const idt = alloc(1);
  const tss = alloc(1);
  const control = alloc(1);
  [code64Segment(), data64Segment(), tss64Segment(guestAddress + tss)].forEach((seg) => {
    gdtDescriptor(seg).forEach((q, i) => write64(gdt + seg.selector + i * 8, q));
  });
  if ((tss64Segment(0).selector >> 3) + 2 !== GDT_ENTRIES) throw new Error('GDT layout and GDT_ENTRIES disagree');

  // The program, and an IDT whose gates point at its exception stubs.
  const code = alloc(pagesFor(program.code.length));
  bytes.set(program.code, code);
  for (let v = 0; v < IDT_VECTORS; v++) {
    const handler = guestAddress + code + program.symbols.exception_stubs + v * program.exceptionStubStride;
    idtGate(handler).forEach((q, i) => write64(idt + v * 16 + i * 8, q));
  }
  // The TSS stays zero: no privilege changes, no IST stacks, and an I/O bitmap base of 0
  // is never used at CPL 0.

  const stackTops: number[] = [];
  for (let i = 0; i < vcpus; i++) stackTops.push(guestAddress + alloc(STACK_PAGES) + STACK_PAGES * PAGE_SIZE);

  const firstTable = next;
  const pml4 = buildIdentityMap(
    {
      allocPage: () => guestAddress + alloc(1),
      writeEntry: (table, index, value) => write64(table - guestAddress + index * 8, value),
    },
    [{ start: guestAddress, size }, ...ranges],
    physicalBits,
  );

  return {
    guestAddress,
    size,
    gdt: guestAddress + gdt,
    idt: guestAddress + idt,
    tss: guestAddress + tss,
    control: guestAddress + control,
    pml4,
    code: guestAddress + code,
    entry: guestAddress + code + program.symbols.entry,
    stackTops,
    pageTablePages: (next - firstTable) / PAGE_SIZE,
  };
}
