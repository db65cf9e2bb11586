/**
 * struct kvm_cpuid2 and struct kvm_cpuid_entry2 (arch/x86/include/uapi/asm/kvm.h): the
 * CPUID a vCPU reports. A vCPU without one has an empty CPUID, and KVM then assumes a
 * 36-bit MAXPHYADDR (cpuid_query_maxphyaddr), so guest PTEs pointing at 64 GiB and above
 * have reserved bits set. Like the selftests (vcpu_init_cpuid(kvm_get_supported_cpuid())),
 * every vCPU gets everything this KVM supports.
 */
import { StructSize } from '../constants.js';

export interface CpuidEntry {
  function: number;
  index: number;
  /** KVM_CPUID_FLAG_*: bit 0 SIGNIFCANT_INDEX (the entry depends on ECX). */
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** More than any CPU has (the selftests use 100); KVM answers E2BIG if it is too few. */
export const MAX_CPUID_ENTRIES = 256;

/** A kvm_cpuid2 with room for `nent` entries, for KVM_GET_SUPPORTED_CPUID to fill. */
export function cpuidBuffer(nent: number = MAX_CPUID_ENTRIES): Uint8Array {
  const buf = new Uint8Array(StructSize.kvm_cpuid2 + nent * StructSize.kvm_cpuid_entry2);
  new DataView(buf.buffer).setUint32(0, nent, true);
  return buf;
}

export function packCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const buf = cpuidBuffer(entries.length);
  const v = new DataView(buf.buffer);
  entries.forEach((e, i) => {
    const at = StructSize.kvm_cpuid2 + i * StructSize.kvm_cpuid_entry2;
    v.setUint32(at, e.function >>> 0, true);
    v.setUint32(at + 4, e.index >>> 0, true);
    v.setUint32(at + 8, e.flags >>> 0, true);
    v.setUint32(at + 12, e.eax >>> 0, true);
    v.setUint32(at + 16, e.ebx >>> 0, true);
    v.setUint32(at + 20, e.ecx >>> 0, true);
    v.setUint32(at + 24, e.edx >>> 0, true);
  });
  return buf;
}

export function unpackCpuid(buf: Uint8Array): CpuidEntry[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const nent = v.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < nent; i++) {
    const at = StructSize.kvm_cpuid2 + i * StructSize.kvm_cpuid_entry2;
    out.push({
      function: v.getUint32(at, true),
      index: v.getUint32(at + 4, true),
      flags: v.getUint32(at + 8, true),
      eax: v.getUint32(at + 12, true),
      ebx: v.getUint32(at + 16, true),
      ecx: v.getUint32(at + 20, true),
      edx: v.getUint32(at + 24, true),
    });
  }
  return out;
}

/** The entry for leaf `fn` (sub-leaf `index`), if KVM listed one. */
export function cpuidEntry(entries: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined {
  return entries.find((e) => e.function === fn && ((e.flags & 1) === 0 || e.index === index));
}

/** The guest-physical address width CPUID 0x80000008 EAX[7:0] gives; 36 when absent, as KVM assumes. */
export function physicalAddressBits(entries: readonly CpuidEntry[]): number {
  const e = cpuidEntry(entries, 0x8000_0008);
  return e ? e.eax & 0xff : 36;
}
