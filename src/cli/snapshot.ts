import { BACKING_SOURCES, type BackingSourceName } from '../memory/backing.js';
import { GUEST_BACKENDS, type GuestBackendName } from '../guest/guest.js';
import { isGuestBackend } from '../guest/open.js';
import { type Command, ExitCode, type Io, parseOptions } from './command.js';
import { optionParsers } from './values.js';
import { LIVE_DEFAULTS } from '../apps/snapshot/live-policy.js';

const NAME = 'postcopy snapshot';
const { usage, integer, size, duration, backing, faultMode } = optionParsers(NAME);
const SOURCES = BACKING_SOURCES.filter((s) => s !== 'guest_memfd');

const DEFAULTS = { source: 'shmem' as BackingSourceName, bytesPerVcpu: 128 * 2 ** 20, vcpus: 2, runMs: 500, runAfterMs: 100, timeoutMs: 120_000 };

const SAVE_OPTIONS = {
  out: { type: 'string' },
  demo: { type: 'boolean' },
  guest: { type: 'string' },
  s: { type: 'string' },
  b: { type: 'string' },
  v: { type: 'string' },
  run: { type: 'string' },
  resume: { type: 'string' },
  'working-set': { type: 'string' },
  live: { type: 'boolean' },
  'max-rounds': { type: 'string' },
  'max-stale': { type: 'string' },
  'auto-converge': { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

/** --live's policy, or undefined without --live (whose tuning flags then make no sense). */
function livePolicy(v: { live?: boolean; 'max-rounds'?: string; 'max-stale'?: string; 'auto-converge'?: boolean }) {
  if (!v.live) {
    const stray = (['max-rounds', 'max-stale', 'auto-converge'] as const).find((f) => v[f] !== undefined);
    if (stray) throw usage(`--${stray} tunes the rounds of a live save: give --live too`);
    return undefined;
  }
  return {
    maxRounds: integer('--max-rounds', v['max-rounds'], LIVE_DEFAULTS.maxRounds),
    maxStaleUnits: integer('--max-stale', v['max-stale'], LIVE_DEFAULTS.maxStaleUnits, 0),
    autoConverge: v['auto-converge'] ?? false,
  };
}

const RESTORE_OPTIONS = {
  u: { type: 'string' },
  s: { type: 'string' },
  eager: { type: 'boolean' },
  background: { type: 'boolean' },
  prefetch: { type: 'string' },
  'prefetch-after': { type: 'boolean' },
  consume: { type: 'boolean' },
  'no-prestart': { type: 'boolean' },
  record: { type: 'string' },
  'no-verify': { type: 'boolean' },
  'run-after': { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** `--working-set 10%` (or 10): the share of each slice the guest touches after its first pass, in ‰. */
function workingSetPermille(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+(?:\.\d)?)%?$/.exec(text.trim());
  const permille = m ? Math.round(Number(m[1]) * 10) : NaN;
  if (!(permille >= 1 && permille <= 1000)) throw usage(`--working-set takes a share of the memory from 0.1% to 100% (like 10%), got '${text}'`);
  return permille;
}

function guestBackend(text: string | undefined): GuestBackendName | undefined {
  if (text === undefined) return undefined;
  if (!isGuestBackend(text)) throw usage(`--guest takes ${GUEST_BACKENDS.join(' or ')}, got '${text}'`);
  return text;
}

export function parseSnapshotArgs(args: string[]) {
  const [verb, ...rest] = args;
  if (verb === 'save') {
    const { values: v } = parseOptions(`${NAME} save`, rest, SAVE_OPTIONS);
    if (!v.out && !v.demo) throw usage('save needs --out DIR (or --demo, which saves into a new directory in /dev/shm)');
    if (v.s === 'guest_memfd') throw usage('-s guest_memfd: this kernel cannot register guest_memfd with userfaultfd, so it could not be restored; use shmem');
    return {
      verb,
      json: v.json ?? false,
      save: {
        out: v.out,
        guest: guestBackend(v.guest),
        source: v.s === undefined ? DEFAULTS.source : backing(v.s, SOURCES),
        bytesPerVcpu: size('-b', v.b, DEFAULTS.bytesPerVcpu),
        vcpus: integer('-v', v.v, DEFAULTS.vcpus),
        runMs: duration('--run', v.run, DEFAULTS.runMs),
        resumeMs: v.resume === undefined ? 0 : duration('--resume', v.resume, 0),
        workingSetPermille: workingSetPermille(v['working-set']),
        live: livePolicy(v),
      },
    } as const;
  }
  if (verb === 'restore') {
    const [dir, ...flags] = rest;
    if (dir === undefined || dir.startsWith('-')) throw usage('restore needs the snapshot\'s directory: postcopy snapshot restore DIR [options]');
    const { values: v } = parseOptions(`${NAME} restore`, flags, RESTORE_OPTIONS);
    const mode = v.u === undefined ? undefined : faultMode(v.u) === 'MINOR' ? 'minor' as const : 'missing' as const;
    if (v.eager && (v.prefetch || v.background)) throw usage('--eager places every page before the guest runs: --prefetch and --background have nothing left to do');
    if (mode === 'minor' && v.s) throw usage('-s is for -u MISSING: a MINOR restore runs over the snapshot file itself');
    if (mode === 'missing' && v.consume) throw usage('--consume is for -u MINOR: a MISSING restore copies pages and leaves the snapshot as it was');
    if (v['prefetch-after'] && !v.prefetch) throw usage('--prefetch-after says when to place a --prefetch FILE: give the file');
    return {
      verb,
      json: v.json ?? false,
      restore: {
        dir,
        ...(mode ? { mode } : {}),
        ...(v.s ? { source: backing(v.s, SOURCES) } : {}),
        eager: v.eager ?? false,
        background: v.background ?? false,
        prefetchFile: v.prefetch,
        prefetchAfter: v['prefetch-after'] ?? false,
        consume: v.consume ?? false,
        prestart: !(v['no-prestart'] ?? false),
        recordFile: v.record,
        verify: !(v['no-verify'] ?? false),
        runAfterMs: duration('--run-after', v['run-after'], DEFAULTS.runAfterMs),
        timeoutMs: duration('--timeout', v.timeout, DEFAULTS.timeoutMs),
      },
    } as const;
  }
  throw usage(verb === undefined ? 'say `save` or `restore`' : `unknown snapshot action '${verb}': say \`save\` or \`restore\``);
}

export const snapshotCommand: Command = {
  name: 'snapshot',
  summary: 'save a running guest to a sparse file and state; restore it on demand with userfaultfd (MISSING copy or MINOR continue)',
  usage: `${NAME} save --out DIR [options] | save --demo | restore DIR [options]`,
  description: [
    'save runs a guest here (KVM vCPUs, or threads where there is no KVM), lets it run, pauses it,',
    'and writes DIR/memory (sparse: pages never written stay holes; hugetlb in whole huge pages)',
    'and DIR/snapshot.json (format version, layout, program, backend, the guest\'s state, a SHA-256',
    'per 64 MiB region). The oracle checks the guest before saving (and after, with --resume).',
    '',
    'restore builds the same guest, registers its memory with userfaultfd and runs it at once; pages',
    'come from the file when touched. MISSING (-u MISSING, the default): UFFDIO_COPY from a mapping',
    'of the file; the snapshot stays as saved. MINOR (-u MINOR --consume, the file in tmpfs or',
    'hugetlbfs): the guest\'s memory is the file itself, mapped shared, and UFFDIO_CONTINUE maps its',
    'page-cache pages; nothing is copied, the guest writes into the file, and the snapshot is marked',
    'consumed (a later restore refuses it). The guest\'s and the page server\'s threads start before',
    'the snapshot is opened (--no-prestart: after). The workload ends when every worker has written one whole pass; the guest runs on a',
    'moment, is paused, and the oracle checks every page (exit 1 on a lost write). A snapshot that',
    'is truncated, corrupt (checksums), of another format version or of a layout this build cannot',
    'run is refused before anything runs (exit 3).',
  ].join('\n'),
  optionHelp: [
    ['save --out DIR', 'where to write the snapshot (made if need be)'],
    ['save --demo', `a built-in guest (${DEFAULTS.vcpus} × ${DEFAULTS.bytesPerVcpu / 2 ** 20} MiB of ${DEFAULTS.source}) saved into a new directory in /dev/shm`],
    ['save --guest kvm|threads', 'what runs the guest (default kvm where /dev/kvm is usable, else threads)'],
    ['save -s <source>', `backing source (default ${DEFAULTS.source}): ${SOURCES.join(', ')}`],
    ['save -b <bytes> / -v <n>', `memory per worker and workers (default ${DEFAULTS.bytesPerVcpu / 2 ** 20}M, ${DEFAULTS.vcpus})`],
    ['save --run <duration>', `how long the guest runs before it is saved (default ${DEFAULTS.runMs}ms)`],
    ['save --working-set <pct>', 'after a first pass over all its memory, the guest writes only this share of it (like 10%), in a scattered order (threads guest)'],
    ['save --resume <duration>', 'after saving, let the guest run on this long and check it again (default: stop it)'],
    ['save --live', 'write memory while the guest runs, in rounds of its dirty tracker (kvm-dirty-log, or uffd-wp for threads); pause it only for the last dirty pages and the state'],
    ['save --max-rounds <n>', `--live: at most this many rounds before the pause (default ${LIVE_DEFAULTS.maxRounds})`],
    ['save --max-stale <units>', `--live: pause as soon as no more than this many units are dirty (default ${LIVE_DEFAULTS.maxStaleUnits})`],
    ['save --auto-converge', '--live: when the rounds stop shrinking the dirty set, throttle the guest (as migrate --auto-converge) before pausing'],
    ['restore DIR -u MISSING|MINOR', 'how pages are placed (default MISSING; --consume alone means MINOR)'],
    ['restore --consume', 'MINOR: let the guest run over (and write into) the snapshot\'s own memory file; the snapshot is used up'],
    ['restore -s <source>', 'MISSING: the memory restored into (default anonymous; anonymous_hugetlb for huge-page snapshots)'],
    ['restore --eager', 'place every page before the guest runs'],
    ['restore --background', 'place the pages not yet touched behind the running guest'],
    ['restore --prefetch FILE', 'place a recorded working set before the guest runs (in recorded order, one ioctl per run), the rest on demand'],
    ['restore --prefetch-after', 'place it right after the guest starts instead, racing it'],
    ['restore --no-prestart', 'start the guest\'s and page server\'s threads after opening the snapshot (to compare)'],
    ['restore --record FILE', 'write the pages faulted on, in order (merged into FILE if it exists: union, with counts)'],
    ['restore --no-verify', 'skip the region checksums (the state file and sizes are still checked)'],
    ['restore --run-after <duration>', `how long the guest runs on after its workload, before the check (default ${DEFAULTS.runAfterMs}ms)`],
    ['restore --timeout <duration>', `the workload must end within this (default ${DEFAULTS.timeoutMs / 1000}s)`],
    ['--json', 'print every figure as JSON'],
  ],

  async run(args: string[], io: Io): Promise<number> {
    const parsed = parseSnapshotArgs(args);
    const m = await import('../apps/snapshot/main.js');
    const { SnapshotInvalidError } = await import('../apps/snapshot/errors.js');
    const { oracleClean } = await import('../apps/snapshot/report.js');
    try {
      if (parsed.verb === 'save') {
        const r = await m.saveMain(parsed.save, io, parsed.json);
        return oracleClean(r.before) && (!r.after || oracleClean(r.after)) ? ExitCode.OK : ExitCode.FAILURE;
      }
      const r = await m.restoreMain(parsed.restore, io, parsed.json);
      if (oracleClean(r.oracle)) return ExitCode.OK;
      io.err(`postcopy: the oracle found ${r.oracle.lostWrites} lost write(s) and the guest saw ${r.oracle.guestMismatches} mismatch(es)\n`);
      return ExitCode.FAILURE;
    } catch (e) {
      // A snapshot refused is bad input: exit 3, one line with the reason.
      if (e instanceof SnapshotInvalidError) {
        io.err(`postcopy: ${e.message}\n`);
        return ExitCode.UNAVAILABLE;
      }
      throw e;
    }
  },
};
