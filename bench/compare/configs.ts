/**
 * The configurations both benchmarks run: a command line of the kernel's demand_paging_test
 * (6.12 getopt string "ahom:u:d:b:s:v:c:r:"), parsed, validated and printed canonically.
 * Only flags both programs accept are allowed: postcopy's extras (--json, --no-verify, -w ...)
 * have no kernel counterpart to compare against.
 */
import { parseSize } from '../../src/util/format.js';

/** The kernel test's flags (getopt "ahom:u:d:b:s:v:c:r:" in 6.12), in canonical print order. */
const VALUE_FLAGS = ['u', 's', 'b', 'v', 'r', 'd', 'c', 'm'] as const;
const BOOL_FLAGS = ['a', 'o'] as const;
const ORDER = ['u', 's', 'b', 'v', 'a', 'r', 'd', 'o', 'c', 'm'] as const;

type ValueFlag = (typeof VALUE_FLAGS)[number];
type BoolFlag = (typeof BOOL_FLAGS)[number];
export type Flags = Partial<Record<ValueFlag, string>> & Partial<Record<BoolFlag, true>>;

/** The kernel test's defaults where a flag is absent. */
export const KERNEL_DEFAULTS = { source: 'anonymous', bytesPerVcpu: 2 ** 30, vcpus: 1 } as const;

export class ConfigError extends Error {}

export interface Config {
  flags: Flags;
  /** Canonical command line, e.g. "-u MISSING -s anonymous -b 256M -v 2 -a". */
  text: string;
  argv: string[];
  source: string;
  bytesPerVcpu: number;
  vcpus: number;
  uffd: boolean;
}

function isValueFlag(f: string): f is ValueFlag {
  return (VALUE_FLAGS as readonly string[]).includes(f);
}
function isBoolFlag(f: string): f is BoolFlag {
  return (BOOL_FLAGS as readonly string[]).includes(f);
}

/** "-u MISSING -s shmem -b 64M -v 1" (or "-uMISSING", "-ao") -> Config. */
export function parseConfig(text: string): Config {
  const tokens = text.trim().split(/\s+/).filter((t) => t.length > 0);
  const flags: Flags = {};
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    if (!/^-[a-z]/.test(tok)) throw new ConfigError(`config "${text}": '${tok}' is not a flag`);
    // getopt style: booleans may be grouped (-ao), a value may be attached (-v2)
    for (let j = 1; j < tok.length; j++) {
      const f = tok[j]!;
      if (isBoolFlag(f)) {
        flags[f] = true;
      } else if (isValueFlag(f)) {
        const attached = tok.slice(j + 1);
        const value = attached.length > 0 ? attached : tokens[++i];
        if (value === undefined) throw new ConfigError(`config "${text}": -${f} needs a value`);
        flags[f] = value;
        break;
      } else if (f === 'h') {
        throw new ConfigError(`config "${text}": -h prints help, it is not a configuration`);
      } else {
        throw new ConfigError(
          `config "${text}": -${f} is not a flag of the kernel's demand_paging_test (6.12 accepts -u -s -b -v -a -r -d -o -c -m); ` +
            `only flags both benchmarks accept can be compared`,
        );
      }
    }
  }
  return makeConfig(flags, text);
}

export function makeConfig(flags: Flags, origin = ''): Config {
  const where = origin ? `config "${origin}": ` : '';
  if (flags.u !== undefined && flags.u !== 'MISSING' && flags.u !== 'MINOR') {
    throw new ConfigError(`${where}-u takes MISSING or MINOR, got '${flags.u}'`);
  }
  const bytesPerVcpu = flags.b === undefined ? KERNEL_DEFAULTS.bytesPerVcpu : parseSize(flags.b);
  if (bytesPerVcpu === undefined || bytesPerVcpu <= 0) throw new ConfigError(`${where}-b takes a size such as 256M, got '${flags.b}'`);
  const vcpus = flags.v === undefined ? KERNEL_DEFAULTS.vcpus : Number(flags.v);
  if (!Number.isInteger(vcpus) || vcpus < 1) throw new ConfigError(`${where}-v takes a positive integer, got '${flags.v}'`);
  if (flags.r !== undefined && !/^[1-9]\d*$/.test(flags.r)) throw new ConfigError(`${where}-r takes an integer ≥ 1, got '${flags.r}'`);
  if (flags.d !== undefined && !/^\d+$/.test(flags.d)) throw new ConfigError(`${where}-d takes microseconds, got '${flags.d}'`);
  if (flags.c !== undefined) {
    const n = flags.c.split(',').length;
    if (!/^\d+(,\d+)*$/.test(flags.c) || n < vcpus || n > vcpus + 1) {
      throw new ConfigError(`${where}-c needs ${vcpus} or ${vcpus + 1} comma-separated CPUs (one per vCPU, then optionally the main task), got '${flags.c}'`);
    }
  }
  const source = flags.s ?? KERNEL_DEFAULTS.source;
  if (flags.u === 'MINOR' && !isShared(source)) {
    throw new ConfigError(`${where}-u MINOR needs shared memory (-s shmem or shared_hugetlb), got -s ${source}`);
  }
  const argv: string[] = [];
  for (const f of ORDER) {
    const v = flags[f];
    if (v === undefined) continue;
    argv.push(`-${f}`);
    if (v !== true) argv.push(v);
  }
  return { flags, text: argv.join(' '), argv, source, bytesPerVcpu, vcpus, uffd: flags.u !== undefined };
}

export function isShared(source: string): boolean {
  return source === 'shmem' || source.startsWith('shared_hugetlb');
}

/** The huge page size (bytes) a hugetlb source draws from, or null for other sources. */
export function hugetlbPageSize(source: string, defaultHugePageSize: number): number | null {
  const m = /hugetlb(?:_(\d+)(kb|mb|gb))?$/.exec(source);
  if (!m) return null;
  if (m[1] === undefined) return defaultHugePageSize;
  const shift = { kb: 10, mb: 20, gb: 30 }[m[2] as 'kb' | 'mb' | 'gb'];
  return Number(m[1]) * 2 ** shift;
}

/**
 * The limit of a configuration: the same VM and memory with no userfaultfd at all (the kernel
 * test without -u). -a, -r and -d do nothing without -u and are dropped; -o changes which
 * memory the vCPUs touch, so it stays. -c keeps the vCPUs' CPUs and drops the main task's
 * (it only waits for the vCPUs when there are no fault readers to start).
 */
export function limitOf(config: Config): Config {
  const { u: _u, a: _a, r: _r, d: _d, ...rest } = config.flags;
  if (rest.c !== undefined) rest.c = rest.c.split(',').slice(0, config.vcpus).join(',');
  return makeConfig(rest);
}

/**
 * The targets: every source at -v 1 and -v 2, -r 1 and -r 2, with and without -a
 * (-a is left out at -v 1, where one userfaultfd per vCPU already is one for all), at -b 256M
 * for 4 KiB sources and -b 512M for hugetlb; then the kernel test's default flags at -v 1
 * (-b 1G) for MISSING/anonymous and MINOR/shmem, unpinned, -c 0,0 and -c 0,1.
 */
export function defaultConfigs(): Config[] {
  const out: Config[] = [];
  const sources: [string, string, string][] = [
    ['MISSING', 'anonymous', '256M'],
    ['MINOR', 'shmem', '256M'],
    ['MISSING', 'anonymous_hugetlb', '512M'],
    ['MINOR', 'shared_hugetlb', '512M'],
  ];
  for (const [u, s, b] of sources) {
    for (const v of ['1', '2']) {
      for (const r of ['1', '2']) {
        out.push(makeConfig({ u, s, b, v, r }));
        if (v !== '1') out.push(makeConfig({ u, s, b, v, r, a: true }));
      }
    }
  }
  for (const [u, s] of [['MISSING', 'anonymous'], ['MINOR', 'shmem']] as const) {
    out.push(makeConfig({ u, s, v: '1' }));
    out.push(makeConfig({ u, s, v: '1', c: '0,0' }));
    out.push(makeConfig({ u, s, v: '1', c: '0,1' }));
  }
  return out;
}

/** A minute or so: the two 4 KiB paths, same-CPU and cross-CPU, one two-vCPU run, one hugetlb run. */
export function quickConfigs(): Config[] {
  return [
    '-u MISSING -s anonymous -b 64M -v 1',
    '-u MISSING -s anonymous -b 64M -v 1 -c 0,0',
    '-u MISSING -s anonymous -b 64M -v 1 -c 0,1',
    '-u MINOR -s shmem -b 64M -v 1',
    '-u MINOR -s shmem -b 64M -v 1 -c 0,0',
    '-u MINOR -s shmem -b 64M -v 1 -c 0,1',
    '-u MISSING -s anonymous -b 64M -v 2 -a',
    '-u MINOR -s shared_hugetlb -b 128M -v 1',
  ].map(parseConfig);
}

/** Caveats that change what a row's figures mean. */
export function notesFor(config: Config, defaultHugePageSize: number): string[] {
  const notes: string[] = [];
  const hps = hugetlbPageSize(config.source, defaultHugePageSize);
  if (hps !== null && config.uffd) {
    notes.push(
      `pgs/sec counts 4 KiB guest pages; one fault resolves a ${hps / 2 ** 20} MiB page (${hps / 4096} guest pages), so this is close to the no-uffd limit`,
    );
    if (config.flags.u === 'MINOR') {
      notes.push('MINOR fills the page cache before the clock starts; the no-uffd run allocates and zeroes huge pages on the clock, so MINOR can beat that "limit"');
    }
  }
  if (config.flags.u === 'MINOR' && config.flags.a && !config.flags.o && config.vcpus > 1) {
    notes.push(
      "kernel 6.12 quirk: with -a it prefaults (fills the page cache for) only vCPU 0's slice, so the other vCPUs' pages " +
        "are first-touch shmem/hugetlb faults the kernel resolves without userfaultfd: its figure is not like for like",
    );
  }
  if (config.flags.o && config.vcpus > 1) {
    notes.push('with -o every vCPU pages the whole region and the kernel counts it once per vCPU: Overall = vCPUs × all pages / time');
  }
  return notes;
}
