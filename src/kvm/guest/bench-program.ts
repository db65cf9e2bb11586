/**
 * The guest program of `postcopy bench` (the kernel's demand_paging_test / memstress
 * guest_code, plus content verification): each vCPU touches every page of its slice once,
 * checks the pattern the host prefilled, writes it back with some probability, and reports.
 *
 * Registers in (set by GuestVm.start from BenchArgs):
 *   RDI first guest address of the slice    RSI pages      RDX stride (the guest page size)
 *   RCX flags (bit 0 verify, bit 1 random)  R8 pattern seed
 *   R9  write percent (0..100)              R10 random seed
 * Per access to page address a: with verify, the first 8 bytes must equal a ^ seed
 * (mismatches are counted, the first one's address kept); with probability write-percent
 * a ^ seed is stored there (so the page stays verifiable); otherwise only a load.
 * Sequential access visits page 0, 1, ... once each; random access makes `pages` accesses
 * to pages chosen by xorshift64 (like memstress's random access: repeats possible).
 * Registers out, at `OUT %eax, $0x10` (GuestPort.DONE; the port says "done", the value is
 * the low 32 bits of EAX): RAX mismatches, RBX first mismatching address (0 if none),
 * RCX accesses done. Running the vCPU again repeats the same exit.
 *
 * Room to grow (the migration oracle): a loop mode is one more flag bit and a pass counter
 * register around `access`, with a store of the pass number instead of the pattern.
 */
import type { GuestAddress } from '../../address.js';
import { InvalidArgumentError } from '../../errors.js';
import type { Regs } from '../x86/regs.js';
import { EXCEPTION_STUBS_LISTING, type GuestProgram, checkSlice, hexBytes } from './program.js';

export const BENCH_LISTING = String.raw`
# postcopy bench guest. GNU as, AT&T syntax. Position-independent.
        .text
        .code64
        .set    PORT_DONE, 0x10
        .set    PORT_EXCEPTION, 0x11
        .set    FLAG_VERIFY, 1
        .set    FLAG_RANDOM, 2

# xorshift64 (Marsaglia 2003): advances the state in r14, leaves it in rax.
        .macro  xorshift
        mov     %r14, %rax
        shl     $13, %rax
        xor     %rax, %r14
        mov     %r14, %rax
        shr     $7, %rax
        xor     %rax, %r14
        mov     %r14, %rax
        shl     $17, %rax
        xor     %rax, %r14
        mov     %r14, %rax
        .endm

        .globl  entry
entry:
        mov     %rdx, %rbp              # rbp: stride (div needs rdx)
        mov     %r10, %r14              # r14: random state
        mov     %rcx, %r10              # r10: flags (rcx is scratch below)
        test    %r14, %r14              # xorshift stays at 0 forever: replace a 0 seed
        jnz     1f
        movabs  $0x9e3779b97f4a7c15, %r14
1:      xor     %r11d, %r11d            # r11: accesses done
        xor     %r12d, %r12d            # r12: mismatches
        xor     %r13d, %r13d            # r13: first mismatching address
        test    %rsi, %rsi
        jz      done

access:
        mov     %r11, %rax              # sequential: page number r11
        test    $FLAG_RANDOM, %r10b
        jz      2f
        xorshift
        xor     %edx, %edx
        div     %rsi                    # random: page number state % pages
        mov     %rdx, %rax
2:      imul    %rbp, %rax
        lea     (%rdi,%rax), %r15       # r15: a, the page's address
        mov     %r15, %rbx
        xor     %r8, %rbx               # rbx: the pattern, a ^ seed

        mov     $1, %ecx                # ecx: 1 if this access writes
        cmp     $100, %r9
        jae     3f                      # write percent >= 100: always
        xor     %ecx, %ecx
        test    %r9, %r9
        jz      3f                      # write percent 0: never
        xorshift
        xor     %edx, %edx
        mov     $100, %ecx
        div     %rcx                    # rdx: state % 100
        xor     %ecx, %ecx
        cmp     %r9, %rdx
        setb    %cl                     # write if (state % 100) < write percent

3:      test    $FLAG_VERIFY, %r10b
        jz      5f
        cmp     (%r15), %rbx            # verify: load and compare with a ^ seed
        je      4f
        inc     %r12
        cmp     $1, %r12
        jne     4f
        mov     %r15, %r13              # keep the first mismatching address
4:      test    %ecx, %ecx
        jz      next
        mov     %rbx, (%r15)            # store a ^ seed back
        jmp     next
5:      test    %ecx, %ecx
        jz      6f
        mov     %rbx, (%r15)            # no verify, write: a store only (a write fault)
        jmp     next
6:      mov     (%r15), %rax            # no verify, read: a load only (a read fault)

next:
        inc     %r11
        cmp     %rsi, %r11
        jb      access

done:
        mov     %r12, %rax
        mov     %r13, %rbx
        mov     %r11, %rcx
report:
        out     %eax, $PORT_DONE
        jmp     report                  # stay stopped: every further KVM_RUN exits here again

${EXCEPTION_STUBS_LISTING}`;

/** `as --64` + `objcopy -O binary -j .text` of BENCH_LISTING (checked by test/kvm-guest.test.ts). */
const BENCH_CODE_HEX = `
4889d54d89d64989ca4d85f6750a49be157c4a7fb979379e4531db4531e44531
ed4885f60f84bd0000004c89d841f6c20274294c89f048c1e00d4931c64c89f0
48c1e8074931c64c89f048c1e0114931c64c89f031d248f7f64889d0480fafc5
4c8d3c074c89fb4c31c3b9010000004983f964733a31c94d85c974334c89f048
c1e00d4931c64c89f048c1e8074931c64c89f048c1e0114931c64c89f031d2b9
6400000048f7f131c94c39ca0f92c141f6c201741a493b1f740c49ffc44983fc
0175034d89fd85c9741149891feb0c85c9740549891feb03498b0749ffc34939
f30f8243ffffff4c89e04c89eb4c89d9e710ebfcf4f4f4f4f4f4f4f4f4f4f4f4
6a006a00e9ed010000f4f4f4f4f4f4f46a006a01e9dd010000f4f4f4f4f4f4f4
6a006a02e9cd010000f4f4f4f4f4f4f46a006a03e9bd010000f4f4f4f4f4f4f4
6a006a04e9ad010000f4f4f4f4f4f4f46a006a05e99d010000f4f4f4f4f4f4f4
6a006a06e98d010000f4f4f4f4f4f4f46a006a07e97d010000f4f4f4f4f4f4f4
6a08e96f010000f4f4f4f4f4f4f4f4f46a006a09e95d010000f4f4f4f4f4f4f4
6a0ae94f010000f4f4f4f4f4f4f4f4f46a0be93f010000f4f4f4f4f4f4f4f4f4
6a0ce92f010000f4f4f4f4f4f4f4f4f46a0de91f010000f4f4f4f4f4f4f4f4f4
6a0ee90f010000f4f4f4f4f4f4f4f4f46a006a0fe9fd000000f4f4f4f4f4f4f4
6a006a10e9ed000000f4f4f4f4f4f4f46a11e9df000000f4f4f4f4f4f4f4f4f4
6a006a12e9cd000000f4f4f4f4f4f4f46a006a13e9bd000000f4f4f4f4f4f4f4
6a006a14e9ad000000f4f4f4f4f4f4f46a15e99f000000f4f4f4f4f4f4f4f4f4
6a006a16e98d000000f4f4f4f4f4f4f46a006a17e97d000000f4f4f4f4f4f4f4
6a006a18eb70f4f4f4f4f4f4f4f4f4f46a006a19eb60f4f4f4f4f4f4f4f4f4f4
6a006a1aeb50f4f4f4f4f4f4f4f4f4f46a006a1beb40f4f4f4f4f4f4f4f4f4f4
6a006a1ceb30f4f4f4f4f4f4f4f4f4f46a1deb22f4f4f4f4f4f4f4f4f4f4f4f4
6a1eeb12f4f4f4f4f4f4f4f4f4f4f4f46a006a1feb00585b488b0c240f20d2e7
11ebfc
`;

export const BENCH_PROGRAM: GuestProgram = {
  name: 'bench',
  listing: BENCH_LISTING,
  code: hexBytes(BENCH_CODE_HEX),
  symbols: { entry: 0x0, exception_stubs: 0x100 },
  exceptionStubStride: 16,
};

/** RCX bits of the bench program. */
export const BenchFlag = {
  VERIFY: 1,
  RANDOM: 2,
} as const;

/** One vCPU's work. */
export interface BenchArgs {
  /** First guest address of this vCPU's slice (identity-mapped, so also its virtual address). */
  readonly base: GuestAddress;
  /** Accesses to make (and pages in the slice). */
  readonly pages: number;
  /** Bytes between pages: the guest page size (4096), or larger to touch one page in each huge page. */
  readonly stride: number;
  /** Check each page's first 8 bytes against address ^ seed. */
  readonly verify: boolean;
  /** Pick pages at random (xorshift64) instead of in order. */
  readonly random: boolean;
  /** The pattern seed: page a holds a ^ seed. */
  readonly seed: bigint;
  /** 0..100: the share of accesses that store (100 = all, memstress's default). */
  readonly writePercent: number;
  /** Random access and write decisions; 0 picks a fixed non-zero seed. */
  readonly randomSeed: bigint;
}

/** What the program reports at the DONE exit. */
export interface BenchResult {
  readonly mismatches: number;
  /** Guest address of the first mismatching page, 0 if none. */
  readonly firstMismatch: number;
  readonly accesses: number;
}

/** The argument registers for `args`. */
export function benchArgRegs(args: BenchArgs): Partial<Regs> {
  const { base, pages, stride, writePercent } = args;
  checkSlice('bench', pages, stride);
  if (!Number.isInteger(writePercent) || writePercent < 0 || writePercent > 100) {
    throw new InvalidArgumentError(`bench: write percent ${writePercent} must be an integer in 0..100`);
  }
  return {
    rdi: BigInt(base),
    rsi: BigInt(pages),
    rdx: BigInt(stride),
    rcx: BigInt((args.verify ? BenchFlag.VERIFY : 0) | (args.random ? BenchFlag.RANDOM : 0)),
    r8: BigInt.asUintN(64, args.seed),
    r9: BigInt(writePercent),
    r10: BigInt.asUintN(64, args.randomSeed),
  };
}

/** The results in the registers at the DONE exit (KVM_GET_REGS). */
export function benchResult(regs: Regs): BenchResult {
  return { mismatches: Number(regs.rax), firstMismatch: Number(regs.rbx), accesses: Number(regs.rcx) };
}

// The page pattern itself lives with the memory it fills (memory/pattern.ts).
export { fillPattern, patternMismatches, patternValue } from '../../memory/pattern.js';
