import { BACKING_INFO, type BackingSourceName } from '../../memory/backing.js';

/** One run of the demand paging benchmark: demand_paging_test's knobs, and ours. */
export interface BenchOptions {
  /** userfaultfd registration mode (-u); undefined: no userfaultfd, memory is touched directly (the limit). */
  readonly mode: 'MISSING' | 'MINOR' | undefined;
  /** Backing source of the test memory (-s). */
  readonly source: BackingSourceName;
  /** Bytes each vCPU pages in (-b). */
  readonly bytesPerVcpu: number;
  /** vCPUs (-v). */
  readonly vcpus: number;
  /** One userfaultfd for all of guest memory (-a; implied by -o). */
  readonly singleUffd: boolean;
  /** Reader threads per userfaultfd (-r). */
  readonly readersPerUffd: number;
  /** Delay in each fault resolution, µs (-d). */
  readonly delayUs: number;
  /** All vCPUs access the same memory (-o). */
  readonly overlap: boolean;
  /**
   * CPU pinning (-c): vCPU i on vcpuCpus[i]; readers on readerCpus (the kernel test's
   * list gives vCPUs first, then the main thread; we give readers the last entry).
   */
  readonly vcpuCpus: readonly number[] | undefined;
  readonly readerCpus: readonly number[] | undefined;
  /** The guest checks each page's pattern before writing (default on). */
  readonly verify: boolean;
  /** Percentage of accesses that write (default 100, as memstress). */
  readonly writePercent: number;
  readonly randomAccess: boolean;
  /** Seed for the page patterns and random access. */
  readonly seed: number;
  /** Whether fault readers poll before sleeping: decided from the CPUs available ('auto'), or forced. */
  readonly readerWait: 'auto' | 'spin' | 'sleep';
  /** Run the experiment with plain threads instead of KVM vCPUs (where /dev/kvm is absent). */
  readonly vcpuThreads: boolean;
}

export const DEFAULTS: BenchOptions = {
  mode: undefined,
  source: 'anonymous',
  bytesPerVcpu: 1 << 30,
  vcpus: 1,
  singleUffd: false,
  readersPerUffd: 1,
  delayUs: 0,
  overlap: false,
  vcpuCpus: undefined,
  readerCpus: undefined,
  verify: true,
  writePercent: 100,
  randomAccess: false,
  seed: 0x5eed1e55,
  readerWait: 'auto',
  vcpuThreads: false,
};

/** The guest page size: the guest touches memory in 4 KiB pages whatever backs it. */
export const GUEST_PAGE = 4096;

/** Where test memory starts in guest-physical space: above 4 GiB, clear of the system slot. */
export const TEST_MEMORY_GPA = 0x1_0000_0000;

/** Guest pages each vCPU touches. */
export function pagesPerVcpu(o: BenchOptions): number {
  return o.bytesPerVcpu / GUEST_PAGE;
}

/** Bytes of test memory in all: one slice per vCPU, or one shared slice with -o. */
export function testMemoryBytes(o: BenchOptions): number {
  return o.overlap ? o.bytesPerVcpu : o.bytesPerVcpu * o.vcpus;
}

/** The unit userfaultfd resolves in (the backing's page size). */
export function uffdPageSize(o: BenchOptions): number {
  return BACKING_INFO[o.source].pageSize;
}
