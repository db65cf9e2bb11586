/**
 * The `threads` guest backend: the migrate program's workload run by worker threads in
 * this process over the guest's primary mapping (worker.ts), for machines without KVM.
 * Everything a migration sees is the same as with KVM: memory in a Backing, workers over
 * equal slices, a pause word checked between two accesses, a state that crosses the wire
 * as bytes, the guest's own clock; a worker touching a page that is not there blocks in
 * userfaultfd as a vCPU would. Its writes go through the primary mapping, so the source
 * tracks them with userfaultfd write-protect (uffd-wp).
 */
import { Worker } from 'node:worker_threads';
import { InvalidArgumentError, PostcopyError } from '../../errors.js';
import { Backing } from '../../memory/backing.js';
import type { DirtyTracker, TrackerName } from '../../tracking/tracker.js';
import { UffdWpTracker } from '../../tracking/uffd-wp.js';
import type { GuestClock, GuestCreateOptions, GuestShape, MigratableGuest, WorkerState } from '../guest.js';
import { checkBacking, checkShape, populateForArrivals, renice, sliceOf, VCPU_NICE } from '../shape.js';
import { PrestartedWorker } from '../../util/prestarted-worker.js';
import { SlicePlan, SWEEP } from '../workload.js';
import { Control, type ReservedRange, Slot, STATE_MAGIC, THREADS_STATE_BYTES, TICKS_PER_MS, type WorkerConfig, type WorkerMessage } from './layout.js';

const now = () => performance.timeOrigin + performance.now();
const WORKER_URL = new URL('./worker.js', import.meta.url);

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

export class ThreadsGuest implements MigratableGuest {
  readonly backend = 'threads' as const;
  readonly shape: GuestShape;
  readonly backing: Backing;
  readonly stateBytes = THREADS_STATE_BYTES;
  readonly trackers: readonly TrackerName[] = ['uffd-wp'];
  readonly tracker: DirtyTracker | undefined;
  readonly #control = new Int32Array(new SharedArrayBuffer(Control.WORDS * 4));
  readonly #clock = new Float64Array(new SharedArrayBuffer(8));
  readonly #slots: BigInt64Array;
  /** The workload over one slice (every slice has the same number of pages). */
  readonly plan: SlicePlan;
  #workers: Worker[] = [];
  /** Started earlier, waiting for their configuration (GuestCreateOptions.workers). */
  readonly #prestarted: PrestartedWorker[];
  #tids: number[] = [];
  /** Workers that have not reported 'paused' since the gate last opened. */
  #outstanding = 0;
  #waiters: Waiter[] = [];
  #armed = false;
  #running = false;
  /** No state loaded and never run: the first go() starts the clock record now. */
  #fresh = true;
  #failure: Error | undefined;
  #closed = false;

  private constructor(shape: GuestShape, backing: Backing, tracker: DirtyTracker | undefined, prestarted: PrestartedWorker[]) {
    this.shape = shape;
    this.#prestarted = prestarted;
    this.backing = backing;
    this.tracker = tracker;
    this.#slots = new BigInt64Array(new SharedArrayBuffer(shape.vcpus * Slot.WORDS * 8));
    this.plan = new SlicePlan(shape.workload ?? SWEEP, sliceOf(shape, 0).pages);
    for (let i = 0; i < shape.vcpus; i++) this.#slot(i)[Slot.PASS] = 1n;
  }

  /** Memory and workers' state at the program's entry (pass 1, page 0); no thread exists until arm(). */
  static create(shape: GuestShape, options: GuestCreateOptions = {}): ThreadsGuest {
    if (options.tracking === 'kvm-dirty-log') {
      throw new InvalidArgumentError('the threads guest has no KVM dirty log: its writes are tracked with userfaultfd write-protect', 'Use uffd-wp tracking, or the kvm guest where /dev/kvm is usable');
    }
    const backing = options.backing ?? Backing.create(shape.source, shape.size, { name: 'postcopy-migrate' });
    let tracker: DirtyTracker | undefined;
    try {
      checkShape(shape, backing.info.pageSize);
      checkBacking(shape, backing);
      if (options.tracking === 'uffd-wp') tracker = UffdWpTracker.start({ address: backing.primary.address, size: shape.size, pageSize: backing.info.pageSize });
      return new ThreadsGuest(shape, backing, tracker, options.workers ?? []);
    } catch (e) {
      backing.close();
      throw e;
    }
  }

  /**
   * Starts `n` worker threads that wait for a guest to run (a restorer started before its
   * snapshot is opened: a worker's start is most of a restore's time to resume otherwise).
   */
  static prestart(n: number, reserved?: ReservedRange): PrestartedWorker[] {
    return Array.from({ length: n }, () => PrestartedWorker.spawn(WORKER_URL, reserved));
  }

  get unit(): number {
    return this.backing.info.pageSize;
  }

  get running(): boolean {
    return this.#armed || this.#running;
  }

  populate(): boolean {
    return populateForArrivals(this.backing);
  }

  slice(i: number): { guestAddress: number; pages: number } {
    return sliceOf(this.shape, i);
  }

  #slot(i: number): BigInt64Array {
    return this.#slots.subarray(i * Slot.WORDS, (i + 1) * Slot.WORDS);
  }

  /** Spawns the workers (once; later arms reuse the parked ones), waiting at the gate. */
  async arm(): Promise<void> {
    this.#open('arm');
    if (this.running) throw new InvalidArgumentError('arm: the guest is already running or armed');
    if (this.#workers.length === 0) await this.#spawn();
    this.#armed = true;
  }

  async #spawn(): Promise<void> {
    const bytes = this.shape.size / this.shape.vcpus;
    const readies: Promise<number>[] = [];
    for (let i = 0; i < this.shape.vcpus; i++) {
      const s = this.slice(i);
      const config: WorkerConfig = {
        index: i,
        host: this.backing.primary.address + i * bytes,
        bytes,
        guestAddress: s.guestAddress,
        setPages: this.plan.setPages,
        step: this.plan.step,
        sweep: this.plan.workload.kind === 'sweep',
        control: this.#control.buffer as SharedArrayBuffer,
        clock: this.#clock.buffer as SharedArrayBuffer,
        slots: this.#slots.buffer as SharedArrayBuffer,
      };
      const early = this.#prestarted.shift();
      const w = early ? early.begin(config) : new Worker(WORKER_URL, { workerData: config });
      this.#workers.push(w);
      readies.push(
        new Promise<number>((resolve, reject) => {
          w.on('message', (m: WorkerMessage) => {
            if (m.type === 'ready') resolve(m.tid);
            else if (m.type === 'paused') this.#onPaused();
          });
          w.on('error', (e) => {
            reject(e);
            this.#onFailure(new PostcopyError('ERR_GUEST', `guest thread ${i} failed: ${e.message}`));
          });
          w.on('exit', (code) => {
            reject(new Error(`exited (${code})`));
            if (!this.#closed) this.#onFailure(new PostcopyError('ERR_GUEST', `guest thread ${i} exited (${code}) while the guest was alive`));
          });
        }),
      );
    }
    this.#tids = await Promise.all(readies);
    renice(this.#tids, VCPU_NICE);
  }

  #onPaused(): void {
    if (--this.#outstanding > 0) return;
    this.#running = false;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve();
  }

  #onFailure(e: Error): void {
    this.#failure ??= e;
    this.#running = false;
    this.#armed = false;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(this.#failure);
  }

  #openGate(): void {
    this.#outstanding = this.#workers.length;
    this.#running = true;
    this.#armed = false;
    Atomics.add(this.#control, Control.GATE, 1);
    Atomics.notify(this.#control, Control.GATE);
  }

  go(): number[] {
    this.#open('go');
    if (!this.#armed) throw new InvalidArgumentError('go: arm() first');
    if (this.#fresh) {
      // The clock record starts when the guest first runs (as a vCPU's first RDTSC).
      const t = BigInt(Math.round((now() - this.#clock[0]!) * 1e6));
      for (let i = 0; i < this.shape.vcpus; i++) this.#slot(i)[Slot.LAST_TICK] = t;
      this.#fresh = false;
    }
    Atomics.store(this.#control, Control.PAUSE, 0);
    this.#openGate();
    return this.#tids;
  }

  async run(): Promise<number[]> {
    await this.arm();
    return this.go();
  }

  /**
   * Sets the pause word and waits until every worker has stopped between two accesses.
   * A worker blocked in a fault stops once the fault is resolved. A worker that died
   * fails the pause, saying why.
   */
  async pause(): Promise<void> {
    if (this.#failure) throw this.#failure;
    Atomics.store(this.#control, Control.PAUSE, 1);
    // Armed workers wait at the gate: let them in; they see the pause word at once.
    if (this.#armed) this.#openGate();
    if (!this.#running) return;
    await new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  states(): WorkerState[] {
    return Array.from({ length: this.shape.vcpus }, (_, i) => decodeSlot(this.#slot(i)));
  }

  save(): Uint8Array[] {
    return Array.from({ length: this.shape.vcpus }, (_, i) => {
      const out = new Uint8Array(THREADS_STATE_BYTES);
      const v = new DataView(out.buffer);
      v.setBigUint64(0, STATE_MAGIC, true);
      const s = this.#slot(i);
      for (let f = 0; f < 7; f++) v.setBigUint64(8 + f * 8, BigInt.asUintN(64, s[f]!), true);
      return out;
    });
  }

  decodeState(state: Uint8Array): WorkerState {
    return decodeSlot(this.#parse(state, 0));
  }

  #parse(state: Uint8Array, i: number): BigInt64Array {
    if (state.byteLength !== THREADS_STATE_BYTES) throw new InvalidArgumentError(`thread ${i}'s state is ${state.byteLength} bytes, a threads guest's is ${THREADS_STATE_BYTES}`);
    const v = new DataView(state.buffer, state.byteOffset, state.byteLength);
    if (v.getBigUint64(0, true) !== STATE_MAGIC) throw new InvalidArgumentError(`thread ${i}'s state is not a threads guest's (magic 0x${v.getBigUint64(0, true).toString(16)})`);
    const s = new BigInt64Array(Slot.WORDS);
    for (let f = 0; f < 7; f++) s[f] = BigInt.asIntN(64, v.getBigUint64(8 + f * 8, true));
    if (s[Slot.PASS]! < 1n || s[Slot.PASS]! >= 2n ** 32n) throw new InvalidArgumentError(`thread ${i}'s state: pass ${s[Slot.PASS]} is not in 1..2^32-1`);
    const length = this.plan.passLength(s[Slot.PASS]!);
    if (s[Slot.INDEX]! < 0n || s[Slot.INDEX]! >= BigInt(length)) throw new InvalidArgumentError(`thread ${i}'s state: access ${s[Slot.INDEX]} is not in its pass of ${length} pages`);
    return s;
  }

  load(states: readonly Uint8Array[], options: { resetStall?: boolean } = {}): void {
    this.#open('load');
    if (this.#running) throw new InvalidArgumentError('load: pause the guest first');
    if (states.length !== this.shape.vcpus) throw new InvalidArgumentError(`load: ${states.length} thread states for ${this.shape.vcpus} threads`);
    const parsed = states.map((s, i) => this.#parse(s, i));
    parsed.forEach((s, i) => {
      if (options.resetStall) {
        s[Slot.MAX_GAP] = 0n;
        s[Slot.MAX_GAP_END] = 0n;
      }
      this.#slot(i).set(s);
    });
    this.#fresh = false;
  }

  clock(): GuestClock {
    return { ticks: BigInt(Math.round((now() - this.#clock[0]!) * 1e6)), ticksPerMs: TICKS_PER_MS };
  }

  setClock(ticks: bigint): void {
    if (this.#running) throw new InvalidArgumentError('setClock: pause the guest first');
    this.#clock[0] = now() - Number(ticks) / 1e6;
  }

  #open(operation: string): void {
    if (this.#closed) throw new InvalidArgumentError(`${operation}: the guest is closed`);
  }

  /** Ends the workers and closes the tracker and the memory; only when paused. Safe twice. */
  close(): void {
    if (this.#closed) return;
    if (this.#running) throw new InvalidArgumentError('close: pause the guest first (its threads are running)');
    this.#closed = true;
    // Parked workers sit in Atomics.wait: terminate() ends them there. They hold no
    // resource of their own; their view of the memory dies with them.
    const workers = this.#workers;
    this.#workers = [];
    for (const w of workers) {
      w.unref();
      void w.terminate();
    }
    try {
      this.tracker?.close();
    } finally {
      this.backing.close();
    }
  }
}

function decodeSlot(s: BigInt64Array): WorkerState {
  return {
    pass: s[Slot.PASS]!,
    index: Number(s[Slot.INDEX]),
    mismatches: Number(s[Slot.MISMATCHES]),
    firstMismatch: Number(s[Slot.FIRST_MISMATCH]),
    lastTsc: s[Slot.LAST_TICK]!,
    maxGapTicks: s[Slot.MAX_GAP]!,
    maxGapEndTsc: s[Slot.MAX_GAP_END]!,
  };
}

