/**
 * The migrating guest, on either side: its memory (a Backing), a VM running the migrate
 * program on `vcpus` vCPUs, each over its own slice, and the three things a migration
 * does to it: run, pause (the pause word, then every vCPU's exit), and save or load the
 * vCPUs' state. The source also logs dirty pages of the memory slot.
 */
import { gpa } from '../../address.js';
import { InvalidArgumentError, PostcopyError } from '../../errors.js';
import { DirtyLog, enableManualDirtyLog } from '../../kvm/dirty-log.js';
import { MIGRATE_PROGRAM, type MigrateState, migrateArgRegs, migrateState } from '../../kvm/guest/migrate-program.js';
import { GuestVm } from '../../kvm/guest-vm.js';
import { KvmMemFlag, Msr, StructSize } from '../../kvm/constants.js';
import type { Kvm } from '../../kvm/system.js';
import { StartGate, VcpuThread } from '../../kvm/vcpu-thread.js';
import { packRegs, packSregs, unpackRegs, unpackSregs } from '../../kvm/x86/regs.js';
import { Backing, type BackingSourceName } from '../../memory/backing.js';
import { Madvise } from '../../memory/constants.js';
import { isSystemError } from '../../native/errors.js';
import { formatSize } from '../../util/format.js';

import { setPriority } from 'node:os';

export const GUEST_PAGE = 4096;
/** The nice value of vCPU threads (see arm()). */
export const VCPU_NICE = 5;
const MEMORY_SLOT = 1;

export interface GuestShape {
  readonly source: BackingSourceName;
  readonly size: number;
  readonly vcpus: number;
  /** Guest-physical start of the memory (above the system slot). */
  readonly guestAddress: number;
}

/** A vCPU's state as KVM_GET_REGS / KVM_GET_SREGS give it: opaque bytes that cross the wire. */
export interface VcpuState {
  readonly regs: Uint8Array;
  readonly sregs: Uint8Array;
}
export const VCPU_STATE_BYTES = StructSize.kvm_regs + StructSize.kvm_sregs;

/** Checks a shape once: every vCPU gets a whole number of backing pages. */
export function checkShape(shape: GuestShape, unit: number): void {
  const { size, vcpus } = shape;
  if (!Number.isSafeInteger(size) || size <= 0 || size % (unit * vcpus) !== 0) {
    throw new InvalidArgumentError(`guest memory ${size} bytes does not split into ${vcpus} slices of whole ${formatSize(unit)} pages`, `Use a size that is a multiple of ${formatSize(unit * vcpus)}`);
  }
}

export class MigrationGuest {
  readonly shape: GuestShape;
  readonly backing: Backing;
  readonly vm: GuestVm;
  /** Dirty logging of the memory slot (source only). */
  readonly log: DirtyLog | undefined;
  #threads: VcpuThread[] = [];
  #tids: number[] = [];
  #gate: StartGate | undefined;
  #nice = VCPU_NICE;
  readonly #pauseWord: BigUint64Array;
  #closed = false;

  private constructor(shape: GuestShape, backing: Backing, vm: GuestVm, log: DirtyLog | undefined) {
    this.shape = shape;
    this.backing = backing;
    this.vm = vm;
    this.log = log;
    const { memory, layout } = vm.system;
    this.#pauseWord = new BigUint64Array(memory.bytes().buffer, layout.control - layout.guestAddress, 1);
  }

  /** Memory, VM and vCPUs at the program's entry; `dirtyLog` turns on logging of the memory slot. */
  static create(kvm: Kvm, shape: GuestShape, options: { dirtyLog: boolean }): MigrationGuest {
    const backing = Backing.create(shape.source, shape.size, { name: 'postcopy-migrate' });
    checkShape(shape, backing.info.pageSize);
    let g: GuestVm | undefined;
    try {
      const vm = kvm.createVm();
      if (options.dirtyLog) {
        try {
          enableManualDirtyLog(vm);
        } catch (e) {
          vm.close();
          throw e;
        }
      }
      g = GuestVm.create({
        kvm,
        vm,
        vcpus: shape.vcpus,
        program: MIGRATE_PROGRAM,
        slots: [
          {
            slot: MEMORY_SLOT,
            guestAddress: gpa(shape.guestAddress),
            size: shape.size,
            userspaceAddress: backing.primary.address,
            guestPageSize: GUEST_PAGE,
            ...(options.dirtyLog ? { flags: KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES } : {}),
          },
        ],
      });
      const guest = new MigrationGuest(shape, backing, g, options.dirtyLog ? new DirtyLog(vm, MEMORY_SLOT, shape.size) : undefined);
      for (let i = 0; i < shape.vcpus; i++) {
        const s = guest.slice(i);
        g.enter(i, migrateArgRegs({ base: gpa(s.guestAddress), pages: s.pages, stride: GUEST_PAGE, control: g.system.layout.control }));
      }
      return guest;
    } catch (e) {
      g?.close();
      backing.close();
      throw e;
    }
  }

  /**
   * Allocates and maps every page of the memory where arriving pages will be written (the
   * alias of shared memory, the memory itself when private), before any arrive: a page
   * first touched by the receive path costs a fault and a zeroing in the middle of the
   * stream, which on this kind of host cuts loopback throughput to a third. Done before
   * the destination accepts, like a VMM that preallocates guest RAM. Returns whether the
   * kernel did it (MADV_POPULATE_WRITE, Linux 5.14+); a false leaves pages to be faulted in.
   */
  populate(): boolean {
    try {
      (this.backing.alias ?? this.backing.primary).advise(Madvise.POPULATE_WRITE);
      return true;
    } catch (e) {
      if (isSystemError(e, 'EINVAL')) return false;
      throw e;
    }
  }

  /** The backing's page size: the unit pages move in and faults are resolved in. */
  get unit(): number {
    return this.backing.info.pageSize;
  }

  /** vCPU threads exist (running, or armed and waiting at the gate). */
  get running(): boolean {
    return this.#threads.length > 0;
  }

  /** vCPU i's slice: its first guest address and its 4 KiB pages. */
  slice(i: number): { guestAddress: number; pages: number } {
    const bytes = this.shape.size / this.shape.vcpus;
    return { guestAddress: this.shape.guestAddress + i * bytes, pages: bytes / GUEST_PAGE };
  }

  /** Host address of guest address `a` in the guest's own (primary) mapping. */
  host(a: number): number {
    return this.backing.primary.address + (a - this.shape.guestAddress);
  }

  /**
   * Spawns every vCPU's thread, waiting at a start gate: a destination does this before
   * the switchover, so resuming is only go() (spawning a worker costs tens of ms).
   * Registers may still be loaded until go().
   */
  async arm(): Promise<void> {
    if (this.running || this.#gate) throw new InvalidArgumentError('arm: the guest is already running or armed');
    const gate = new StartGate();
    this.#threads = await Promise.all(this.vm.vcpus.map((v) => VcpuThread.spawn(v, { gate })));
    this.#tids = await Promise.all(this.#threads.map((t) => t.ready.then((r) => r.tid)));
    // The guest's loop never idles. On a host with as few CPUs as vCPUs, the VMM threads
    // that serve it (the event loop that moves pages, the fault reader) would wait a whole
    // scheduler slice behind a vCPU for every page; a lower weight for vCPU threads lets
    // them in at once. Best effort: leave the default where it is not allowed.
    if (this.#nice !== 0) {
      for (const tid of this.#tids) {
        try {
          setPriority(tid, this.#nice);
        } catch {
          break;
        }
      }
    }
    this.#gate = gate;
  }

  /** Opens the gate of arm(): every vCPU enters the guest now. Returns the threads' kernel ids, by vCPU. */
  go(): number[] {
    if (!this.#gate) throw new InvalidArgumentError('go: arm() first');
    this.#pauseWord[0] = 0n;
    this.#gate.open();
    this.#gate = undefined;
    return this.#tids;
  }

  /** arm() then go(). */
  async run(): Promise<number[]> {
    await this.arm();
    return this.go();
  }

  /**
   * Asks every vCPU to stop (the pause word) and waits until each has: afterwards the
   * registers are the guest's whole state. A vCPU that stopped for any other reason
   * (an exception, an exit the program never makes) fails the pause, saying why.
   */
  async pause(): Promise<void> {
    this.#pauseWord[0] = 1n;
    // Armed threads wait at the gate: let them in; they see the pause word at once.
    this.#gate?.open();
    this.#gate = undefined;
    const threads = this.#threads;
    this.#threads = [];
    // The report comes once the vCPU is out of KVM_RUN and its thread has let go of it;
    // the worker's own exit is not worth waiting for during a blackout.
    const reports = await Promise.all(threads.map((t) => t.report));
    for (const r of reports) {
      if (r.type !== 'paused') throw new PostcopyError('ERR_GUEST', r.type === 'failed' ? r.error : `vCPU ${r.vcpuId} finished instead of pausing`);
    }
  }

  /** Every vCPU's program state (registers), paused. */
  states(): MigrateState[] {
    return this.vm.vcpus.map((v) => migrateState(v.getRegs()));
  }

  save(): VcpuState[] {
    return this.vm.vcpus.map((v) => ({ regs: packRegs(v.getRegs()), sregs: packSregs(v.getSregs()) }));
  }

  /**
   * Loads saved vCPU states. `resetStall` zeroes the program's longest-gap record (R14,
   * R15) but keeps the TSC of the last access (R13): the first access after resuming then
   * measures the whole pause, and the record from here on is the migration's.
   */
  load(states: readonly VcpuState[], options: { resetStall?: boolean } = {}): void {
    if (states.length !== this.vm.vcpus.length) throw new InvalidArgumentError(`load: ${states.length} vCPU states for ${this.vm.vcpus.length} vCPUs`);
    this.vm.vcpus.forEach((v, i) => {
      v.setSregs(unpackSregs(states[i]!.sregs));
      const regs = unpackRegs(states[i]!.regs);
      v.setRegs(options.resetStall ? { ...regs, r14: 0n, r15: 0n } : regs);
    });
  }

  /** The guest's TSC (vCPU 0) and its frequency. */
  tsc(): { tsc: bigint; khz: number } {
    const v = this.vm.vcpus[0]!;
    return { tsc: v.getMsrs([Msr.IA32_TSC])[0]!, khz: v.tscKhz };
  }

  /** Sets every vCPU's TSC (KVM may keep its own; read tsc() after to know). */
  setTsc(value: bigint): void {
    for (const v of this.vm.vcpus) v.setMsrs([{ index: Msr.IA32_TSC, value }]);
  }

  /** The counter (first 8 bytes) of every 4 KiB page, read through `view` of the whole memory. */
  counters(view: Uint8Array): BigUint64Array {
    return new BigUint64Array(view.buffer, view.byteOffset, view.byteLength / 8);
  }

  /**
   * Closes the VM, the dirty log and the memory. Only with every vCPU paused or stopped:
   * a vCPU thread inside KVM_RUN would outlive its VM's memory. Safe twice.
   */
  close(): void {
    if (this.#closed) return;
    if (this.running) throw new InvalidArgumentError('close: pause the guest first (vCPUs are running)');
    this.#closed = true;
    try {
      this.vm.close();
      this.log?.close();
    } finally {
      this.backing.close();
    }
  }
}

