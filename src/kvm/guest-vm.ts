/**
 * A VM ready to run a guest program in 64-bit mode, for layers that should not know x86:
 * the caller's memory slots, a system slot (code, descriptor tables, stacks, identity page
 * tables covering every slot), and vCPUs with CPUID set. start() loads a vCPU's registers;
 * running it (usually in a worker, see vcpu-thread.ts) and reading results is the caller's.
 */
import { gpa, type GuestAddress } from '../address.js';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { MapFlag } from '../memory/constants.js';
import { Mapping } from '../memory/mapping.js';
import { formatRange } from '../util/format.js';
import { BENCH_PROGRAM, type BenchArgs, type BenchResult, benchArgRegs, benchResult } from './guest/bench-program.js';
import type { GuestProgram } from './guest/program.js';
import { buildSystemImage, systemImageSize, type SystemLayout } from './guest/system-image.js';
import type { Kvm } from './system.js';
import type { Vcpu } from './vcpu.js';
import type { MemoryRegion, Vm } from './vm.js';
import { physicalAddressBits } from './x86/cpuid.js';
import { entryRegs, longModeSregs } from './x86/long-mode.js';
import type { Regs } from './x86/regs.js';

/** A caller's memory slot: a slot number and the region it maps. */
export interface GuestSlot extends MemoryRegion {
  readonly slot: number;
  /** The guest's page size for this slot in its page tables: 2 MiB (default) or 4 KiB, as memstress maps test memory. */
  readonly guestPageSize?: 4096 | 2097152;
}

export interface GuestVmOptions {
  readonly kvm: Kvm;
  /** The test memory: registered as given, and identity-mapped by the guest's page tables. */
  readonly slots: readonly GuestSlot[];
  /** vCPUs to create, ids 0..vcpus-1. */
  readonly vcpus: number;
  /** Default BENCH_PROGRAM. */
  readonly program?: GuestProgram;
  /** Slot number of the system memory; default the lowest number no caller slot uses. */
  readonly systemSlot?: number;
  /** Guest-physical start of the system memory (2 MiB-aligned); default 0. */
  readonly systemAddress?: GuestAddress;
  /**
   * A VM created beforehand with kvm.createVm(), for slots backed by guest_memfds (a
   * guest_memfd only binds to the VM it was created from: create the VM, then the Backing
   * with vm.guestMemfdFactory(), then the GuestVm). The GuestVm takes it over and closes it.
   */
  readonly vm?: Vm;
  /** KVM_CREATE_VM machine type when `vm` is not given; default KVM_X86_DEFAULT_VM. */
  readonly vmType?: number;
}

/** The system slot: memory the host owns and wrote, never registered with userfaultfd. */
export interface SystemSlot {
  readonly slot: number;
  readonly guestAddress: GuestAddress;
  readonly size: number;
  readonly memory: Mapping;
  readonly layout: SystemLayout;
}

export class GuestVm {
  readonly vm: Vm;
  /** vCPU i has id i. */
  readonly vcpus: readonly Vcpu[];
  readonly system: SystemSlot;
  readonly program: GuestProgram;
  /** The guest's MAXPHYADDR (CPUID 0x80000008), which bounds the slots' guest addresses. */
  readonly physicalBits: number;
  #closed = false;

  private constructor(vm: Vm, vcpus: Vcpu[], system: SystemSlot, program: GuestProgram, physicalBits: number) {
    this.vm = vm;
    this.vcpus = vcpus;
    this.system = system;
    this.program = program;
    this.physicalBits = physicalBits;
  }

  /**
   * Creates (or takes over) the VM, its slots (the system one first) and vCPUs. On failure
   * nothing is left open, including a VM passed in.
   */
  static create(options: GuestVmOptions): GuestVm {
    const { kvm, slots, vcpus: count } = options;
    const program = options.program ?? BENCH_PROGRAM;
    const systemAddress = options.systemAddress ?? gpa(0);
    if (!Number.isInteger(count) || count < 1) throw new InvalidArgumentError(`a guest needs at least one vCPU, not ${count}`);
    const used = new Set(slots.map((s) => s.slot));
    if (used.size !== slots.length) throw new InvalidArgumentError('two slots share a slot number');
    let systemSlot = options.systemSlot ?? 0;
    if (options.systemSlot === undefined) while (used.has(systemSlot)) systemSlot++;
    else if (used.has(systemSlot)) throw new InvalidArgumentError(`system slot ${systemSlot} is also a caller's slot`);

    const ranges = slots.map((s) => ({ start: s.guestAddress as number, size: s.size, ...(s.guestPageSize ? { pageSize: s.guestPageSize } : {}) }));
    const size = systemImageSize(systemAddress, program, count, ranges);
    for (const r of ranges) {
      if (r.start < systemAddress + size && systemAddress < r.start + r.size) {
        throw new InvalidArgumentError(
          `slot ${formatRange(r.start, r.size)} overlaps the system memory ${formatRange(systemAddress, size)}; place test memory above it (e.g. at 4 GiB)`,
        );
      }
    }

    const cpuid = kvm.supportedCpuid();
    const physicalBits = physicalAddressBits(cpuid);
    const memory = Mapping.map(size, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS | MapFlag.NORESERVE });
    let vm: Vm | undefined = options.vm;
    try {
      if (vm && vm.vcpus.length > 0) throw new InvalidArgumentError('the VM given to createGuestVm already has vCPUs');
      const layout = buildSystemImage(memory.bytes(), systemAddress, { program, vcpus: count, ranges, physicalBits });
      vm ??= kvm.createVm(options.vmType);
      vm.setUserMemoryRegion(systemSlot, { guestAddress: systemAddress, size, userspaceAddress: memory.address });
      for (const { guestPageSize: _, slot, ...region } of slots) vm.setUserMemoryRegion(slot, region);
      const vcpus: Vcpu[] = [];
      for (let id = 0; id < count; id++) {
        const vcpu = vm.createVcpu(id);
        vcpu.setCpuid(cpuid);
        vcpus.push(vcpu);
      }
      return new GuestVm(vm, vcpus, { slot: systemSlot, guestAddress: systemAddress, size, memory, layout }, program, physicalBits);
    } catch (e) {
      vm?.close();
      memory.unmap();
      throw e;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  #vcpu(vcpu: Vcpu | number, op: string): Vcpu {
    if (this.#closed) throw new ClosedError('guest VM', op);
    const v = typeof vcpu === 'number' ? this.vcpus[vcpu] : vcpu;
    if (!v || !this.vcpus.includes(v)) throw new InvalidArgumentError(`${op}: vCPU ${typeof vcpu === 'number' ? vcpu : vcpu.id} is not one of this VM's`);
    return v;
  }

  /**
   * Puts `vcpu` at the program's entry in 64-bit mode (KVM_SET_SREGS, KVM_SET_REGS) with
   * `args` in its registers and its own stack. Call before the vCPU's first run.
   */
  enter(vcpu: Vcpu | number, args: Partial<Regs> = {}): void {
    const v = this.#vcpu(vcpu, 'enter');
    const { layout } = this.system;
    v.setSregs(longModeSregs(v.getSregs(), layout));
    v.setRegs(entryRegs(layout.entry, layout.stackTops[this.vcpus.indexOf(v)]!, args));
  }

  /** enter() with the bench program's arguments. */
  start(vcpu: Vcpu | number, args: BenchArgs): void {
    if (this.program !== BENCH_PROGRAM) throw new InvalidArgumentError(`start: this VM runs program '${this.program.name}', not 'bench'`);
    this.enter(vcpu, benchArgRegs(args));
  }

  /** The bench program's results, from the registers of a vCPU stopped at its DONE exit. */
  result(vcpu: Vcpu | number): BenchResult {
    return benchResult(this.#vcpu(vcpu, 'result').getRegs());
  }

  /** Closes the VM (vCPUs first), then unmaps the system memory. The caller's slot memory is the caller's. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.vm.close();
    } finally {
      this.system.memory.unmap();
    }
  }
}

/** GuestVm.create(). */
export function createGuestVm(options: GuestVmOptions): GuestVm {
  return GuestVm.create(options);
}
