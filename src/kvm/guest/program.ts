import { InvalidArgumentError } from '../../errors.js';

/**
 * A guest program: position-independent x86-64 machine code, assembled once from the
 * listing kept next to it (test/kvm-guest.test.ts re-assembles the listing with `as` and
 * checks the bytes), plus the offsets of the symbols the host needs.
 */
export interface GuestProgram {
  readonly name: string;
  /** GNU as source (AT&T syntax, .code64). */
  readonly listing: string;
  /** The assembled .text section. */
  readonly code: Uint8Array;
  /** Offsets into `code` of global symbols: at least `entry` and `exception_stubs`. */
  readonly symbols: Readonly<Record<'entry' | 'exception_stubs', number>>;
  /**
   * Bytes between consecutive exception stubs: stub for vector v is at
   * exception_stubs + v * stride, for v in 0..31 (the IDT points each gate there).
   */
  readonly exceptionStubStride: number;
}

/**
 * The ports our guests report through with OUT (a port-I/O exit is the cheapest way out of
 * a guest that every KVM supports; no device model needed).
 */
export const GuestPort = {
  /** The program finished; results are in its registers (see each program). Repeats if run again. */
  DONE: 0x10,
  /** A CPU exception: EAX = vector, RBX = error code, RCX = faulting RIP, RDX = CR2. Repeats if run again. */
  EXCEPTION: 0x11,
  /** The program saw the host's pause request and stopped between two accesses; run it again to go on. */
  PAUSE: 0x12,
} as const;

/** The x86 exception vector names, for messages. */
export const EXCEPTION_NAMES: readonly string[] = [
  '#DE', '#DB', 'NMI', '#BP', '#OF', '#BR', '#UD', '#NM', '#DF', 'vector 9', '#TS', '#NP', '#SS', '#GP', '#PF', 'vector 15',
  '#MF', '#AC', '#MC', '#XM', '#VE', '#CP', 'vector 22', 'vector 23', 'vector 24', 'vector 25', 'vector 26', 'vector 27',
  '#HV', '#VC', '#SX', 'vector 31',
];

/**
 * The tail every guest listing ends with: an entry point per exception vector 0..31, 16
 * bytes apart (the IDT points at them), each reporting through PORT_EXCEPTION (the
 * including listing defines it as GuestPort.EXCEPTION).
 */
export const EXCEPTION_STUBS_LISTING = String.raw`# Exception entry points, one per vector 0..31, 16 bytes apart (the IDT points at them).
# Each leaves the same frame: vector, error code (0 when the CPU pushes none), rip, ...
        .macro  stub vector
        .balign 16, 0xf4
        .if !((\vector == 8) || ((\vector >= 10) && (\vector <= 14)) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30))
        push    $0
        .endif
        push    $\vector
        jmp     exception
        .endm

        .balign 16, 0xf4
        .globl  exception_stubs
exception_stubs:
        .irp    vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        stub    \vector
        .endr

exception:
        pop     %rax                    # vector
        pop     %rbx                    # error code
        mov     (%rsp), %rcx            # faulting rip
        mov     %cr2, %rdx              # faulting address, for #PF
1:      out     %eax, $PORT_EXCEPTION
        jmp     1b
`;

/** Checks a slice a program walks: `pages` pages `stride` bytes apart (both programs take them in RSI and RDX). */
export function checkSlice(program: string, pages: number, stride: number): void {
  if (!Number.isSafeInteger(pages) || pages < 0) throw new InvalidArgumentError(`${program}: pages ${pages} must be a non-negative integer`);
  if (!Number.isSafeInteger(stride) || stride < 8 || stride % 8 !== 0) throw new InvalidArgumentError(`${program}: stride ${stride} must be a multiple of 8`);
}

/** Decodes a hex string (whitespace ignored) into bytes. */
export function hexBytes(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}
