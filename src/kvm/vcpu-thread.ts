/**
 * Runs a vCPU in its own worker thread (vcpu.worker.ts), as the bench does for each vCPU:
 * the thread blocks in KVM_RUN while this one stays free (to serve userfaultfd, to time).
 *
 *   const gate = new StartGate();
 *   const threads = await Promise.all(g.vcpus.map((v, i) => VcpuThread.spawn(v, { gate, cpu: pins[i] })));
 *   gate.open();                                   // every vCPU enters the guest now
 *   const reports = await Promise.all(threads.map((t) => t.report));
 *
 * A worker blocked in KVM_RUN cannot be terminated from JavaScript (Worker.terminate()
 * waits for the native call); only the guest's exit ends it. Close the VM after every
 * report is in.
 */
import { Worker } from 'node:worker_threads';
import type { Vcpu } from './vcpu.js';
import type { VcpuReadyMessage, VcpuReport, VcpuWorkerData, VcpuWorkerMessage } from './vcpu-run.js';

/** A start line shared by vCPU threads: each waits (Atomics.wait) until open(). */
export class StartGate {
  readonly buffer = new SharedArrayBuffer(4);
  readonly #flag = new Int32Array(this.buffer);

  open(): void {
    Atomics.store(this.#flag, 0, 1);
    Atomics.notify(this.#flag, 0);
  }

  get opened(): boolean {
    return Atomics.load(this.#flag, 0) !== 0;
  }
}

export interface VcpuThreadOptions {
  /** Pin the thread to this CPU. */
  readonly cpu?: number;
  /** Wait for this gate before the first KVM_RUN; without one the vCPU runs as soon as it is ready. */
  readonly gate?: StartGate;
}

export class VcpuThread {
  readonly vcpuId: number;
  readonly worker: Worker;
  /** The worker's kernel thread id and the CPU it was on, once ready. */
  readonly ready: Promise<VcpuReadyMessage>;
  /** How the run ended. Rejects only if the worker itself failed (not for a guest failure: that is a 'failed' report). */
  readonly report: Promise<VcpuReport>;

  private constructor(vcpu: Vcpu, options: VcpuThreadOptions) {
    this.vcpuId = vcpu.id;
    const workerData: VcpuWorkerData = { vcpu: vcpu.handle, cpu: options.cpu, gate: options.gate?.buffer };
    this.worker = new Worker(new URL('./vcpu.worker.js', import.meta.url), { workerData });
    let onReady!: (m: VcpuReadyMessage) => void;
    this.ready = new Promise((resolve) => (onReady = resolve));
    this.report = new Promise((resolve, reject) => {
      this.worker.on('message', (m: VcpuWorkerMessage) => {
        if (m.type === 'ready') onReady(m);
        else resolve(m);
      });
      this.worker.on('error', reject);
      this.worker.on('exit', (code) => reject(new Error(`vCPU ${vcpu.id} worker exited with code ${code} before reporting`)));
    });
    // A worker that fails before it is ready must not leave `ready` hanging.
    this.report.catch(() => undefined);
  }

  /**
   * Starts the worker and resolves once it is ready (pinned, waiting at the gate), or with
   * its report if it ended first (e.g. it could not pin).
   */
  static async spawn(vcpu: Vcpu, options: VcpuThreadOptions = {}): Promise<VcpuThread> {
    const t = new VcpuThread(vcpu, options);
    await Promise.race([t.ready, t.report]);
    return t;
  }

  /** The report, after the worker has exited. */
  async join(): Promise<VcpuReport> {
    const report = await this.report;
    if (this.worker.threadId !== -1) await new Promise((r) => this.worker.once('exit', r));
    return report;
  }
}

/** Spawns one thread per vCPU behind one gate, opens it, and waits for every report. */
export async function runVcpus(vcpus: readonly Vcpu[], options: { cpus?: readonly (number | undefined)[] } = {}): Promise<VcpuReport[]> {
  const gate = new StartGate();
  const threads = await Promise.all(vcpus.map((v, i) => VcpuThread.spawn(v, { gate, cpu: options.cpus?.[i] })));
  gate.open();
  return Promise.all(threads.map((t) => t.join()));
}
