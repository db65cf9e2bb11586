import { formatRange } from '../../util/format.js';
import { pagesPerVcpu } from './options.js';
import type { BenchResult } from './result.js';

/** ns as demand_paging_test prints a timespec: `1.234567890s`. */
function timespec(ns: number): string {
  const sec = Math.floor(ns / 1e9);
  return `${sec}.${String(Math.round(ns - sec * 1e9)).padStart(9, '0')}s`;
}

/** The lines demand_paging_test prints after the run, tab-separated as it prints them. */
export function resultLines(r: BenchResult): string[] {
  // Exactly the kernel test's definitions, so that scripts comparing the two compare like
  // with like: per-vCPU = one vCPU's pages over the total time, overall = that × vCPUs.
  // The rates from each vCPU's own time (seed 003) are in the JSON.
  const perVcpu = pagesPerVcpu(r.options) / (r.totalNs / 1e9);
  return [
    `All vCPU threads joined`,
    `Total guest execution time:\t${timespec(r.totalNs)}`,
    `Per-vcpu demand paging rate:\t${perVcpu.toFixed(6)} pgs/sec/vcpu`,
    `Overall demand paging rate:\t${(perVcpu * r.vcpus.length).toFixed(6)} pgs/sec`,
  ];
}

/** `guest physical test memory: [start, end)` */
export function memoryLine(r: Pick<BenchResult, 'testMemory'>): string {
  return `guest physical test memory: ${formatRange(r.testMemory.start, r.testMemory.end - r.testMemory.start)}`;
}

/** Everything, for --json: the kernel test's figures and ours. */
export function resultJson(r: BenchResult): object {
  const pages = pagesPerVcpu(r.options);
  const totalSec = r.totalNs / 1e9;
  const p = r.pager;
  return {
    options: r.options,
    backend: r.backend,
    testMemory: r.testMemory,
    totalSeconds: totalSec,
    pagesPerVcpu: pages,
    overallRate: (pages * r.vcpus.length) / totalSec,
    perVcpuRate: pages / totalSec,
    /** Seed 003: the mean of each vCPU's rate over its own time. */
    perVcpuOwnTimeRate: r.vcpus.reduce((s, v) => s + v.accesses / (v.ns / 1e9), 0) / r.vcpus.length,
    vcpus: r.vcpus.map((v) => ({ ...v, seconds: v.ns / 1e9, rate: v.accesses / (v.ns / 1e9), cpuSeconds: v.cpuNs / 1e9 })),
    mismatches: r.vcpus.reduce((s, v) => s + v.mismatches, 0),
    /** What was checked, in words: options.verify is false where there was nothing to check. */
    verification: r.options.verify
      ? 'every page checked against its pattern before it was written'
      : r.options.mode === undefined
        ? `not verified: without -u, ${r.options.source} memory starts as zeros, with no pattern to check`
        : 'not verified (--no-verify)',
    uffd: p
      ? {
          expectedFaults: r.expectedFaults,
          faults: p.faults,
          missing: p.missing,
          minor: p.minor,
          exists: p.exists,
          retries: p.retries,
          readerCpuSeconds: p.cpuNs / 1e9,
          serviceNs: p.service.summary(),
          /** QEMU's form: serviceLog2Us[N] faults took [2^N, 2^(N+1)) µs (N = 0 also under 1 µs). */
          serviceLog2Us: p.service.log2UsCounts(),
          readers: p.readers.map((x) => ({ threadId: x.threadId, uffd: x.uffd, faults: x.faults, exists: x.exists, emptyReads: x.emptyReads, cpuSeconds: x.cpuNs / 1e9 })),
        }
      : null,
    placement: r.placement,
    series: r.series ?? null,
  };
}
