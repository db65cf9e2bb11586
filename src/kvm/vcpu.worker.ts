/**
 * A vCPU's thread: pins itself (if asked), borrows the vCPU the main thread created,
 * waits at the start gate, then blocks in KVM_RUN until the guest program reports DONE
 * (or PAUSE, for programs that run until the host asks them to stop),
 * timing each KVM_RUN. Whatever else stops the vCPU (a guest exception, shutdown,
 * fail_entry, internal_error, memory_fault, an ioctl error) is reported with its details,
 * and the worker ends: it never runs a vCPU that cannot make progress.
 *
 * Started by VcpuThread (vcpu-thread.ts); the messages are in vcpu-run.ts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../native/binding.js';
import { describeExit, type VcpuExit } from './exit.js';
import { benchResult } from './guest/bench-program.js';
import { EXCEPTION_NAMES, GuestPort } from './guest/program.js';
import { Vcpu } from './vcpu.js';
import type { GuestException, VcpuReport, VcpuWorkerData, VcpuWorkerMessage } from './vcpu-run.js';
import type { Regs } from './x86/regs.js';

const data = workerData as VcpuWorkerData;
const post = (m: VcpuWorkerMessage) => parentPort!.postMessage(m);

function exceptionOf(regs: Regs): GuestException {
  const vector = Number(regs.rax & 0xffn);
  return { vector, name: EXCEPTION_NAMES[vector] ?? `vector ${vector}`, errorCode: regs.rbx, rip: regs.rcx, cr2: regs.rdx };
}

function main(): VcpuReport {
  const vcpuId = data.vcpu.id;
  if (data.cpu !== undefined) {
    try {
      native.setAffinity(native.gettid(), [data.cpu]);
    } catch (e) {
      return { type: 'failed', vcpuId, error: `vCPU ${vcpuId}: cannot pin to CPU ${data.cpu}: ${(e as Error).message}` };
    }
  }
  const vcpu = Vcpu.borrow(data.vcpu);
  try {
    post({ type: 'ready', tid: native.gettid(), cpu: native.getcpu() });
    if (data.gate) Atomics.wait(new Int32Array(data.gate), 0, 0);

    let ns = 0n;
    let runs = 0;
    let interrupted = 0;
    let exit: VcpuExit;
    const startNs = process.hrtime.bigint();
    let endNs = startNs;
    const timing = () => ({ ns, startNs, endNs, runs, interrupted });
    for (;;) {
      const t0 = process.hrtime.bigint();
      try {
        exit = vcpu.run();
      } catch (e) {
        endNs = process.hrtime.bigint();
        return { type: 'failed', vcpuId, error: `vCPU ${vcpuId}: ${(e as Error).message}`, ...timing() };
      }
      endNs = process.hrtime.bigint();
      ns += endNs - t0;
      runs++;
      if (exit.reason === 'intr') {
        interrupted++;
        continue;
      }
      break;
    }
    const regs = vcpu.getRegs();
    if (exit.reason === 'io' && exit.direction === 'out' && exit.port === GuestPort.DONE) {
      return { type: 'done', vcpuId, exit, regs, result: benchResult(regs), ...timing() };
    }
    if (exit.reason === 'io' && exit.direction === 'out' && exit.port === GuestPort.PAUSE) {
      return { type: 'paused', vcpuId, regs, ...timing() };
    }
    if (exit.reason === 'io' && exit.direction === 'out' && exit.port === GuestPort.EXCEPTION) {
      const exception = exceptionOf(regs);
      const error =
        `vCPU ${vcpuId}: guest exception ${exception.name} at rip 0x${exception.rip.toString(16)} ` +
        `(error code 0x${exception.errorCode.toString(16)}${exception.vector === 14 ? `, address 0x${exception.cr2.toString(16)}` : ''})`;
      return { type: 'failed', vcpuId, error, exit, exception, regs, ...timing() };
    }
    return { type: 'failed', vcpuId, error: `vCPU ${vcpuId}: unexpected exit: ${describeExit(exit)} at rip 0x${regs.rip.toString(16)}`, exit, regs, ...timing() };
  } finally {
    vcpu.close();
  }
}

let report: VcpuReport;
try {
  report = main();
} catch (e) {
  report = { type: 'failed', vcpuId: data.vcpu.id, error: `vCPU ${data.vcpu.id}: ${(e as Error).message}` };
}
post(report);
