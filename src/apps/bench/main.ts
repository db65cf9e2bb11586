import { freemem, totalmem } from 'node:os';
import { UnsupportedError } from '../../errors.js';
import { BACKING_INFO } from '../../memory/backing.js';
import { hugepagePool, reserveRemedy } from '../../memory/hugepages.js';
import { isSystemError } from '../../native/errors.js';
import { formatSize, hex } from '../../util/format.js';
import type { Io } from '../../cli/command.js';
import { UsageError } from '../../cli/command.js';
import { Progress } from '../../cli/progress.js';
import { type BenchOptions, testMemoryBytes, uffdPageSize } from './options.js';
import { memoryLine, resultJson, resultLines } from './report.js';
import { openKvm, runBench } from './run.js';
import { Recorder, seriesEnabled } from '../../metrics/series.js';
import { runInfo } from '../../metrics/run-info.js';
import { writeRunHtml } from '../report/main.js';

/** The memory a run maps: test memory, and for MISSING the COPY source of the same size. */
function memoryNeeded(o: BenchOptions): number {
  return testMemoryBytes(o) * (o.mode === 'MISSING' ? 2 : 1);
}

/**
 * Refuses combinations that cannot work, each with what to do instead, in the order that
 * gives the real reason: what the combination is (MINOR on private memory, userfaultfd on
 * guest_memfd) before what this machine lacks (hugepages, memory, /dev/kvm). Nothing is
 * printed before this has passed.
 */
export function checkCombination(o: BenchOptions & { memoryFaultExits: boolean }): void {
  const info = BACKING_INFO[o.source];
  if (o.memoryFaultExits) {
    throw new UnsupportedError(
      '-w: memory-fault exits need KVM_CAP_USERFAULT_ON_MISSING (seed 003) or KVM userfault memslots (KVM_MEM_USERFAULT); neither is in this kernel',
      'Run without -w: faults are then resolved through userfaultfd',
    );
  }
  if (o.mode === 'MINOR' && !info.shared) {
    throw new UsageError(`-u MINOR needs shared memory (minor faults are page-cache pages not yet mapped); '${o.source}' is private. Use -s shmem or -s shared_hugetlb`, 'postcopy bench --help');
  }
  if (o.bytesPerVcpu % uffdPageSize(o) !== 0) {
    throw new UsageError(`-b ${o.bytesPerVcpu} is not a multiple of ${o.source}'s page size (${formatSize(uffdPageSize(o))})`, 'postcopy bench --help');
  }
}

/** The ENOMEM refusal: how much memory there is, and a -b that fits. */
function memoryRefusal(o: BenchOptions, need: number): UnsupportedError {
  const per = o.overlap ? 1 : o.vcpus;
  const copies = o.mode === 'MISSING' ? 2 : 1;
  const fit = Math.floor(freemem() / copies / per / 2 ** 20 / 2) * 2 ** 20; // half of what is free, per vCPU
  return new UnsupportedError(
    `-b ${formatSize(o.bytesPerVcpu)} × ${per} vCPU(s)${copies === 2 ? ' (and as much again for the MISSING copy source)' : ''} needs ${formatSize(need)} of memory; this machine has ${formatSize(totalmem())}, ${formatSize(freemem())} free`,
    fit > 0 ? `Use a smaller -b, e.g. -b ${formatSize(fit).replace(/ (\w)iB$/, '$1')}, or fewer vCPUs` : 'Free some memory, or use a smaller -b',
  );
}

/**
 * What the run needs from the machine, checked before a line is printed: the memory, the
 * hugepages of a hugetlb source, /dev/kvm (unless --vcpu-threads), and whether userfaultfd
 * can take guest_memfd at all. Each refusal names the remedy (exit 3).
 */
const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;

export function preflight(o: BenchOptions): void {
  const info = BACKING_INFO[o.source];
  const size = testMemoryBytes(o);
  // Both the test memory and, for MISSING, the source it is copied from.
  const need = o.mode === 'MISSING' ? 2 * size : size;
  if (need > totalmem()) {
    throw new UnsupportedError(
      `-b ${formatSize(o.bytesPerVcpu)} × ${o.vcpus} vCPU(s) needs ${gib(need)} of memory${o.mode === 'MISSING' ? ' (the test memory and the pages it is copied from)' : ''}; this machine has ${gib(totalmem())}`,
      // A quarter of the machine: the rest is the system's, page tables and the other side's.
      `Use -b ${Math.max(info.pageSize / 2 ** 20, Math.floor(totalmem() / 4 / o.vcpus / (o.mode === 'MISSING' ? 2 : 1) / info.pageSize) * (info.pageSize / 2 ** 20))}M or less`,
    );
  }
  if (o.source === 'guest_memfd' && o.mode) {
    throw new UnsupportedError(
      `-s guest_memfd -u ${o.mode}: userfaultfd cannot register guest_memfd memory on this kernel (the guest_memfd minor-fault series, seed 004, is not merged; Linux 6.18 answers EINVAL)`,
      'Use -s shmem or -s shared_hugetlb, or run guest_memfd without -u',
    );
  }
  if (info.hugetlb) {
    const pool = hugepagePool(info.pageSize);
    const pages = size / info.pageSize;
    if (!pool.exists) throw new UnsupportedError(`-s ${o.source}: this kernel has no ${formatSize(info.pageSize)} hugepage pool`, 'Use a 2 MiB source, or boot with hugepagesz=1G');
    if (pool.available < pages) {
      throw new UnsupportedError(`-s ${o.source}: ${formatSize(size)} needs ${pages} ${formatSize(info.pageSize)} hugepages, ${pool.available} are available`, reserveRemedy(info.pageSize, pages - pool.available));
    }
  }
  if (!o.vcpuThreads) openKvm().close();
}

/** `postcopy bench`: runs, prints as demand_paging_test does (or JSON), and says whether the run was correct. */
export async function benchMain(o: BenchOptions & { json: boolean; memoryFaultExits: boolean; html?: string | undefined }, io: Io, argv: readonly string[] = []): Promise<boolean> {
  checkCombination(o);
  preflight(o);
  const text = !o.json;
  // Not a line of the kernel test's (stdout stays parseable as its output): who did the work.
  if (text) {
    const who = o.vcpuThreads ? 'backend: threads (--vcpu-threads): plain threads in this process touch the pages, no KVM guest' : 'backend: kvm: vCPUs of a KVM guest touch the pages';
    const check = !o.verify
      ? 'not verified (--no-verify)'
      : o.mode === undefined && !BACKING_INFO[o.source].shared
        ? `not verified: without -u, ${o.source} memory starts as zeros, with no pattern to check`
        : 'every page verified';
    io.err(`${who}; ${check}\n`);
  }
  const progress = text ? Progress.forStream(process.stderr) : undefined;
  if (text) {
    io.out(`Random seed: ${hex(o.seed)}\n`);
    io.out(`Testing guest mode: PA-bits:ANY, VA-bits:48,  4K pages\n`);
  }
  let result;
  try {
    result = await runBench(o, {
    ...(seriesEnabled() ? { recorder: new Recorder() } : {}),
    onEvent: (e) => {
      if (e.phase === 'prefill') progress?.update(`prefilling ${formatSize(e.bytes)}`);
      if (e.phase === 'calibrate') progress?.update('calibrating where readers run');
      if (e.phase === 'ready' && text) {
        progress?.clear();
        io.out(`${memoryLine(e)}\nFinished creating vCPUs and starting uffd threads\n`);
      }
      if (e.phase === 'started' && text) io.out('Started all vCPUs\n');
      if (e.phase === 'vcpu-done') progress?.update(`vCPUs done: ${e.done}/${e.of}`);
      if (e.phase === 'joined') progress?.clear();
    },
  });
  } catch (e) {
    progress?.clear();
    if (isSystemError(e, 'ENOMEM')) {
      const r = memoryRefusal(o, memoryNeeded(o));
      throw new UnsupportedError(`${(e as Error).message}: ${r.detail}`, r.remedy);
    }
    throw e;
  }
  const mismatches = result.vcpus.reduce((n, v) => n + v.mismatches, 0);
  const firstBad = result.vcpus.find((v) => v.mismatches > 0)?.firstMismatch;
  const faultsOk = !result.pager || Number.isNaN(result.expectedFaults) || result.pager.faults === result.expectedFaults;
  const json = { run: runInfo('bench', ['bench', ...argv]), ...resultJson(result) };
  if (o.json) io.out(`${JSON.stringify(json, null, 2)}\n`);
  else io.out(`${resultLines(result).join('\n')}\n`);
  if (o.html) writeRunHtml(json, o.html);
  if (mismatches > 0) io.err(`postcopy: ${mismatches} page(s) failed verification; the first at guest-physical ${hex(firstBad ?? 0)}\n`);
  if (!faultsOk) io.err(`postcopy: ${result.pager!.faults} faults went through userfaultfd, expected ${result.expectedFaults}\n`);
  return mismatches === 0 && faultsOk;
}
