/**
 * struct kvm_regs and struct kvm_sregs (arch/x86/include/uapi/asm/kvm.h), packed and
 * unpacked with DataView, every field. Register values are bigint: guest values are full
 * 64-bit (a pattern like `address ^ seed` does not fit in a double).
 */
import { StructSize } from '../constants.js';

/** struct kvm_regs: the general-purpose registers, RIP and RFLAGS. */
export interface Regs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}

/** The kernel's field order; each field is a __u64. */
export const REGS_FIELDS = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'rflags',
] as const satisfies readonly (keyof Regs)[];

export function emptyRegs(): Regs {
  const r = {} as Regs;
  for (const f of REGS_FIELDS) r[f] = 0n;
  return r;
}

export function packRegs(regs: Regs, into: Uint8Array = new Uint8Array(StructSize.kvm_regs)): Uint8Array {
  const v = new DataView(into.buffer, into.byteOffset, StructSize.kvm_regs);
  REGS_FIELDS.forEach((f, i) => v.setBigUint64(i * 8, BigInt.asUintN(64, regs[f]), true));
  return into;
}

export function unpackRegs(from: Uint8Array): Regs {
  const v = new DataView(from.buffer, from.byteOffset, StructSize.kvm_regs);
  const r = {} as Regs;
  REGS_FIELDS.forEach((f, i) => (r[f] = v.getBigUint64(i * 8, true)));
  return r;
}

/**
 * struct kvm_segment { __u64 base; __u32 limit; __u16 selector; __u8 type, present, dpl,
 * db, s, l, g, avl, unusable, padding; }: a segment register as the VMCS/VMCB holds it
 * (the hidden part included), not a GDT descriptor.
 */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
  padding: number;
}
const SEGMENT_SIZE = 24;

/** struct kvm_dtable { __u64 base; __u16 limit; __u16 padding[3]; }: GDTR or IDTR. */
export interface DTable {
  base: bigint;
  limit: number;
}
const DTABLE_SIZE = 16;

/** struct kvm_sregs (x86_64): segments, descriptor tables, control registers, EFER, APIC base. */
export interface Sregs {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
  gdt: DTable;
  idt: DTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** interrupt_bitmap[(KVM_NR_INTERRUPTS + 63) / 64]: a pending external interrupt, if any. */
  interruptBitmap: [bigint, bigint, bigint, bigint];
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const DTABLES_AT = SEGMENTS.length * SEGMENT_SIZE; // 192
const CONTROL_AT = DTABLES_AT + 2 * DTABLE_SIZE; // 224
const CONTROL = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const BITMAP_AT = CONTROL_AT + CONTROL.length * 8; // 280

function getSegment(v: DataView, at: number): Segment {
  return {
    base: v.getBigUint64(at, true),
    limit: v.getUint32(at + 8, true),
    selector: v.getUint16(at + 12, true),
    type: v.getUint8(at + 14),
    present: v.getUint8(at + 15),
    dpl: v.getUint8(at + 16),
    db: v.getUint8(at + 17),
    s: v.getUint8(at + 18),
    l: v.getUint8(at + 19),
    g: v.getUint8(at + 20),
    avl: v.getUint8(at + 21),
    unusable: v.getUint8(at + 22),
    padding: v.getUint8(at + 23),
  };
}

function setSegment(v: DataView, at: number, s: Segment): void {
  v.setBigUint64(at, BigInt.asUintN(64, s.base), true);
  v.setUint32(at + 8, s.limit >>> 0, true);
  v.setUint16(at + 12, s.selector, true);
  v.setUint8(at + 14, s.type);
  v.setUint8(at + 15, s.present);
  v.setUint8(at + 16, s.dpl);
  v.setUint8(at + 17, s.db);
  v.setUint8(at + 18, s.s);
  v.setUint8(at + 19, s.l);
  v.setUint8(at + 20, s.g);
  v.setUint8(at + 21, s.avl);
  v.setUint8(at + 22, s.unusable);
  v.setUint8(at + 23, s.padding);
}

export function packSregs(sregs: Sregs, into: Uint8Array = new Uint8Array(StructSize.kvm_sregs)): Uint8Array {
  const v = new DataView(into.buffer, into.byteOffset, StructSize.kvm_sregs);
  SEGMENTS.forEach((name, i) => setSegment(v, i * SEGMENT_SIZE, sregs[name]));
  [sregs.gdt, sregs.idt].forEach((t, i) => {
    const at = DTABLES_AT + i * DTABLE_SIZE;
    v.setBigUint64(at, BigInt.asUintN(64, t.base), true);
    v.setUint16(at + 8, t.limit, true);
    // padding[3] stays as it was (zero in a fresh buffer)
  });
  CONTROL.forEach((name, i) => v.setBigUint64(CONTROL_AT + i * 8, BigInt.asUintN(64, sregs[name]), true));
  sregs.interruptBitmap.forEach((w, i) => v.setBigUint64(BITMAP_AT + i * 8, w, true));
  return into;
}

export function unpackSregs(from: Uint8Array): Sregs {
  const v = new DataView(from.buffer, from.byteOffset, StructSize.kvm_sregs);
  const seg = (i: number) => getSegment(v, i * SEGMENT_SIZE);
  const dtable = (i: number): DTable => ({ base: v.getBigUint64(DTABLES_AT + i * DTABLE_SIZE, true), limit: v.getUint16(DTABLES_AT + i * DTABLE_SIZE + 8, true) });
  const ctl = (i: number) => v.getBigUint64(CONTROL_AT + i * 8, true);
  const bitmap = (i: number) => v.getBigUint64(BITMAP_AT + i * 8, true);
  return {
    cs: seg(0),
    ds: seg(1),
    es: seg(2),
    fs: seg(3),
    gs: seg(4),
    ss: seg(5),
    tr: seg(6),
    ldt: seg(7),
    gdt: dtable(0),
    idt: dtable(1),
    cr0: ctl(0),
    cr2: ctl(1),
    cr3: ctl(2),
    cr4: ctl(3),
    cr8: ctl(4),
    efer: ctl(5),
    apicBase: ctl(6),
    interruptBitmap: [bitmap(0), bitmap(1), bitmap(2), bitmap(3)],
  };
}
