import { UnsupportedError } from '../../errors.js';
import { BACKING_INFO } from '../../memory/backing.js';
import { formatSize, hex } from '../../util/format.js';
import type { Io } from '../../cli/command.js';
import { UsageError } from '../../cli/command.js';
import { Progress } from '../../cli/progress.js';
import { type BenchOptions, uffdPageSize } from './options.js';
import { memoryLine, resultJson, resultLines } from './report.js';
import { runBench } from './run.js';

/** Refuses combinations that cannot work, each with what to do instead. */
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

/** `postcopy bench`: runs, prints as demand_paging_test does (or JSON), and says whether the run was correct. */
export async function benchMain(o: BenchOptions & { json: boolean; memoryFaultExits: boolean }, io: Io): Promise<boolean> {
  checkCombination(o);
  const text = !o.json;
  const progress = text ? Progress.forStream(process.stderr) : undefined;
  if (text) {
    io.out(`Random seed: ${hex(o.seed)}\n`);
    io.out(`Testing guest mode: PA-bits:ANY, VA-bits:48,  4K pages\n`);
  }
  const result = await runBench(o, {
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
  const mismatches = result.vcpus.reduce((n, v) => n + v.mismatches, 0);
  const firstBad = result.vcpus.find((v) => v.mismatches > 0)?.firstMismatch;
  const faultsOk = !result.pager || Number.isNaN(result.expectedFaults) || result.pager.faults === result.expectedFaults;
  if (o.json) io.out(`${JSON.stringify(resultJson(result), null, 2)}\n`);
  else io.out(`${resultLines(result).join('\n')}\n`);
  if (mismatches > 0) io.err(`postcopy: ${mismatches} page(s) failed verification; the first at guest-physical ${hex(firstBad ?? 0)}\n`);
  if (!faultsOk) io.err(`postcopy: ${result.pager!.faults} faults went through userfaultfd, expected ${result.expectedFaults}\n`);
  return mismatches === 0 && faultsOk;
}
