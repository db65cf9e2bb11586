/**
 * KVM's ABI, from include/uapi/linux/kvm.h of Linux 6.18 (x86_64). Defined here, not read
 * from the build machine's headers, which are older than the kernels we run on. Names are
 * the kernel's, without the KVM_ prefix where the table already says it.
 */

/** KVMIO: the ioctl type byte of every KVM ioctl. */
export const KVMIO = 0xae;

/** The value KVM_GET_API_VERSION must return; anything else is an ABI we do not speak. */
export const KVM_API_VERSION = 12;

// asm-generic/ioctl.h: dir(2 bits) << 30 | size(14 bits) << 16 | type << 8 | nr.
// Computed with arithmetic, not bitwise operators: `2 << 30` is negative in JavaScript.
const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;
const IOC_SIZEBITS = 14;

function ioc(dir: number, type: number, nr: number, size: number): number {
  if (size >= 2 ** IOC_SIZEBITS) throw new RangeError(`ioctl argument size ${size} does not fit in ${IOC_SIZEBITS} bits`);
  return dir * 2 ** 30 + size * 2 ** 16 + type * 2 ** 8 + nr;
}
/** _IO(type, nr): no argument, or an integer passed by value. */
export const _IO = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
/** _IOR(type, nr, size): the kernel writes a struct of `size` bytes. */
export const _IOR = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);
/** _IOW(type, nr, size): the kernel reads a struct of `size` bytes. */
export const _IOW = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
/** _IOWR(type, nr, size): the kernel reads and writes back a struct of `size` bytes. */
export const _IOWR = (type: number, nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** sizeof() of the structs the ioctls below carry; the packers in src/kvm/ use the same numbers. */
export const StructSize = {
  /** struct kvm_create_guest_memfd { u64 size; u64 flags; u64 reserved[6]; } */
  kvm_create_guest_memfd: 64,
  /** struct kvm_userspace_memory_region { u32 slot, flags; u64 guest_phys_addr, memory_size, userspace_addr; } */
  kvm_userspace_memory_region: 32,
  /** kvm_userspace_memory_region + { u64 guest_memfd_offset; u32 guest_memfd, pad1; u64 pad2[14]; } */
  kvm_userspace_memory_region2: 160,
  /** struct kvm_enable_cap { u32 cap, flags; u64 args[4]; u8 pad[64]; } */
  kvm_enable_cap: 104,
  /** struct kvm_dirty_log { u32 slot, padding; u64 dirty_bitmap; } */
  kvm_dirty_log: 16,
  /** struct kvm_clear_dirty_log { u32 slot, num_pages; u64 first_page; u64 dirty_bitmap; } */
  kvm_clear_dirty_log: 24,
  /** struct kvm_regs (x86_64) */
  kvm_regs: 144,
  /** struct kvm_sregs (x86_64) */
  kvm_sregs: 312,
  /** struct kvm_cpuid2 { u32 nent, padding; struct kvm_cpuid_entry2 entries[]; }: the header the ioctl number encodes. */
  kvm_cpuid2: 8,
  /** struct kvm_cpuid_entry2 { u32 function, index, flags, eax, ebx, ecx, edx, padding[3]; } */
  kvm_cpuid_entry2: 40,
  /** struct kvm_msrs { u32 nmsrs, pad; struct kvm_msr_entry entries[]; }: the header the ioctl number encodes. */
  kvm_msrs: 8,
  /** struct kvm_msr_entry { u32 index, reserved; u64 data; } */
  kvm_msr_entry: 16,
} as const;

/**
 * KVM ioctl request numbers, grouped by the descriptor they go to. The probe uses the
 * system and VM ones; vCPUs, memory slots and dirty logging are here so the next layers
 * share one table.
 */
export const KvmIoctl = {
  // system ioctls (/dev/kvm)
  KVM_GET_API_VERSION: _IO(KVMIO, 0x00),
  /** arg: the machine type (0 = KVM_X86_DEFAULT_VM). Returns a VM fd. */
  KVM_CREATE_VM: _IO(KVMIO, 0x01),
  /** arg: a KVM_CAP_* number. Returns 0 (absent) or a capability-specific positive value. */
  KVM_CHECK_EXTENSION: _IO(KVMIO, 0x03),
  /** Size of the kvm_run area to mmap on each vCPU fd. */
  KVM_GET_VCPU_MMAP_SIZE: _IO(KVMIO, 0x04),
  /** Fills a kvm_cpuid2 with what this KVM can expose; E2BIG when `nent` is too small. */
  KVM_GET_SUPPORTED_CPUID: _IOWR(KVMIO, 0x05, StructSize.kvm_cpuid2),

  // VM ioctls
  /** arg: the vCPU id. Returns a vCPU fd. */
  KVM_CREATE_VCPU: _IO(KVMIO, 0x41),
  KVM_GET_DIRTY_LOG: _IOW(KVMIO, 0x42, StructSize.kvm_dirty_log),
  KVM_SET_USER_MEMORY_REGION: _IOW(KVMIO, 0x46, StructSize.kvm_userspace_memory_region),
  KVM_SET_TSS_ADDR: _IO(KVMIO, 0x47),
  KVM_SET_IDENTITY_MAP_ADDR: _IOW(KVMIO, 0x48, 8),
  /** Needs KVM_CAP_USER_MEMORY2; the only way to bind a guest_memfd to a slot. */
  KVM_SET_USER_MEMORY_REGION2: _IOW(KVMIO, 0x49, StructSize.kvm_userspace_memory_region2),
  KVM_ENABLE_CAP: _IOW(KVMIO, 0xa3, StructSize.kvm_enable_cap),
  KVM_CLEAR_DIRTY_LOG: _IOWR(KVMIO, 0xc0, StructSize.kvm_clear_dirty_log),
  /** Needs KVM_CAP_GUEST_MEMFD. Returns a guest_memfd fd bound to this VM. */
  KVM_CREATE_GUEST_MEMFD: _IOWR(KVMIO, 0xd4, StructSize.kvm_create_guest_memfd),

  // vCPU ioctls
  KVM_RUN: _IO(KVMIO, 0x80),
  KVM_GET_REGS: _IOR(KVMIO, 0x81, StructSize.kvm_regs),
  KVM_SET_REGS: _IOW(KVMIO, 0x82, StructSize.kvm_regs),
  KVM_GET_SREGS: _IOR(KVMIO, 0x83, StructSize.kvm_sregs),
  KVM_SET_SREGS: _IOW(KVMIO, 0x84, StructSize.kvm_sregs),
  KVM_SET_CPUID2: _IOW(KVMIO, 0x90, StructSize.kvm_cpuid2),
  KVM_GET_CPUID2: _IOWR(KVMIO, 0x91, StructSize.kvm_cpuid2),
  /** Returns how many of the entries were read. */
  KVM_GET_MSRS: _IOWR(KVMIO, 0x88, StructSize.kvm_msrs),
  /** Returns how many of the entries were written. */
  KVM_SET_MSRS: _IOW(KVMIO, 0x89, StructSize.kvm_msrs),
  /** Returns the guest's TSC frequency in kHz. */
  KVM_GET_TSC_KHZ: _IO(KVMIO, 0xa3),
} as const;
export type KvmIoctlName = keyof typeof KvmIoctl;

/**
 * KVM_CAP_* numbers (the argument of KVM_CHECK_EXTENSION). Only mainline numbers belong
 * here: a capability from an unmerged series has no stable number (see src/probe/kvm.ts).
 */
export const KvmCap = {
  KVM_CAP_USER_MEMORY: 3,
  /** KVM_CHECK_EXTENSION is accepted on VM fds (answers can differ per VM type). */
  KVM_CAP_CHECK_EXTENSION_VM: 105,
  /** Value: the KVM_DIRTY_LOG_* flags KVM_ENABLE_CAP accepts (manual clear of dirty bits). */
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: 168,
  /** Value: the largest dirty ring, in bytes. */
  KVM_CAP_DIRTY_LOG_RING: 192,
  KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 223,
  /** KVM_SET_USER_MEMORY_REGION2. */
  KVM_CAP_USER_MEMORY2: 231,
  /** KVM_EXIT_MEMORY_FAULT carries the faulting gpa and size (seed 003's annotation, merged). */
  KVM_CAP_MEMORY_FAULT_INFO: 232,
  KVM_CAP_MEMORY_ATTRIBUTES: 233,
  /** KVM_CREATE_GUEST_MEMFD. */
  KVM_CAP_GUEST_MEMFD: 234,
  /** Value: a mask of the VM types KVM_CREATE_VM accepts, bit n = type n (VmType). */
  KVM_CAP_VM_TYPES: 235,
  KVM_CAP_PRE_FAULT_MEMORY: 236,
  /** Value: the GUEST_MEMFD_FLAG_* mask KVM_CREATE_GUEST_MEMFD accepts for this VM. */
  KVM_CAP_GUEST_MEMFD_FLAGS: 244,
} as const;
export type KvmCapName = keyof typeof KvmCap;

/** KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) argument bits. */
export const DirtyLogFlag = {
  /** KVM_GET_DIRTY_LOG no longer clears (and re-protects): KVM_CLEAR_DIRTY_LOG does, for the pages given. */
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: 1,
  /** A slot's bitmap starts all set when logging is turned on: the first round sends everything without write-protecting it all at once. */
  KVM_DIRTY_LOG_INITIALLY_SET: 2,
} as const;

/** The MSRs a migration carries. */
export const Msr = {
  IA32_TSC: 0x10,
} as const;

/** x86 machine types for KVM_CREATE_VM (KVM_X86_*_VM); bit n of KVM_CAP_VM_TYPES is type n. */
export const VmType = {
  KVM_X86_DEFAULT_VM: 0,
  KVM_X86_SW_PROTECTED_VM: 1,
  KVM_X86_SEV_VM: 2,
  KVM_X86_SEV_ES_VM: 3,
  KVM_X86_SNP_VM: 4,
  KVM_X86_TDX_VM: 5,
} as const;
export type VmTypeName = keyof typeof VmType;

/** kvm_create_guest_memfd.flags */
export const GuestMemfdFlag = {
  /** The guest_memfd can be mmap'ed by the host (and so registered with userfaultfd, if the kernel allows). */
  GUEST_MEMFD_FLAG_MMAP: 1 << 0,
  /** Pages start shared with the host, so a host mapping can fault them in. */
  GUEST_MEMFD_FLAG_INIT_SHARED: 1 << 1,
} as const;
export type GuestMemfdFlagName = keyof typeof GuestMemfdFlag;

/** kvm_userspace_memory_region(2).flags */
export const KvmMemFlag = {
  KVM_MEM_LOG_DIRTY_PAGES: 1 << 0,
  KVM_MEM_READONLY: 1 << 1,
  KVM_MEM_GUEST_MEMFD: 1 << 2,
} as const;

/** Names of the bits set in `mask`, in table order. */
export function flagNames<K extends string>(table: Record<K, number>, mask: number): K[] {
  return (Object.keys(table) as K[]).filter((k) => table[k] !== 0 && (mask & table[k]) === table[k]);
}

/** Names of the VM types whose bits are set in a KVM_CAP_VM_TYPES value. */
export function vmTypeNames(mask: number): VmTypeName[] {
  return (Object.keys(VmType) as VmTypeName[]).filter((k) => (mask >> VmType[k]) & 1);
}

/** kvm_run.exit_reason (KVM_EXIT_*), for x86 and the generic ones. */
export const KvmExitReason = {
  KVM_EXIT_UNKNOWN: 0,
  KVM_EXIT_EXCEPTION: 1,
  KVM_EXIT_IO: 2,
  KVM_EXIT_HYPERCALL: 3,
  KVM_EXIT_DEBUG: 4,
  KVM_EXIT_HLT: 5,
  KVM_EXIT_MMIO: 6,
  KVM_EXIT_IRQ_WINDOW_OPEN: 7,
  KVM_EXIT_SHUTDOWN: 8,
  KVM_EXIT_FAIL_ENTRY: 9,
  KVM_EXIT_INTR: 10,
  KVM_EXIT_SET_TPR: 11,
  KVM_EXIT_TPR_ACCESS: 12,
  KVM_EXIT_NMI: 16,
  KVM_EXIT_INTERNAL_ERROR: 17,
  KVM_EXIT_SYSTEM_EVENT: 24,
  KVM_EXIT_IOAPIC_EOI: 26,
  KVM_EXIT_HYPERV: 27,
  KVM_EXIT_X86_RDMSR: 29,
  KVM_EXIT_X86_WRMSR: 30,
  KVM_EXIT_DIRTY_RING_FULL: 31,
  KVM_EXIT_X86_BUS_LOCK: 33,
  KVM_EXIT_XEN: 34,
  KVM_EXIT_NOTIFY: 37,
  /** Needs KVM_CAP_MEMORY_FAULT_INFO; KVM_RUN returns -1/EFAULT (or EHWPOISON) with this reason. */
  KVM_EXIT_MEMORY_FAULT: 39,
  KVM_EXIT_TDX: 40,
} as const;
export type KvmExitReasonName = keyof typeof KvmExitReason;

/** The KVM_EXIT_* name of an exit_reason value, or `exit N` for one this table lacks. */
export function exitReasonName(code: number): string {
  for (const [name, value] of Object.entries(KvmExitReason)) if (value === code) return name;
  return `exit ${code}`;
}

/** kvm_run.internal.suberror (KVM_INTERNAL_ERROR_*) */
export const KvmInternalError = {
  /** KVM's instruction emulator could not emulate the instruction at RIP. */
  KVM_INTERNAL_ERROR_EMULATION: 1,
  /** An exception was raised while delivering another (e.g. a fault on the IDT itself). */
  KVM_INTERNAL_ERROR_SIMUL_EX: 2,
  /** An exit happened while an event was being delivered, which KVM cannot resume. */
  KVM_INTERNAL_ERROR_DELIVERY_EV: 3,
  /** The hardware (or PVM) reported an exit reason KVM does not handle. */
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: 4,
} as const;

/** kvm_run.io.direction */
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

/** kvm_run.memory_fault.flags */
export const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3;
