/**
 * The messages between a vCPU worker (vcpu.worker.ts) and the thread that started it
 * (vcpu-thread.ts). Plain data only: it crosses postMessage (bigint included).
 */
import type { VcpuExit } from './exit.js';
import type { BenchResult } from './guest/bench-program.js';
import type { VcpuHandle } from './vcpu.js';
import type { Regs } from './x86/regs.js';

/** workerData of vcpu.worker.js. */
export interface VcpuWorkerData {
  readonly vcpu: VcpuHandle;
  /** Pin the worker thread to this CPU before running (sched_setaffinity of its tid). */
  readonly cpu?: number;
  /** An Int32Array's buffer: the worker waits until element 0 is non-zero (StartGate). */
  readonly gate?: SharedArrayBuffer;
}

/** A CPU exception the guest program reported (GuestPort.EXCEPTION). */
export interface GuestException {
  readonly vector: number;
  /** '#PF', '#GP', ... */
  readonly name: string;
  readonly errorCode: bigint;
  readonly rip: bigint;
  /** The faulting address of a #PF. */
  readonly cr2: bigint;
}

/** The worker is pinned (if asked), holds its vCPU, and waits at the gate. */
export interface VcpuReadyMessage {
  readonly type: 'ready';
  /** The worker's kernel thread id (for affinity, or to signal it). */
  readonly tid: number;
  /** The CPU it was on when ready. */
  readonly cpu: number;
}

interface Timing {
  /** Nanoseconds spent inside KVM_RUN, summed over runs (process.hrtime.bigint() around each). */
  readonly ns: bigint;
  /** process.hrtime.bigint() before the first KVM_RUN and after the last. */
  readonly startNs: bigint;
  readonly endNs: bigint;
  /** KVM_RUN calls, and how many of them returned EINTR/EAGAIN. */
  readonly runs: number;
  readonly interrupted: number;
}

/** The program reached its DONE exit. */
export interface VcpuDoneMessage extends Timing {
  readonly type: 'done';
  readonly vcpuId: number;
  readonly exit: VcpuExit;
  readonly regs: Regs;
  /** The bench program's results, read from `regs`. */
  readonly result: BenchResult;
}

/**
 * The program saw the host's pause request (GuestPort.PAUSE): the vCPU is stopped between
 * two instructions of the program, its state in `regs`; a new thread can run it on.
 */
export interface VcpuPausedMessage extends Timing {
  readonly type: 'paused';
  readonly vcpuId: number;
  readonly regs: Regs;
}

/** The vCPU stopped anywhere else: an unexpected exit, a guest exception, or a failing ioctl. */
export interface VcpuFailedMessage extends Partial<Timing> {
  readonly type: 'failed';
  readonly vcpuId: number;
  /** One line saying what happened. */
  readonly error: string;
  readonly exit?: VcpuExit;
  readonly exception?: GuestException;
  /** The registers when it stopped, if they could be read. */
  readonly regs?: Regs;
}

export type VcpuReport = VcpuDoneMessage | VcpuPausedMessage | VcpuFailedMessage;
export type VcpuWorkerMessage = VcpuReadyMessage | VcpuReport;
