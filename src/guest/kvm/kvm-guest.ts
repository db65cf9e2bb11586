/**
 * The `kvm` guest backend: memory in a Backing, a KVM VM running the migrate program on
 * `vcpus` vCPUs (src/kvm/guest/migrate-program.ts), each over its own slice, and the
 * things a migration does to it: run, pause (the pause word, then every vCPU's exit),
 * save or load the vCPUs' state (kvm_regs + kvm_sregs, opaque bytes that cross the wire).
 * A source also tracks dirty pages: KVM's dirty log of the memory slot, or userfaultfd
 * write-protect of the host mapping.
 */
import { gpa } from '../../address.js';
import { InvalidArgumentError, PostcopyError, UnsupportedError } from '../../errors.js';
import { DirtyLog, enableManualDirtyLog } from '../../kvm/dirty-log.js';
import { MIGRATE_PROGRAM, migrateArgRegs, migrateState } from '../../kvm/guest/migrate-program.js';
import { GuestVm } from '../../kvm/guest-vm.js';
import { KvmMemFlag, Msr, StructSize } from '../../kvm/constants.js';
import { Kvm } from '../../kvm/system.js';
import { StartGate, VcpuThread } from '../../kvm/vcpu-thread.js';
import { packRegs, packSregs, unpackRegs, unpackSregs } from '../../kvm/x86/regs.js';
import { Backing } from '../../memory/backing.js';
import type { DirtyTracker, TrackerName } from '../../tracking/tracker.js';
import { KvmDirtyLogTracker } from '../../tracking/kvm-dirty-log.js';
import { UffdWpTracker } from '../../tracking/uffd-wp.js';
import { type GuestClock, type GuestCreateOptions, type GuestShape, GUEST_PAGE, type MigratableGuest, type WorkerState } from '../guest.js';
import { checkBacking, checkShape, populateForArrivals, renice, sliceOf, VCPU_NICE } from '../shape.js';
import { describeWorkload, SlicePlan, SWEEP } from '../workload.js';

const MEMORY_SLOT = 1;
/** One vCPU's saved state: kvm_regs then kvm_sregs, as KVM gives them. */
export const VCPU_STATE_BYTES = StructSize.kvm_regs + StructSize.kvm_sregs;

export class KvmGuest implements MigratableGuest {
  readonly backend = 'kvm' as const;
  readonly shape: GuestShape;
  readonly backing: Backing;
  readonly vm: GuestVm;
  readonly stateBytes = VCPU_STATE_BYTES;
  readonly trackers: readonly TrackerName[] = ['kvm-dirty-log', 'uffd-wp'];
  readonly tracker: DirtyTracker | undefined;
  readonly plan: SlicePlan;
  readonly #kvm: Kvm | undefined;
  #threads: VcpuThread[] = [];
  #tids: number[] = [];
  #gate: StartGate | undefined;
  readonly #pauseWord: BigUint64Array;
  #closed = false;

  private constructor(shape: GuestShape, backing: Backing, vm: GuestVm, tracker: DirtyTracker | undefined, kvm: Kvm | undefined) {
    this.shape = shape;
    this.backing = backing;
    this.vm = vm;
    this.tracker = tracker;
    this.#kvm = kvm;
    this.plan = new SlicePlan(SWEEP, sliceOf(shape, 0).pages);
    const { memory, layout } = vm.system;
    this.#pauseWord = new BigUint64Array(memory.bytes().buffer, layout.control - layout.guestAddress, 1);
  }

  /**
   * Memory, VM and vCPUs at the program's entry. `kvm` is the /dev/kvm handle to use; left
   * out, one is opened and closed with the guest.
   */
  static create(shape: GuestShape, options: GuestCreateOptions & { kvm?: Kvm } = {}): KvmGuest {
    // The vCPUs run the migrate program, which sweeps every page; a working set would need
    // its own guest code (not written yet).
    if (shape.workload && shape.workload.kind !== 'sweep') {
      options.backing?.close();
      throw new UnsupportedError(`the kvm guest runs only the sweep workload (every page, every pass), not ${describeWorkload(shape.workload)}`, 'Use the threads guest (--guest threads) for a working-set workload');
    }
    const ownKvm = options.kvm ? undefined : Kvm.open();
    const kvm = options.kvm ?? ownKvm!;
    const dirtyLog = options.tracking === 'kvm-dirty-log';
    let backing: Backing | undefined;
    let g: GuestVm | undefined;
    let tracker: DirtyTracker | undefined;
    try {
      backing = options.backing ?? Backing.create(shape.source, shape.size, { name: 'postcopy-migrate' });
      checkShape(shape, backing.info.pageSize);
      checkBacking(shape, backing);
      const vm = kvm.createVm();
      if (dirtyLog) {
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
            ...(dirtyLog ? { flags: KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES } : {}),
          },
        ],
      });
      if (dirtyLog) tracker = new KvmDirtyLogTracker(new DirtyLog(vm, MEMORY_SLOT, shape.size));
      else if (options.tracking === 'uffd-wp') {
        // KVM writes guest memory through the host mapping's page tables (its MMU follows
        // them through the MMU notifier), so write-protecting that mapping sees the guest.
        tracker = UffdWpTracker.start({ address: backing.primary.address, size: shape.size, pageSize: backing.info.pageSize });
      }
      const guest = new KvmGuest(shape, backing, g, tracker, ownKvm);
      for (let i = 0; i < shape.vcpus; i++) {
        const s = guest.slice(i);
        g.enter(i, migrateArgRegs({ base: gpa(s.guestAddress), pages: s.pages, stride: GUEST_PAGE, control: g.system.layout.control }));
      }
      return guest;
    } catch (e) {
      tracker?.close();
      g?.close();
      backing?.close();
      ownKvm?.close();
      throw e;
    }
  }

  populate(): boolean {
    return populateForArrivals(this.backing);
  }

  get unit(): number {
    return this.backing.info.pageSize;
  }

  get running(): boolean {
    return this.#threads.length > 0;
  }

  slice(i: number): { guestAddress: number; pages: number } {
    return sliceOf(this.shape, i);
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
    renice(this.#tids, VCPU_NICE);
    this.#gate = gate;
  }

  go(): number[] {
    if (!this.#gate) throw new InvalidArgumentError('go: arm() first');
    this.#pauseWord[0] = 0n;
    this.#gate.open();
    this.#gate = undefined;
    return this.#tids;
  }

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

  states(): WorkerState[] {
    return this.vm.vcpus.map((v) => migrateState(v.getRegs()));
  }

  save(): Uint8Array[] {
    return this.vm.vcpus.map((v) => {
      const out = new Uint8Array(VCPU_STATE_BYTES);
      out.set(packRegs(v.getRegs()), 0);
      out.set(packSregs(v.getSregs()), StructSize.kvm_regs);
      return out;
    });
  }

  decodeState(state: Uint8Array): WorkerState {
    this.#checkState(state, 0);
    return migrateState(unpackRegs(state.subarray(0, StructSize.kvm_regs)));
  }

  /**
   * Loads saved vCPU states. `resetStall` zeroes the program's longest-gap record (R14,
   * R15) but keeps the TSC of the last access (R13): the first access after resuming then
   * measures the whole pause, and the record from here on is the migration's.
   */
  load(states: readonly Uint8Array[], options: { resetStall?: boolean } = {}): void {
    if (states.length !== this.vm.vcpus.length) throw new InvalidArgumentError(`load: ${states.length} vCPU states for ${this.vm.vcpus.length} vCPUs`);
    states.forEach((s, i) => this.#checkState(s, i));
    this.vm.vcpus.forEach((v, i) => {
      const s = states[i]!;
      v.setSregs(unpackSregs(s.subarray(StructSize.kvm_regs)));
      const regs = unpackRegs(s.subarray(0, StructSize.kvm_regs));
      v.setRegs(options.resetStall ? { ...regs, r14: 0n, r15: 0n } : regs);
    });
  }

  #checkState(state: Uint8Array, i: number): void {
    if (state.byteLength !== VCPU_STATE_BYTES) throw new InvalidArgumentError(`vCPU ${i}'s state is ${state.byteLength} bytes, a kvm guest's is ${VCPU_STATE_BYTES}`);
  }

  /** vCPU 0's TSC and its frequency. */
  clock(): GuestClock {
    const v = this.vm.vcpus[0]!;
    return { ticks: v.getMsrs([Msr.IA32_TSC])[0]!, ticksPerMs: v.tscKhz };
  }

  setClock(ticks: bigint): void {
    for (const v of this.vm.vcpus) v.setMsrs([{ index: Msr.IA32_TSC, value: ticks }]);
  }

  /**
   * Closes the VM, the tracker and the memory. Only with every vCPU paused or stopped:
   * a vCPU thread inside KVM_RUN would outlive its VM's memory. Safe twice.
   */
  close(): void {
    if (this.#closed) return;
    if (this.running) throw new InvalidArgumentError('close: pause the guest first (vCPUs are running)');
    this.#closed = true;
    try {
      this.tracker?.close();
      this.vm.close();
    } finally {
      this.backing.close();
      this.#kvm?.close();
    }
  }
}
