import { hva, type HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { MapFlag, Prot } from '../memory/constants.js';
import { native } from '../native/binding.js';
import { SystemError, isSystemError } from '../native/errors.js';
import { KvmExitReason, KvmIoctl, StructSize } from './constants.js';
import { EXIT_REASON_NONE, KvmRunOffset, decodeExit, type IoExit, type VcpuExit } from './exit.js';
import { type CpuidEntry, cpuidBuffer, packCpuid, unpackCpuid, MAX_CPUID_ENTRIES } from './x86/cpuid.js';
import { type Regs, type Sregs, packRegs, packSregs, unpackRegs, unpackSregs } from './x86/regs.js';

/**
 * What a worker thread needs to drive a vCPU the main thread created: plain numbers, so
 * it crosses postMessage/workerData. See Vcpu.borrow().
 */
export interface VcpuHandle {
  /** The vCPU fd (fds are per process, so valid in every thread). */
  readonly fd: number;
  /** The vCPU id given to KVM_CREATE_VCPU (the APIC id). */
  readonly id: number;
  /** Where the owner mmap'ed the vCPU's kvm_run area. */
  readonly runAddress: number;
  /** KVM_GET_VCPU_MMAP_SIZE bytes. */
  readonly runSize: number;
}

/**
 * A KVM vCPU: its fd and its kvm_run area (mmap of the vCPU fd, MAP_SHARED, where KVM
 * reports each exit).
 *
 * Threads: the owner (Vm.createVcpu) creates the fd and the mapping. A worker thread that
 * is to run the vCPU calls Vcpu.borrow(owner.handle): the fd and the mapping are the
 * process's, but an ArrayBuffer over the mapping is not transferable between threads'
 * addons, so the borrower makes its own view. A borrowed Vcpu's close() only drops that
 * view; the owner closes the fd and unmaps, and must do so only after every borrower has
 * stopped calling run() (a worker still inside KVM_RUN keeps the vCPU alive in the
 * kernel, but its view would point at unmapped memory once it returns).
 *
 * KVM wants one thread at a time in a vCPU's ioctls; register access from the main
 * thread while a worker is in KVM_RUN waits for the vCPU mutex, i.e. for that exit.
 */
export class Vcpu {
  readonly fd: number;
  readonly id: number;
  readonly runAddress: HostAddress;
  readonly runSize: number;
  /** True when this handle owns the fd and the mapping (created by Vm.createVcpu). */
  readonly owned: boolean;
  readonly #runBuffer: ArrayBuffer;
  readonly #run: DataView;
  readonly #regs = new Uint8Array(StructSize.kvm_regs);
  readonly #sregs = new Uint8Array(StructSize.kvm_sregs);
  #closed = false;

  private constructor(handle: VcpuHandle, owned: boolean) {
    this.fd = handle.fd;
    this.id = handle.id;
    this.runAddress = hva(handle.runAddress);
    this.runSize = handle.runSize;
    this.owned = owned;
    this.#runBuffer = native.view(handle.runAddress, handle.runSize);
    this.#run = new DataView(this.#runBuffer);
  }

  /**
   * KVM_CREATE_VCPU on `vmFd` and the mmap of its kvm_run area. Use Vm.createVcpu(), which
   * knows the mmap size and closes the vCPU with the VM.
   */
  static create(vmFd: number, id: number, runSize: number): Vcpu {
    if (!Number.isInteger(id) || id < 0) throw new InvalidArgumentError(`vCPU id ${id} must be a non-negative integer`);
    const fd = native.ioctl(vmFd, KvmIoctl.KVM_CREATE_VCPU, id, 'KVM_CREATE_VCPU');
    let runAddress: number;
    try {
      runAddress = native.mmap(0, runSize, Prot.READ | Prot.WRITE, MapFlag.SHARED, fd, 0);
    } catch (e) {
      native.close(fd);
      throw e;
    }
    return new Vcpu({ fd, id, runAddress, runSize }, true);
  }

  /**
   * A handle on a vCPU another thread owns, from the plain data of its `handle`: for a
   * worker thread that runs the vCPU. Owns nothing: close() drops this thread's view only.
   */
  static borrow(handle: VcpuHandle): Vcpu {
    return new Vcpu(handle, false);
  }

  /** The plain data Vcpu.borrow() needs, to pass to a worker. */
  get handle(): VcpuHandle {
    return { fd: this.fd, id: this.id, runAddress: this.runAddress, runSize: this.runSize };
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError(`vCPU ${this.id}`, op);
  }

  /**
   * KVM_RUN, then what the exit was. EINTR/EAGAIN come back as an `intr` exit (nothing
   * happened; run again). With KVM_CAP_MEMORY_FAULT_INFO, KVM reports a guest access it
   * could not resolve by failing KVM_RUN (EFAULT, EHWPOISON) with exit_reason
   * KVM_EXIT_MEMORY_FAULT: that is a `memory_fault` exit, not an error. Any other failure
   * throws SystemError.
   */
  run(): VcpuExit {
    this.#check('run');
    // KVM writes exit_reason on every exit but not on every error: poison it, so an error
    // return can tell a memory fault reported now from a stale one.
    this.#run.setUint32(KvmRunOffset.exit_reason, EXIT_REASON_NONE, true);
    try {
      native.ioctl(this.fd, KvmIoctl.KVM_RUN, 0, 'KVM_RUN');
    } catch (e) {
      if (isSystemError(e, 'EINTR', 'EAGAIN')) return { reason: 'intr', errno: e.code as 'EINTR' | 'EAGAIN' };
      if (e instanceof SystemError && this.#run.getUint32(KvmRunOffset.exit_reason, true) === KvmExitReason.KVM_EXIT_MEMORY_FAULT) {
        return decodeExit(this.#run, e.code);
      }
      throw e;
    }
    return decodeExit(this.#run);
  }

  /**
   * kvm_run.immediate_exit: while set, KVM_RUN returns EINTR at once instead of entering
   * the guest. Together with a signal to the running thread this is how a VMM stops a vCPU.
   */
  set immediateExit(on: boolean) {
    this.#check('immediateExit');
    this.#run.setUint8(KvmRunOffset.immediate_exit, on ? 1 : 0);
  }

  get immediateExit(): boolean {
    this.#check('immediateExit');
    return this.#run.getUint8(KvmRunOffset.immediate_exit) !== 0;
  }

  /**
   * The data bytes of an io exit inside kvm_run (size × count bytes): what an OUT wrote,
   * or where to put what an IN reads before the next run().
   */
  ioData(exit: IoExit): Uint8Array {
    this.#check('ioData');
    return new Uint8Array(this.#runBuffer, exit.dataOffset, exit.size * exit.count);
  }

  /** KVM_GET_REGS */
  getRegs(): Regs {
    this.#check('getRegs');
    native.ioctl(this.fd, KvmIoctl.KVM_GET_REGS, this.#regs, 'KVM_GET_REGS');
    return unpackRegs(this.#regs);
  }

  /** KVM_SET_REGS: every field is written; start from getRegs() to change a few. */
  setRegs(regs: Regs): void {
    this.#check('setRegs');
    native.ioctl(this.fd, KvmIoctl.KVM_SET_REGS, packRegs(regs, this.#regs), 'KVM_SET_REGS');
  }

  /** KVM_GET_SREGS */
  getSregs(): Sregs {
    this.#check('getSregs');
    native.ioctl(this.fd, KvmIoctl.KVM_GET_SREGS, this.#sregs, 'KVM_GET_SREGS');
    return unpackSregs(this.#sregs);
  }

  /** KVM_SET_SREGS: every field is written; start from getSregs() to change a few. */
  setSregs(sregs: Sregs): void {
    this.#check('setSregs');
    this.#sregs.fill(0);
    native.ioctl(this.fd, KvmIoctl.KVM_SET_SREGS, packSregs(sregs, this.#sregs), 'KVM_SET_SREGS');
  }

  /** KVM_SET_CPUID2: what CPUID reports inside the guest, and what KVM lets the guest enable. */
  setCpuid(entries: readonly CpuidEntry[]): void {
    this.#check('setCpuid');
    native.ioctl(this.fd, KvmIoctl.KVM_SET_CPUID2, packCpuid(entries), 'KVM_SET_CPUID2');
  }

  /** KVM_GET_CPUID2: the vCPU's CPUID as KVM holds it (with its runtime updates). */
  getCpuid(): CpuidEntry[] {
    this.#check('getCpuid');
    const buf = cpuidBuffer(MAX_CPUID_ENTRIES);
    native.ioctl(this.fd, KvmIoctl.KVM_GET_CPUID2, buf, 'KVM_GET_CPUID2');
    return unpackCpuid(buf);
  }

  /** KVM_GET_MSRS of `indices`: the values in the same order. Fails naming the first MSR KVM would not read. */
  getMsrs(indices: readonly number[]): bigint[] {
    this.#check('getMsrs');
    const buf = msrBuffer(indices.map((index) => ({ index, value: 0n })));
    const n = native.ioctl(this.fd, KvmIoctl.KVM_GET_MSRS, buf, 'KVM_GET_MSRS');
    if (n !== indices.length) throw new InvalidArgumentError(`KVM_GET_MSRS: KVM does not read MSR 0x${indices[n]!.toString(16)} of this vCPU`);
    const view = new DataView(buf.buffer);
    return indices.map((_, i) => view.getBigUint64(StructSize.kvm_msrs + i * StructSize.kvm_msr_entry + 8, true));
  }

  /** KVM_SET_MSRS (host-initiated writes: for IA32_TSC, KVM adjusts the vCPU's TSC offset). */
  setMsrs(entries: readonly { index: number; value: bigint }[]): void {
    this.#check('setMsrs');
    const n = native.ioctl(this.fd, KvmIoctl.KVM_SET_MSRS, msrBuffer(entries), 'KVM_SET_MSRS');
    if (n !== entries.length) throw new InvalidArgumentError(`KVM_SET_MSRS: KVM refused MSR 0x${entries[n]!.index.toString(16)} of this vCPU`);
  }

  /** KVM_GET_TSC_KHZ: the frequency of the TSC the guest reads. */
  get tscKhz(): number {
    this.#check('tscKhz');
    return native.ioctl(this.fd, KvmIoctl.KVM_GET_TSC_KHZ, 0, 'KVM_GET_TSC_KHZ');
  }

  /**
   * Owned: unmaps kvm_run and closes the fd (KVM frees the vCPU with the VM, once both are
   * closed). Borrowed: drops this thread's view only. Safe twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.detach(this.#runBuffer);
    if (!this.owned) return;
    try {
      native.munmap(this.runAddress, this.runSize);
    } finally {
      native.close(this.fd);
    }
  }
}

/** struct kvm_msrs with its entries. */
function msrBuffer(entries: readonly { index: number; value: bigint }[]): Uint8Array {
  const buf = new Uint8Array(StructSize.kvm_msrs + entries.length * StructSize.kvm_msr_entry);
  const view = new DataView(buf.buffer);
  view.setUint32(0, entries.length, true);
  entries.forEach(({ index, value }, i) => {
    const at = StructSize.kvm_msrs + i * StructSize.kvm_msr_entry;
    view.setUint32(at, index, true);
    view.setBigUint64(at + 8, BigInt.asUintN(64, value), true);
  });
  return buf;
}
