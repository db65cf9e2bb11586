import { machine, release } from 'node:os';
import { BACKING_SOURCES, type BackingSourceName } from '../memory/backing.js';
import { type BackingReport, probeBacking } from './backings.js';
import { type CpuReport, probeCpu } from './cpu.js';
import { type HugepagesReport, probeHugepages } from './hugepages.js';
import { type KvmReport, probeKvm } from './kvm.js';
import { type PrivilegesReport, probePrivileges } from './privileges.js';
import { type TrackingReport, probeTracking } from './tracking.js';
import { type UserfaultfdReport, probeUserfaultfd } from './userfaultfd.js';

export interface ProbeOptions {
  /**
   * Grow an empty hugetlb pool by one page to try the hugetlb sources, and shrink it back
   * after. Off by default: a probe does not change the machine unless asked to.
   */
  reserveHugepages?: boolean;
  /** The backing sources to try; all of them by default. */
  sources?: readonly BackingSourceName[];
}

/**
 * What this machine can do for postcopy, found by trying each thing. Plain data, JSON as it
 * is: a value that could not be had is null, never undefined, so `--json` keeps every key.
 */
export interface ProbeReport {
  /** Bumped when the shape changes incompatibly. */
  readonly schema: 1;
  /** For the record only: nothing in the report is inferred from the kernel version. */
  readonly kernel: { readonly release: string; readonly machine: string };
  readonly privileges: PrivilegesReport;
  readonly userfaultfd: UserfaultfdReport;
  readonly backings: BackingReport[];
  readonly kvm: KvmReport;
  /** Dirty trackers for a migration's source, and the guest backend migrate runs by default. */
  readonly tracking: TrackingReport;
  readonly hugepages: HugepagesReport;
  readonly cpu: CpuReport;
}

export function probe(options: ProbeOptions = {}): ProbeReport {
  const userfaultfd = probeUserfaultfd();
  const kvm = probeKvm();
  try {
    const context = { uffd: userfaultfd.usable, vm: kvm.vm, reserveHugepages: options.reserveHugepages ?? false };
    const backings = (options.sources ?? BACKING_SOURCES).map((source) => probeBacking(source, context));
    return {
      schema: 1,
      kernel: { release: release(), machine: machine() },
      privileges: probePrivileges(userfaultfd),
      userfaultfd,
      backings,
      kvm: kvm.report,
      tracking: probeTracking(kvm.report),
      // After the backings, so the pools show as they are, not as the tries left them mid-way.
      hugepages: probeHugepages(),
      cpu: probeCpu(),
    };
  } finally {
    kvm.close();
  }
}
