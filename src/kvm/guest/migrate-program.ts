/**
 * The guest program of `postcopy migrate`: the migration workload and the oracle's ground
 * truth. Each vCPU loops over its slice for ever; on pass p it checks that each page's
 * counter (its first 8 bytes) holds p - 1 (what the last pass wrote) and stores p. So at
 * any moment the pages before the vCPU's position hold the pass count and the pages from
 * it on hold one less: a lost write (a page the destination got stale) shows up as a
 * counter behind, both to the guest (the next pass's check) and to the host's oracle.
 *
 * It also times its own progress: the TSC after every access, and the longest gap between
 * two accesses (where the guest was stalled: a fault, a pause, a migration's blackout).
 *
 * Between two accesses it looks at the pause word (SystemLayout.control); when the host
 * sets it, the vCPU exits at `OUT $0x12` (GuestPort.PAUSE) and its whole state is in its
 * registers, which is what a migration carries. Run again, it re-reads the word and goes on.
 *
 * Registers in (MigrateArgs): RDI slice base, RSI pages, RDX stride, RCX the pause
 * word's address, R8 the first pass (1: memory starts zeroed).
 * Registers while running (MigrateState): R8 pass, R9 next page in the pass, R10
 * mismatches, R11 first mismatching address, R13 TSC of the last access, R14 the longest
 * gap in TSC ticks, R15 the TSC at the end of that gap. RBP stride, R12 pause word.
 */
import type { GuestAddress } from '../../address.js';
import type { Regs } from '../x86/regs.js';
import { EXCEPTION_STUBS_LISTING, type GuestProgram, checkSlice, hexBytes } from './program.js';

export const MIGRATE_LISTING = String.raw`
# postcopy migrate guest. GNU as, AT&T syntax. Position-independent.
        .text
        .code64
        .set    PORT_EXCEPTION, 0x11
        .set    PORT_PAUSE, 0x12

# rdtsc into rax (64 bits); clobbers rdx.
        .macro  tsc
        rdtsc
        shl     $32, %rdx
        or      %rdx, %rax
        .endm

        .globl  entry
entry:
        mov     %rdx, %rbp              # rbp: stride
        mov     %rcx, %r12              # r12: address of the pause word
        xor     %r9d, %r9d              # r9: index of the next page in this pass
        xor     %r10d, %r10d            # r10: mismatches
        xor     %r11d, %r11d            # r11: first mismatching address
        xor     %r14d, %r14d            # r14: longest gap between two accesses (TSC ticks)
        xor     %r15d, %r15d            # r15: TSC at the end of that gap
        tsc
        mov     %rax, %r13              # r13: TSC of the last access
        test    %rsi, %rsi
        jz      pause

        .globl  loop
loop:
        cmpq    $0, (%r12)              # the host asks for a pause
        jne     pause
        mov     %r9, %rax
        imul    %rbp, %rax
        lea     (%rdi,%rax), %rbx       # rbx: the page's address
        lea     -1(%r8), %rcx           # rcx: what the last pass wrote
        cmp     (%rbx), %rcx
        je      1f
        inc     %r10                    # a lost or stray write
        cmp     $1, %r10
        jne     1f
        mov     %rbx, %r11
1:      mov     %r8, (%rbx)             # this pass's count
        tsc
        mov     %rax, %rcx
        sub     %r13, %rcx              # rcx: ticks since the last access
        mov     %rax, %r13
        cmp     %r14, %rcx
        jbe     2f
        mov     %rcx, %r14
        mov     %rax, %r15
2:      inc     %r9
        cmp     %rsi, %r9
        jb      loop
        xor     %r9d, %r9d              # next pass
        inc     %r8
        jmp     loop

        .globl  pause
pause:
        out     %eax, $PORT_PAUSE       # the host reads and writes registers here
        jmp     loop

${EXCEPTION_STUBS_LISTING}`;

/** `as --64` + `objcopy -O binary -j .text` of MIGRATE_LISTING (checked by test/kvm-guest.test.ts). */
const MIGRATE_CODE_HEX = `
4889d54989cc4531c94531d24531db4531f64531ff0f3148c1e2204809d04989
c54885f6745749833c240075504c89c8480fafc5488d1c07498d48ff483b0b74
0c49ffc24983fa0175034989db4c89030f3148c1e2204809d04889c14c29e949
89c54c39f176064989ce4989c749ffc14939f172b14531c949ffc0eba9e712eb
a5f4f4f4f4f4f4f4f4f4f4f4f4f4f4f46a006a00e9ed010000f4f4f4f4f4f4f4
6a006a01e9dd010000f4f4f4f4f4f4f46a006a02e9cd010000f4f4f4f4f4f4f4
6a006a03e9bd010000f4f4f4f4f4f4f46a006a04e9ad010000f4f4f4f4f4f4f4
6a006a05e99d010000f4f4f4f4f4f4f46a006a06e98d010000f4f4f4f4f4f4f4
6a006a07e97d010000f4f4f4f4f4f4f46a08e96f010000f4f4f4f4f4f4f4f4f4
6a006a09e95d010000f4f4f4f4f4f4f46a0ae94f010000f4f4f4f4f4f4f4f4f4
6a0be93f010000f4f4f4f4f4f4f4f4f46a0ce92f010000f4f4f4f4f4f4f4f4f4
6a0de91f010000f4f4f4f4f4f4f4f4f46a0ee90f010000f4f4f4f4f4f4f4f4f4
6a006a0fe9fd000000f4f4f4f4f4f4f46a006a10e9ed000000f4f4f4f4f4f4f4
6a11e9df000000f4f4f4f4f4f4f4f4f46a006a12e9cd000000f4f4f4f4f4f4f4
6a006a13e9bd000000f4f4f4f4f4f4f46a006a14e9ad000000f4f4f4f4f4f4f4
6a15e99f000000f4f4f4f4f4f4f4f4f46a006a16e98d000000f4f4f4f4f4f4f4
6a006a17e97d000000f4f4f4f4f4f4f46a006a18eb70f4f4f4f4f4f4f4f4f4f4
6a006a19eb60f4f4f4f4f4f4f4f4f4f46a006a1aeb50f4f4f4f4f4f4f4f4f4f4
6a006a1beb40f4f4f4f4f4f4f4f4f4f46a006a1ceb30f4f4f4f4f4f4f4f4f4f4
6a1deb22f4f4f4f4f4f4f4f4f4f4f4f46a1eeb12f4f4f4f4f4f4f4f4f4f4f4f4
6a006a1feb00585b488b0c240f20d2e711ebfc
`;

export const MIGRATE_PROGRAM: GuestProgram = {
  name: 'migrate',
  listing: MIGRATE_LISTING,
  code: hexBytes(MIGRATE_CODE_HEX),
  symbols: { entry: 0x0, exception_stubs: 0x90 },
  exceptionStubStride: 16,
};

/** One vCPU's work. */
export interface MigrateArgs {
  /** First guest address of this vCPU's slice (identity-mapped). */
  readonly base: GuestAddress;
  readonly pages: number;
  /** Bytes between pages (the guest page size). */
  readonly stride: number;
  /** Guest address of the pause word (SystemLayout.control). */
  readonly control: number;
}

/** A vCPU's progress, read from its registers while it is paused. */
export interface MigrateState {
  /** The current pass (1 is the first). */
  readonly pass: bigint;
  /** The next page of the slice this pass writes: pages [0, index) hold `pass`, [index, pages) hold pass - 1. */
  readonly index: number;
  /** Accesses that found a counter other than pass - 1: lost writes the guest saw itself. */
  readonly mismatches: number;
  /** Guest address of the first, 0 if none. */
  readonly firstMismatch: number;
  /** TSC at the last access. */
  readonly lastTsc: bigint;
  /** The longest time between two consecutive accesses, in TSC ticks, and the TSC at its end. */
  readonly maxGapTicks: bigint;
  readonly maxGapEndTsc: bigint;
}

/** The entry registers for `args`. */
export function migrateArgRegs(args: MigrateArgs): Partial<Regs> {
  const { base, pages, stride, control } = args;
  checkSlice('migrate', pages, stride);
  return { rdi: BigInt(base), rsi: BigInt(pages), rdx: BigInt(stride), rcx: BigInt(control), r8: 1n };
}

/** The program's state in `regs` (KVM_GET_REGS of a paused vCPU). */
export function migrateState(regs: Regs): MigrateState {
  return {
    pass: regs.r8,
    index: Number(regs.r9),
    mismatches: Number(regs.r10),
    firstMismatch: Number(regs.r11),
    lastTsc: regs.r13,
    maxGapTicks: regs.r14,
    maxGapEndTsc: regs.r15,
  };
}

/**
 * The oracle: the counters of a paused vCPU's slice against its state. `counters` reads
 * page i's counter. Returns the pages whose counter is not what the guest wrote last
 * (at most `limit` listed, all counted).
 */
export function checkCounters(
  state: Pick<MigrateState, 'pass' | 'index'>,
  pages: number,
  counter: (page: number) => bigint,
  limit = 16,
): { bad: number; first: { page: number; found: bigint; expected: bigint }[] } {
  let bad = 0;
  const first: { page: number; found: bigint; expected: bigint }[] = [];
  for (let i = 0; i < pages; i++) {
    const expected = i < state.index ? state.pass : state.pass - 1n;
    const found = counter(i);
    if (found !== expected) {
      bad++;
      if (first.length < limit) first.push({ page: i, found, expected });
    }
  }
  return { bad, first };
}
