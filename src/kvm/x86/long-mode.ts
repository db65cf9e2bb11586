/**
 * The special registers of a vCPU that starts directly in 64-bit mode, as the selftests'
 * vcpu_init_sregs() sets them, minus what our guests do not use: no SSE (so no
 * CR4.OSFXSR), no XSAVE (no CR4.OSXSAVE, no XCR0), no NX (no EFER.NXE).
 */
import { code64Segment, data64Segment, GDT_LIMIT, IDT_LIMIT, tss64Segment, unusableSegment } from './descriptors.js';
import type { Regs, Sregs } from './regs.js';

export const Cr0 = {
  /** Protected mode. */
  PE: 1n << 0n,
  /** Monitor coprocessor: WAIT honours TS. */
  MP: 1n << 1n,
  /** Extension type: hardwired to 1 on every CPU since the 486. */
  ET: 1n << 4n,
  /** Native x87 error reporting; VMX requires it set. */
  NE: 1n << 5n,
  /** Supervisor writes honour read-only pages. */
  WP: 1n << 16n,
  /** Alignment checks possible (only with RFLAGS.AC, which stays clear). */
  AM: 1n << 18n,
  /** Paging. */
  PG: 1n << 31n,
} as const;

export const Cr4 = {
  /** Physical address extension: long mode requires it. */
  PAE: 1n << 5n,
} as const;

export const Efer = {
  /** Long mode enable. */
  LME: 1n << 8n,
  /** Long mode active: KVM_SET_SREGS loads the state the CPU would have after enabling paging. */
  LMA: 1n << 10n,
} as const;

/** RFLAGS bit 1 is reserved and always 1; interrupts (IF) stay off. */
export const RFLAGS_FIXED = 0x2n;

export const LONG_MODE_CR0 = Cr0.PE | Cr0.MP | Cr0.ET | Cr0.NE | Cr0.WP | Cr0.AM | Cr0.PG;
export const LONG_MODE_CR4 = Cr4.PAE;
export const LONG_MODE_EFER = Efer.LME | Efer.LMA;

/** Where the descriptor tables and the page tables of a long-mode guest are (guest addresses; identity-mapped). */
export interface LongModeTables {
  /** The PML4 (CR3). */
  readonly pml4: number;
  readonly gdt: number;
  readonly idt: number;
  readonly tss: number;
}

/**
 * `current` (from KVM_GET_SREGS: keeps apic_base and the interrupt bitmap as KVM has them)
 * switched to 64-bit ring 0 with paging through `tables`.
 */
export function longModeSregs(current: Sregs, tables: LongModeTables): Sregs {
  const data = data64Segment();
  return {
    ...current,
    cs: code64Segment(),
    // The selftests load DS, ES and GS and leave SS and FS at their reset values; a flat
    // data segment everywhere is what VMMs (QEMU, Firecracker) do and what an IRET expects.
    ds: data,
    es: { ...data },
    fs: { ...data },
    gs: { ...data },
    ss: { ...data },
    tr: tss64Segment(tables.tss),
    ldt: unusableSegment(),
    gdt: { base: BigInt(tables.gdt), limit: GDT_LIMIT },
    idt: { base: BigInt(tables.idt), limit: IDT_LIMIT },
    cr0: LONG_MODE_CR0,
    cr2: 0n,
    cr3: BigInt(tables.pml4),
    cr4: LONG_MODE_CR4,
    cr8: 0n,
    efer: LONG_MODE_EFER,
  };
}

/** General-purpose registers for an entry at `rip` with stack `rsp`: everything else zero. */
export function entryRegs(rip: number, rsp: number, args: Partial<Regs> = {}): Regs {
  return {
    rax: 0n,
    rbx: 0n,
    rcx: 0n,
    rdx: 0n,
    rsi: 0n,
    rdi: 0n,
    rsp: BigInt(rsp),
    rbp: 0n,
    r8: 0n,
    r9: 0n,
    r10: 0n,
    r11: 0n,
    r12: 0n,
    r13: 0n,
    r14: 0n,
    r15: 0n,
    ...args,
    rip: BigInt(rip),
    rflags: RFLAGS_FIXED,
  };
}
