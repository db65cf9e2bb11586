import type { GuestAddress, HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { native } from '../native/binding.js';
import { SystemError, isSystemError } from '../native/errors.js';
import { KvmCap, type KvmCapName, GuestMemfdFlag, KvmIoctl, KvmMemFlag, StructSize, flagNames } from './constants.js';
import { createGuestMemfd } from './guest-memfd.js';
import { Vcpu } from './vcpu.js';

const PAGE = 4096;

/** The flags a guest_memfd needs to stand in for shmem: mappable by the host, pages shared from the start. */
export const GUEST_MEMFD_MAPPABLE = GuestMemfdFlag.GUEST_MEMFD_FLAG_MMAP | GuestMemfdFlag.GUEST_MEMFD_FLAG_INIT_SHARED;

export function capNumber(cap: KvmCapName | number): number {
  return typeof cap === 'number' ? cap : KvmCap[cap];
}

/** One memory slot: guest-physical [guestAddress, +size) is host memory at userspaceAddress. */
export interface MemoryRegion {
  readonly guestAddress: GuestAddress;
  /** Bytes, a multiple of 4 KiB; 0 deletes the slot. */
  readonly size: number;
  readonly userspaceAddress: HostAddress;
  /** KVM_MEM_* (KvmMemFlag); KVM_MEM_GUEST_MEMFD is added when guestMemfd is given. */
  readonly flags?: number;
  /** Back the slot's private memory by a guest_memfd (needs KVM_CAP_USER_MEMORY2 and KVM_CAP_GUEST_MEMFD). */
  readonly guestMemfd?: { readonly fd: number; readonly offset: number };
}

/**
 * A KVM VM: the fd KVM_CREATE_VM returned, its memory slots and the vCPUs it created.
 * close() closes the vCPUs (unmapping their kvm_run) before the VM fd.
 */
export class Vm {
  readonly fd: number;
  /** The machine type it was created with (VmType). */
  readonly type: number;
  /** KVM_GET_VCPU_MMAP_SIZE, asked of /dev/kvm when the VM was created; 0 if unknown. */
  readonly vcpuMmapSize: number;
  readonly #vcpus: Vcpu[] = [];
  #userMemory2: boolean | undefined;
  #closed = false;

  /** Use Kvm.createVm(). */
  constructor(fd: number, type: number, vcpuMmapSize = 0) {
    this.fd = fd;
    this.type = type;
    this.vcpuMmapSize = vcpuMmapSize;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError(`VM fd ${this.fd}`, op);
  }

  /**
   * KVM_CHECK_EXTENSION on this VM: what this VM (of this type) supports, which can differ
   * from the answer on /dev/kvm (e.g. KVM_CAP_GUEST_MEMFD_FLAGS). Needs KVM_CAP_CHECK_EXTENSION_VM.
   */
  checkExtension(cap: KvmCapName | number): number {
    this.#check('checkExtension');
    return native.ioctl(this.fd, KvmIoctl.KVM_CHECK_EXTENSION, capNumber(cap), 'KVM_CHECK_EXTENSION');
  }

  /**
   * KVM_CREATE_GUEST_MEMFD: a guest_memfd of `size` bytes bound to this VM. The default flags
   * make it mappable by the host (what a Backing needs). The caller owns the fd.
   */
  createGuestMemfd(size: number, flags: number = GUEST_MEMFD_MAPPABLE): number {
    this.#check('createGuestMemfd');
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE !== 0) {
      throw new InvalidArgumentError(`KVM_CREATE_GUEST_MEMFD: size ${size} is not a positive multiple of ${PAGE}`);
    }
    try {
      return createGuestMemfd(this.fd, size, flags);
    } catch (e) {
      // EINVAL covers both bad flags and a bad size; tell them apart by asking what this VM accepts.
      if (isSystemError(e, 'EINVAL')) {
        const supported = this.#supportedGuestMemfdFlags();
        if (supported !== undefined && (flags & ~supported) !== 0) {
          throw new UnsupportedError(
            `KVM_CREATE_GUEST_MEMFD: this VM does not accept flag(s) ${flagNames(GuestMemfdFlag, flags & ~supported).join(', ')} ` +
              `(accepted: ${flagNames(GuestMemfdFlag, supported).join(', ') || 'none'})`,
            'Use a kernel whose KVM_CAP_GUEST_MEMFD_FLAGS includes them (see `postcopy probe`), or another backing source',
          );
        }
      }
      throw e;
    }
  }

  #supportedGuestMemfdFlags(): number | undefined {
    try {
      return this.checkExtension(KvmCap.KVM_CAP_GUEST_MEMFD_FLAGS);
    } catch {
      return undefined;
    }
  }

  /**
   * KVM_ENABLE_CAP on this VM: struct kvm_enable_cap { u32 cap, flags; u64 args[4]; }.
   * Turns on what KVM offers but keeps off by default (manual dirty-log clearing, ...).
   */
  enableCap(cap: KvmCapName | number, args: readonly bigint[] = []): void {
    this.#check('enableCap');
    if (args.length > 4) throw new InvalidArgumentError(`KVM_ENABLE_CAP takes at most 4 arguments, not ${args.length}`);
    const arg = new Uint8Array(StructSize.kvm_enable_cap);
    const view = new DataView(arg.buffer);
    view.setUint32(0, capNumber(cap), true);
    args.forEach((a, i) => view.setBigUint64(8 + i * 8, a, true));
    native.ioctl(this.fd, KvmIoctl.KVM_ENABLE_CAP, arg, 'KVM_ENABLE_CAP');
  }

  /** A function for BackingOptions.createGuestMemfd: guest_memfds of this VM with `flags`. */
  guestMemfdFactory(flags: number = GUEST_MEMFD_MAPPABLE): (size: number) => number {
    return (size) => this.createGuestMemfd(size, flags);
  }

  /** KVM_CAP_USER_MEMORY2 on this VM: KVM_SET_USER_MEMORY_REGION2 is there (Linux 6.8+). */
  get hasUserMemory2(): boolean {
    this.#check('hasUserMemory2');
    if (this.#userMemory2 === undefined) {
      try {
        this.#userMemory2 = this.checkExtension(KvmCap.KVM_CAP_USER_MEMORY2) > 0;
      } catch {
        // A kernel without KVM_CAP_CHECK_EXTENSION_VM answers on /dev/kvm only, and is too old for USER_MEMORY2.
        this.#userMemory2 = false;
      }
    }
    return this.#userMemory2;
  }

  /**
   * KVM_SET_USER_MEMORY_REGION2 (or KVM_SET_USER_MEMORY_REGION on kernels without
   * KVM_CAP_USER_MEMORY2, where guest_memfd cannot be used): creates, moves, changes the
   * flags of, or (size 0) deletes memory slot `slot`.
   */
  setUserMemoryRegion(slot: number, region: MemoryRegion): void {
    this.#check('setUserMemoryRegion');
    const { guestAddress, size, userspaceAddress, guestMemfd } = region;
    if (!Number.isInteger(slot) || slot < 0 || slot > 0xffff_ffff) throw new InvalidArgumentError(`memory slot ${slot} is not a u32`);
    for (const [what, n] of [['guest address', guestAddress], ['size', size], ['userspace address', userspaceAddress]] as const) {
      if (!Number.isSafeInteger(n) || n < 0 || n % PAGE !== 0) {
        throw new InvalidArgumentError(`memory slot ${slot}: ${what} ${n} is not a non-negative multiple of ${PAGE}`);
      }
    }
    const flags = (region.flags ?? 0) | (guestMemfd ? KvmMemFlag.KVM_MEM_GUEST_MEMFD : 0);
    const v2 = this.hasUserMemory2;
    if (!v2 && guestMemfd) {
      throw new UnsupportedError(
        `memory slot ${slot}: a guest_memfd slot needs KVM_SET_USER_MEMORY_REGION2, which this kernel lacks`,
        'Use Linux 6.8 or newer, or another backing source',
      );
    }
    // struct kvm_userspace_memory_region { u32 slot, flags; u64 guest_phys_addr, memory_size, userspace_addr; }
    // region2 appends { u64 guest_memfd_offset; u32 guest_memfd, pad1; u64 pad2[14]; } (all zero when unused).
    const arg = new Uint8Array(v2 ? StructSize.kvm_userspace_memory_region2 : StructSize.kvm_userspace_memory_region);
    const view = new DataView(arg.buffer);
    view.setUint32(0, slot, true);
    view.setUint32(4, flags, true);
    view.setBigUint64(8, BigInt(guestAddress), true);
    view.setBigUint64(16, BigInt(size), true);
    view.setBigUint64(24, BigInt(userspaceAddress), true);
    if (guestMemfd) {
      view.setBigUint64(32, BigInt(guestMemfd.offset), true);
      view.setUint32(40, guestMemfd.fd, true);
    }
    const name = v2 ? 'KVM_SET_USER_MEMORY_REGION2' : 'KVM_SET_USER_MEMORY_REGION';
    try {
      native.ioctl(this.fd, v2 ? KvmIoctl.KVM_SET_USER_MEMORY_REGION2 : KvmIoctl.KVM_SET_USER_MEMORY_REGION, arg, name);
    } catch (e) {
      // Say which slot and which guest range: EINVAL/EEXIST are about overlaps and alignment.
      if (e instanceof SystemError) throw new SystemError(`ioctl(${name}) slot ${slot} gpa`, e.errno, guestAddress, size);
      throw e;
    }
  }

  /** Deletes memory slot `slot` (KVM_SET_USER_MEMORY_REGION with size 0). */
  deleteUserMemoryRegion(slot: number): void {
    this.setUserMemoryRegion(slot, { guestAddress: 0 as GuestAddress, size: 0, userspaceAddress: 0 as HostAddress });
  }

  /**
   * KVM_CREATE_VCPU and the mmap of its kvm_run area. The VM owns the vCPU: close() closes
   * it first. Vcpu ids are APIC ids: 0..KVM_CAP_MAX_VCPU_ID-1, each once.
   */
  createVcpu(id: number): Vcpu {
    this.#check('createVcpu');
    if (this.vcpuMmapSize <= 0) {
      throw new InvalidArgumentError('createVcpu: this Vm does not know KVM_GET_VCPU_MMAP_SIZE; create it with Kvm.createVm()');
    }
    const vcpu = Vcpu.create(this.fd, id, this.vcpuMmapSize);
    this.#vcpus.push(vcpu);
    return vcpu;
  }

  /** The vCPUs created so far, in creation order. */
  get vcpus(): readonly Vcpu[] {
    return this.#vcpus;
  }

  /**
   * Closes every vCPU (unmapping kvm_run), then the VM fd. Memory slots go with the VM;
   * the host memory behind them is the caller's. guest_memfds created from the VM keep it
   * alive in the kernel until they close. Safe twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    let first: unknown;
    for (const vcpu of this.#vcpus.splice(0)) {
      try {
        vcpu.close();
      } catch (e) {
        first ??= e;
      }
    }
    native.close(this.fd);
    if (first !== undefined) throw first;
  }
}
