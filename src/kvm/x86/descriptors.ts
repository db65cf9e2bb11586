/**
 * The segments a 64-bit guest runs with, as the kernel selftests set them up
 * (tools/testing/selftests/kvm/lib/x86/processor.c: kvm_seg_set_kernel_code_64bit,
 * kvm_seg_set_kernel_data_64bit, kvm_seg_set_tss_64bit, kvm_seg_fill_gdt_64bit), and the
 * GDT descriptors and IDT gates that match them. KVM_SET_SREGS loads the hidden part of
 * each segment register directly; the GDT must agree with it for the moment anything
 * reloads a selector (an exception's IRET, a far jump).
 */
import type { Segment } from './regs.js';

/** Selectors: GDT index << 3, RPL 0. The selftests' KERNEL_CS, KERNEL_DS, KERNEL_TSS. */
export const Selector = {
  CODE: 0x08,
  DATA: 0x10,
  /** A 64-bit TSS descriptor is 16 bytes: it takes GDT entries 3 and 4. */
  TSS: 0x18,
} as const;

/** GDT entries: null, code, data, TSS (two). */
export const GDT_ENTRIES = 5;
export const GDT_LIMIT = GDT_ENTRIES * 8 - 1;

/** struct tss_struct (x86_64) is 104 bytes; its limit is 0x67. */
export const TSS_SIZE = 0x68;

/** The first 32 vectors are the CPU's exceptions; nothing else is delivered to our guests. */
export const IDT_VECTORS = 32;
export const IDT_LIMIT = IDT_VECTORS * 16 - 1;

const segment = (fields: Partial<Segment>): Segment => ({
  base: 0n,
  limit: 0,
  selector: 0,
  type: 0,
  present: 0,
  dpl: 0,
  db: 0,
  s: 0,
  l: 0,
  g: 0,
  avl: 0,
  unusable: 0,
  padding: 0,
  ...fields,
});

/** 64-bit ring-0 code: type 0xb (execute/read, accessed), L=1, D=0, G=1. */
export function code64Segment(): Segment {
  return segment({ selector: Selector.CODE, limit: 0xffff_ffff, s: 1, type: 0x08 | 0x02 | 0x01, g: 1, l: 1, present: 1 });
}

/** Ring-0 data: type 3 (read/write, accessed), G=1; base and limit are ignored in 64-bit mode. */
export function data64Segment(): Segment {
  return segment({ selector: Selector.DATA, limit: 0xffff_ffff, s: 1, type: 0x00 | 0x02 | 0x01, g: 1, present: 1 });
}

/** The task register: a busy 64-bit TSS (type 0xb). VMX refuses to enter long mode without a usable TR. */
export function tss64Segment(base: number): Segment {
  return segment({ selector: Selector.TSS, base: BigInt(base), limit: TSS_SIZE - 1, type: 0xb, present: 1 });
}

/** LDTR: unusable, as the selftests leave it. */
export function unusableSegment(): Segment {
  return segment({ unusable: 1 });
}

/**
 * The GDT descriptor for `seg` (kvm_seg_fill_gdt_64bit): one quadword for code and data,
 * two for a system segment such as the TSS (its base is 64 bits wide).
 */
export function gdtDescriptor(seg: Segment): bigint[] {
  // The limit is in the descriptor in units of the granularity; a 4 GiB limit with G=1 is 0xfffff.
  const limit = BigInt(seg.g ? seg.limit >>> 12 : seg.limit) & 0xfffffn;
  const base = seg.base;
  const low =
    (limit & 0xffffn) |
    ((base & 0xff_ffffn) << 16n) |
    (BigInt(seg.type & 0xf) << 40n) |
    (BigInt(seg.s & 1) << 44n) |
    (BigInt(seg.dpl & 3) << 45n) |
    (BigInt(seg.present & 1) << 47n) |
    ((limit >> 16n) << 48n) |
    (BigInt(seg.avl & 1) << 52n) |
    (BigInt(seg.l & 1) << 53n) |
    (BigInt(seg.db & 1) << 54n) |
    (BigInt(seg.g & 1) << 55n) |
    (((base >> 24n) & 0xffn) << 56n);
  return seg.s ? [low] : [low, (base >> 32n) & 0xffff_ffffn];
}

/** A 64-bit interrupt gate (type 14) to `handler` in the code segment, DPL 0, no IST. Two quadwords. */
export function idtGate(handler: number): [bigint, bigint] {
  const h = BigInt(handler);
  const low =
    (h & 0xffffn) |
    (BigInt(Selector.CODE) << 16n) |
    (14n << 40n) | // type: 64-bit interrupt gate
    (1n << 47n) | // present
    (((h >> 16n) & 0xffffn) << 48n);
  return [low, (h >> 32n) & 0xffff_ffffn];
}
