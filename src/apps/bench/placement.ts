import { native } from '../../native/binding.js';
import type { BenchOptions } from './options.js';
import type { Placement } from './result.js';

/** How long a reader with a CPU to itself may poll for the next fault, µs (its adaptive window's ceiling). */
export const SPIN_US = 500;

/**
 * Where vCPUs and readers run, and whether readers poll before sleeping. A reader's
 * wake-up is the biggest cost of a fault round trip when the reader's CPU has gone idle
 * (on some hosts an idle vCPU halts at once, and waking it costs ~90 µs); a reader that
 * polls for the next fault pays none, but burns its CPU, which only pays when it has one
 * to itself. So: poll when the readers and vCPUs together fit the CPUs this process may
 * use (or, pinned with -c, when the readers' CPU is not a vCPU's), sleep otherwise.
 */
export function choosePlacement(o: BenchOptions, uffds: number): Placement {
  return o.vcpuCpus ? pinnedPlacement(o, uffds) : unpinnedPlacement(o, uffds);
}

function pinnedPlacement(o: BenchOptions, uffds: number): Placement {
  const readers = o.mode ? uffds * o.readersPerUffd : 0;
  {
    const vcpuCpus = Array.from({ length: o.vcpus }, (_, i) => [o.vcpuCpus![i % o.vcpuCpus!.length]!]);
    const readerCpus = o.readerCpus ? [[...o.readerCpus]] : [];
    const ownCpu = o.readerCpus !== undefined && o.readerCpus.every((c) => !o.vcpuCpus!.includes(c));
    const spin = o.readerWait === 'spin' || (o.readerWait === 'auto' && ownCpu && readers === 1);
    return {
      vcpuCpus,
      readerCpus,
      spinUs: spin ? SPIN_US : 0,
      reason: `pinned with -c; readers ${spin ? 'poll' : 'sleep'}${o.readerWait === 'auto' ? (spin ? ' (their CPU is not a vCPU\'s)' : ' (they share CPUs with vCPUs)') : ' (--reader-wait)'}`,
    };
  }
}

function unpinnedPlacement(o: BenchOptions, uffds: number): Placement {
  const cpus = native.getAffinity(0).length;
  const readers = o.mode ? uffds * o.readersPerUffd : 0;
  const fits = o.vcpus + readers <= cpus;
  const spin = o.readerWait === 'spin' || (o.readerWait === 'auto' && readers > 0 && fits);
  return {
    vcpuCpus: [],
    readerCpus: [],
    spinUs: spin ? SPIN_US : 0,
    reason:
      `not pinned; readers ${spin ? 'poll before sleeping' : 'sleep'}` +
      (o.readerWait === 'auto' ? ` (${o.vcpus} vCPU(s) + ${readers} reader(s) ${fits ? 'fit' : 'exceed'} ${cpus} CPU(s))` : ' (--reader-wait)'),
  };
}

/**
 * The placements worth trying when nothing is pinned, for calibration: leave it to the
 * scheduler; pair each vCPU with its readers on one CPU (a fault is then two context
 * switches, no cross-CPU wake-up: the kernel test's -c 0,0); and, where they fit, a CPU
 * for each vCPU and each reader, readers polling.
 */
export function placementCandidates(o: BenchOptions, uffds: number): (Placement & { name: string })[] {
  const allowed = native.getAffinity(0);
  const readers = uffds * o.readersPerUffd;
  const cpuOf = (i: number) => allowed[i % allowed.length]!;
  const out: (Placement & { name: string })[] = [
    { name: 'scheduler', vcpuCpus: [], readerCpus: [], spinUs: 0, reason: 'calibrated: not pinned, readers sleep' },
    {
      name: 'paired',
      vcpuCpus: Array.from({ length: o.vcpus }, (_, i) => [cpuOf(i)]),
      // Reader k serves userfaultfd floor(k / r): with one per vCPU, that vCPU's CPU.
      readerCpus: Array.from({ length: readers }, (_, k) => [cpuOf(Math.floor(k / o.readersPerUffd))]),
      spinUs: 0,
      reason: 'calibrated: each vCPU pinned with its readers on one CPU, readers sleep',
    },
  ];
  if (o.vcpus + readers <= allowed.length) {
    out.push({
      name: 'own CPUs, polling',
      vcpuCpus: Array.from({ length: o.vcpus }, (_, i) => [cpuOf(i)]),
      readerCpus: Array.from({ length: readers }, (_, k) => [cpuOf(o.vcpus + k)]),
      spinUs: SPIN_US,
      reason: 'calibrated: a CPU for each vCPU and each reader, readers poll before sleeping',
    });
  }
  return out;
}
