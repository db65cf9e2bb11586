import type { PagerStats } from '../../pager/pager.js';
import type { BenchOptions } from './options.js';

/** What one vCPU (or --vcpu-threads toucher) reports at the end of its pass. */
export interface VcpuResult {
  readonly index: number;
  /** Its own time from start to the end of its pass, ns (seed 003: rates from each vCPU's own time). */
  readonly ns: number;
  readonly accesses: number;
  readonly mismatches: number;
  /** Guest-physical address of the first page that failed verification; 0 if none. */
  readonly firstMismatch: number;
  readonly cpuNs: number;
  readonly threadId: number;
}

/** Everything one benchmark run measured. */
export interface BenchResult {
  readonly options: BenchOptions;
  readonly backend: 'kvm' | 'threads';
  readonly testMemory: { readonly start: number; readonly end: number };
  /** Wall time from starting the vCPUs to the last one finishing, ns. */
  readonly totalNs: number;
  readonly vcpus: readonly VcpuResult[];
  /** Fault readers' figures; undefined without userfaultfd. */
  readonly pager: PagerStats | undefined;
  /** Faults that went through userfaultfd that the run expected: one per backing page touched. */
  readonly expectedFaults: number;
  readonly placement: Placement;
  /** Pages done per vCPU and faults resolved over time (undefined: not recorded). */
  readonly series?: import('../../metrics/series.js').SeriesData | undefined;
}

/** Where vCPUs and readers ran, and why. */
export interface Placement {
  readonly vcpuCpus: readonly (readonly number[])[];
  readonly readerCpus: readonly (readonly number[])[];
  /** Readers poll for the next fault this long at most before sleeping, µs; 0: they always sleep. */
  readonly spinUs: number;
  readonly reason: string;
  /** How it was chosen, when it was measured. */
  readonly calibration?: import('./calibrate.js').Calibration;
}
