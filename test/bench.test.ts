/**
 * `postcopy bench` end to end, as a user runs it: small configurations on every backing
 * source the machine supports, in every mode; the output lines the kernel test prints;
 * the JSON's fault counts and verification; and each refusal's exit code and remedy.
 * No timing is asserted: these machines are shared and noisy.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { BackingSourceName } from '../src/memory/backing.js';
import { hugepagePool } from '../src/memory/hugepages.js';
import { prepare } from './helpers/requirements.js';
import { kvmAvailability } from '../src/guest/open.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const KVM_STATE = kvmAvailability();
const KVM = KVM_STATE.usable;

function bench(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, 'bench', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

interface Json {
  mismatches: number;
  pagesPerVcpu: number;
  backend: string;
  vcpus: { accesses: number; mismatches: number }[];
  uffd: { expectedFaults: number; faults: number; missing: number; minor: number } | null;
}

const CASES: [mode: 'MISSING' | 'MINOR' | undefined, source: BackingSourceName, bytes: string][] = [
  ['MISSING', 'anonymous', '16M'],
  ['MISSING', 'anonymous_thp', '16M'],
  ['MISSING', 'anonymous_hugetlb', '16M'],
  ['MISSING', 'shmem', '16M'],
  ['MISSING', 'shared_hugetlb', '16M'],
  ['MINOR', 'shmem', '16M'],
  ['MINOR', 'shared_hugetlb', '16M'],
  [undefined, 'anonymous', '16M'],
  [undefined, 'shmem', '16M'],
];

const BACKENDS = [
  { name: 'KVM vCPUs', flags: [] as string[], skip: KVM ? undefined : 'no /dev/kvm: load kvm_intel or kvm_amd' },
  { name: 'plain threads (--vcpu-threads)', flags: ['--vcpu-threads'], skip: undefined },
];

for (const backend of BACKENDS) {
  describe(`bench on ${backend.name}`, () => {
    for (const [mode, source, bytes] of CASES) {
      for (const flags of [['-v', '1'], ['-v', '2', '-a', '-r', '2']]) {
        const label = `${mode ?? 'no uffd'} / ${source} ${flags.join(' ')}`;
        const skip = backend.skip ?? prepare(source, 2 * 16 * 2 ** 20);
        const claim = mode ? 'every page faults once through userfaultfd, and verifies' : 'every page is touched, and verifies';
        test(`${label}: ${claim}`, { skip }, () => {
          const r = bench(...(mode ? ['-u', mode] : []), '-s', source, '-b', bytes, ...flags, '--json', ...backend.flags);
          assert.equal(r.code, 0, r.err);
          const j = JSON.parse(r.out) as Json;
          const vcpus = Number(flags[1]);
          assert.equal(j.vcpus.length, vcpus);
          for (const v of j.vcpus) assert.equal(v.accesses, 16 * 256, 'each vCPU touches each of its pages');
          assert.equal(j.mismatches, 0, 'no page failed verification');
          if (mode) {
            const pageSize = source.includes('huge') || source === 'anonymous_thp' ? 2 * 2 ** 20 : 4096;
            assert.equal(j.uffd!.expectedFaults, (vcpus * 16 * 2 ** 20) / pageSize);
            assert.equal(j.uffd!.faults, j.uffd!.expectedFaults, 'every backing page went through userfaultfd exactly once');
            assert.equal(mode === 'MINOR' ? j.uffd!.minor : j.uffd!.missing, j.uffd!.faults);
          } else {
            assert.equal(j.uffd, null);
          }
        });
      }
    }

    test('the text output has the kernel test\'s lines, tab-separated', { skip: backend.skip }, () => {
      const r = bench('-u', 'MINOR', '-s', 'shmem', '-b', '8M', ...backend.flags);
      assert.equal(r.code, 0, r.err);
      const lines = r.out.trimEnd().split('\n');
      const patterns = [
        /^Random seed: 0x[0-9a-f]+$/,
        /^Testing guest mode: PA-bits:ANY, VA-bits:48, {2}4K pages$/,
        /^guest physical test memory: \[0x[0-9a-f]+, 0x[0-9a-f]+\)$/,
        /^Finished creating vCPUs and starting uffd threads$/,
        /^Started all vCPUs$/,
        /^All vCPU threads joined$/,
        /^Total guest execution time:\t\d+\.\d{9}s$/,
        /^Per-vcpu demand paging rate:\t\d+\.\d{6} pgs\/sec\/vcpu$/,
        /^Overall demand paging rate:\t\d+\.\d{6} pgs\/sec$/,
      ];
      assert.equal(lines.length, patterns.length, r.out);
      patterns.forEach((p, i) => assert.match(lines[i]!, p));
    });
  });
}

describe('bench refusals: one line, the remedy, a meaningful exit code', () => {
  const cases: [string, string[], number, RegExp][] = [
    ['MINOR on private memory', ['-u', 'MINOR', '-s', 'anonymous', '-b', '4M'], 2, /MINOR needs shared memory.*-s shmem/],
    ['an unknown mode', ['-u', 'SOMETIMES'], 2, /-u takes MISSING or MINOR/],
    ['an unknown backing source', ['-s', 'tmpfs'], 2, /unknown backing source 'tmpfs'/],
    ['a size that is not one', ['-b', 'lots'], 2, /-b takes a size/],
    ['a size not a multiple of the page size', ['-u', 'MISSING', '-s', 'anonymous_hugetlb', '-b', '3M'], 2, /not a multiple of anonymous_hugetlb's page size \(2 MiB\)/],
    ['-c with too few CPUs', ['-v', '2', '-c', '0'], 2, /-c needs 2 CPU/],
    ['memory-fault exits without the capability', ['-w', '-u', 'MISSING', '-b', '4M'], 3, /KVM_CAP_USERFAULT_ON_MISSING.*neither is in this kernel.*Run without -w/],
    ['userfaultfd on guest_memfd', ['-u', 'MINOR', '-s', 'guest_memfd', '-b', '4M'], 3, /guest_memfd.*(not merged|kvm)/i],
  ];
  for (const [what, args, code, message] of cases) {
    test(`${what}: exit ${code}`, () => {
      const r = bench(...args);
      assert.equal(r.code, code, r.err);
      assert.match(r.err, message);
      assert.equal(r.err.trim().split('\n').length, 1, `one line, no stack trace: ${r.err}`);
      assert.equal(r.out, '', 'refused before a line of the run is printed');
    });
  }

  test('hugetlb with too few hugepages reserved: exit 3, says how to reserve them', () => {
    // Ask for one page more than the pool has free, whatever this machine's pool holds.
    const want = hugepagePool(2 * 2 ** 20).available + 1;
    const r = bench('-u', 'MISSING', '-s', 'anonymous_hugetlb', '-b', `${want * 2}M`);
    assert.equal(r.code, 3, r.err);
    assert.match(r.err, new RegExp(`needs ${want} 2 MiB hugepages.*nr_hugepages`));
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
  });
});

describe('bench placement: measured when left to us, as given with -c', () => {
  interface Placed { placement: { reason: string; spinUs: number; vcpuCpus: number[][]; readerCpus: number[][]; calibration?: { chosen: string; tried: { name: string; rates: number[] }[] } } }

  test('unpinned: a calibration tries the candidate placements and the JSON says which won', () => {
    const r = bench('-u', 'MISSING', '-b', '8M', '--json', '--vcpu-threads');
    assert.equal(r.code, 0, r.err);
    const { placement } = JSON.parse(r.out) as Placed;
    const tried = placement.calibration!.tried.map((t) => t.name);
    assert.ok(tried.includes('scheduler') && tried.includes('paired'), tried.join());
    assert.ok(tried.includes(placement.calibration!.chosen));
    for (const t of placement.calibration!.tried) assert.ok(t.rates.length === 3 && t.rates.every((x) => x > 0));
    assert.match(placement.reason, /^calibrated: /);
  });

  test('-c 0,0 pins the vCPU and the readers where told, and readers sharing its CPU sleep', () => {
    const r = bench('-u', 'MISSING', '-b', '8M', '-c', '0,0', '--json', '--vcpu-threads');
    assert.equal(r.code, 0, r.err);
    const { placement } = JSON.parse(r.out) as Placed;
    assert.deepEqual(placement.vcpuCpus, [[0]]);
    assert.deepEqual(placement.readerCpus, [[0]]);
    assert.equal(placement.spinUs, 0);
    assert.equal(placement.calibration, undefined);
  });
});
