import type { GuestRegion } from '../../memory/guest-memory.js';
import type { BenchOptions } from './options.js';

/** The part of test memory vCPU i pages: its own slice, or all of it with -o (overlap). */
export interface Slice {
  readonly host: number;
  readonly gpa: number;
  readonly bytes: number;
}

export function slice(o: BenchOptions, region: GuestRegion, i: number): Slice {
  const offset = o.overlap ? 0 : i * o.bytesPerVcpu;
  return { host: region.host + offset, gpa: region.guestAddress + offset, bytes: o.bytesPerVcpu };
}

/** What runs the vCPUs' work (KVM vCPUs, or plain threads) reports back. */
export interface VcpuRun {
  /** From releasing every vCPU to the last one finishing, ns. */
  readonly totalNs: number;
  readonly vcpus: readonly import('./result.js').VcpuResult[];
}
