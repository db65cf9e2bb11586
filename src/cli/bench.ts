import { cpus as onlineCpus } from 'node:os';
import { BACKING_SOURCES } from '../memory/backing.js';
import type { BenchOptions } from '../apps/bench/options.js';
import { DEFAULTS } from '../apps/bench/options.js';
import { type Command, ExitCode, type Io, parseOptions } from './command.js';
import { optionParsers } from './values.js';

const NAME = 'postcopy bench';

const { usage, integer: positiveInt, size, backing, faultMode } = optionParsers(NAME);

/** -c: `vcpu0,vcpu1,...[,readers]`, as the kernel test's kvm_parse_vcpu_pinning. */
function pinning(text: string, vcpus: number): { vcpuCpus: number[]; readerCpus: number[] | undefined } {
  const cpus = text.split(',').map((c) => {
    if (!/^\d+$/.test(c)) throw usage(`-c takes a comma-separated list of CPU numbers, got '${text}'`);
    // Checked here, not by sched_setaffinity in a vCPU thread: a number past the machine's CPUs is a usage error.
    const cpu = Number(c);
    if (cpu >= onlineCpus().length) throw usage(`-c: CPU ${c} does not exist here (CPUs 0-${onlineCpus().length - 1})`);
    return cpu;
  });
  if (cpus.length < vcpus || cpus.length > vcpus + 1) {
    throw usage(`-c needs ${vcpus} CPU(s), one per vCPU, and optionally one more for the fault readers; got ${cpus.length}`);
  }
  return { vcpuCpus: cpus.slice(0, vcpus), readerCpus: cpus.length > vcpus ? [cpus[vcpus]!] : undefined };
}

/** Turns the command line into BenchOptions; every refusal is a UsageError naming the flag. */
export function parseBenchArgs(args: string[]): BenchOptions & { json: boolean; memoryFaultExits: boolean; html: string | undefined } {
  const { values } = parseOptions(NAME, args, {
    u: { type: 'string' },
    s: { type: 'string' },
    b: { type: 'string' },
    v: { type: 'string' },
    a: { type: 'boolean' },
    r: { type: 'string' },
    d: { type: 'string' },
    o: { type: 'boolean' },
    c: { type: 'string' },
    m: { type: 'string', multiple: true },
    w: { type: 'boolean' },
    json: { type: 'boolean' },
    html: { type: 'string' },
    'no-verify': { type: 'boolean' },
    'write-percent': { type: 'string' },
    'random-access': { type: 'boolean' },
    seed: { type: 'string' },
    'vcpu-threads': { type: 'boolean' },
    'reader-wait': { type: 'string' },
  });
  const readerWait = values['reader-wait'] ?? 'auto';
  if (readerWait !== 'auto' && readerWait !== 'spin' && readerWait !== 'sleep') throw usage(`--reader-wait takes auto, spin or sleep, got '${readerWait}'`);
  // -m: the kernel test's guest mode IDs; x86-64 has one, "PA-bits:ANY, VA-bits:48, 4K pages" (9).
  for (const m of values.m ?? []) {
    if (m !== '9') throw usage(`-m ${m}: only guest mode 9 (PA-bits:ANY, VA-bits:48,  4K pages) exists on x86-64`);
  }
  const mode: BenchOptions['mode'] = values.u === undefined ? undefined : faultMode(values.u);
  const source = backing(values.s ?? DEFAULTS.source);
  const bytesPerVcpu = size('-b', values.b, DEFAULTS.bytesPerVcpu);
  const vcpus = positiveInt('-v', values.v, DEFAULTS.vcpus);
  const writePercent = positiveInt('--write-percent', values['write-percent'], DEFAULTS.writePercent, 0);
  if (writePercent > 100) throw usage(`--write-percent takes 0..100, got ${writePercent}`);
  const pin = values.c !== undefined ? pinning(values.c, vcpus) : undefined;
  let seed = DEFAULTS.seed;
  if (values.seed !== undefined) {
    if (!/^(0x[0-9a-f]+|\d+)$/i.test(values.seed)) throw usage(`--seed takes an integer, got '${values.seed}'`);
    seed = Number(values.seed) >>> 0;
  }
  return {
    mode,
    source,
    bytesPerVcpu,
    vcpus,
    singleUffd: values.a ?? false,
    readersPerUffd: positiveInt('-r', values.r, DEFAULTS.readersPerUffd),
    delayUs: positiveInt('-d', values.d, DEFAULTS.delayUs, 0),
    overlap: values.o ?? false,
    vcpuCpus: pin?.vcpuCpus,
    readerCpus: pin?.readerCpus,
    verify: !(values['no-verify'] ?? false),
    writePercent,
    randomAccess: values['random-access'] ?? false,
    seed,
    readerWait,
    vcpuThreads: values['vcpu-threads'] ?? false,
    json: values.json ?? false,
    html: values.html === '' ? (() => { throw usage('--html needs a file name'); })() : values.html,
    memoryFaultExits: values.w ?? false,
  };
}

export const benchCommand: Command = {
  name: 'bench',
  summary: "the KVM demand paging test (the kernel's demand_paging_test, same flags and output)",
  usage: `${NAME} [-u MISSING|MINOR] [-s source] [-b bytes] [-v vcpus] [-a] [-r readers] [-d usec] [-o] [-c cpus] [--json]`,
  description: [
    'Runs a KVM guest whose vCPUs touch every 4 KiB page of their slice of test memory while',
    'userfaultfd readers resolve the faults, and reports the paging rate, as the kernel\'s',
    'tools/testing/selftests/kvm/demand_paging_test does, with the same flags and output lines.',
    'The guest verifies every page it touches (each holds a pattern of its own address) and',
    'any mismatch fails the run. Without -u, memory is paged by the kernel alone: the limit.',
    '',
    `Backing sources (-s): ${BACKING_SOURCES.join(', ')}.`,
  ].join('\n'),
  optionHelp: [
    ['-u MISSING|MINOR', 'handle faults with userfaultfd in this registration mode (MINOR needs shared memory)'],
    ['-s <source>', `backing source of test memory (default ${DEFAULTS.source})`],
    ['-b <bytes>', 'memory each vCPU pages in, e.g. 256M, 1G (default 1G)'],
    ['-v <n>', 'vCPUs (default 1)'],
    ['-a', 'one userfaultfd for all of guest memory, instead of one per vCPU'],
    ['-r <n>', 'fault reader threads per userfaultfd (default 1)'],
    ['-d <usec>', 'delay each fault resolution by this long, to simulate fetching the page'],
    ['-o', 'all vCPUs touch the same memory instead of a slice each (implies -a)'],
    ['-c <cpus>', 'pin vCPU i to the i-th CPU of the list; one extra CPU pins the fault readers'],
    ['-m 9', "guest mode (accepted for the kernel test's scripts; x86-64 has only mode 9)"],
    ['-w', 'memory-fault exits instead of sleeping in userfaultfd (needs KVM_CAP_USERFAULT_ON_MISSING)'],
    ['--json', 'print every figure as JSON instead of the kernel test\'s lines'],
    ['--html <file>', 'also write an HTML report of the run there (see `postcopy report`)'],
    ['--no-verify', 'do not check page contents in the guest'],
    ['--write-percent <n>', 'percentage of accesses that write (default 100)'],
    ['--random-access', 'touch pages in random order'],
    ['--seed <n>', 'seed for page patterns and random access'],
    ['--reader-wait auto|spin|sleep', 'readers poll for the next fault before sleeping (auto: when they have CPUs to themselves)'],
    ['--vcpu-threads', 'plain threads instead of KVM vCPUs (where /dev/kvm is absent)'],
  ],

  async run(args: string[], io: Io): Promise<number> {
    const options = parseBenchArgs(args);
    const { benchMain } = await import('../apps/bench/main.js');
    return (await benchMain(options, io, args)) ? ExitCode.OK : ExitCode.FAILURE;
  },
};
