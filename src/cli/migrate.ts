import { BACKING_INFO, BACKING_SOURCES, type BackingSourceName } from '../memory/backing.js';
import { native } from '../native/binding.js';
import { parseHostPort } from '../util/format.js';
import { DEFAULTS, defaultMode, type ReceiveOptions, type SendOptions } from '../apps/migrate/options.js';
import type { MigrationMode } from '../apps/migrate/protocol.js';
import { type Command, ExitCode, type Io, parseOptions } from './command.js';
import { optionParsers } from './values.js';
import { GUEST_BACKENDS, type GuestBackendName } from '../guest/guest.js';
import { isGuestBackend } from '../guest/open.js';
import { TRACKER_NAMES, type TrackerName } from '../tracking/tracker.js';
import { isLoopback, parseSecurity, SECURITY_HELP, SECURITY_OPTIONS, securityArgs } from './security-flags.js';

const NAME = 'postcopy migrate';
const { usage, integer, size, duration, backing: source, faultMode } = optionParsers(NAME);

/** The sources a migration moves: every backing but guest_memfd, which userfaultfd cannot register on this kernel. */
const MIGRATE_SOURCES = BACKING_SOURCES.filter((s) => s !== 'guest_memfd');

function backing(text: string | undefined): BackingSourceName | undefined {
  if (text === 'guest_memfd') throw usage('-s guest_memfd: this kernel cannot register guest_memfd with userfaultfd (see `postcopy probe`); use shmem');
  return text === undefined ? undefined : source(text, MIGRATE_SOURCES);
}

function mode(text: string | undefined): MigrationMode | undefined {
  return text === undefined ? undefined : faultMode(text) === 'MINOR' ? 'minor' : 'missing';
}

function endpoint(flag: string, text: string | undefined): { host: string; port: number } {
  if (text === undefined) throw usage(`${flag} HOST:PORT is required`);
  const hp = parseHostPort(text);
  if (!hp) throw usage(`${flag} takes HOST:PORT (e.g. 127.0.0.1:4444), got '${text}'`);
  return hp;
}

function guestBackend(text: string | undefined): GuestBackendName | undefined {
  if (text === undefined) return undefined;
  if (!isGuestBackend(text)) throw usage(`--guest takes ${GUEST_BACKENDS.join(' or ')}, got '${text}'`);
  return text;
}

function tracker(text: string | undefined): TrackerName | undefined {
  if (text === undefined) return undefined;
  if (!(TRACKER_NAMES as readonly string[]).includes(text)) throw usage(`--dirty-tracking takes ${TRACKER_NAMES.join(' or ')}, got '${text}'`);
  return text as TrackerName;
}

const OPTIONS = {
  connect: { type: 'string' },
  guest: { type: 'string' },
  'dirty-tracking': { type: 'string' },
  listen: { type: 'string' },
  demo: { type: 'boolean' },
  s: { type: 'string' },
  u: { type: 'string' },
  b: { type: 'string' },
  v: { type: 'string' },
  'postcopy-now': { type: 'boolean' },
  'postcopy-after': { type: 'string' },
  'max-rounds': { type: 'string' },
  'max-stale': { type: 'string' },
  'downtime-limit': { type: 'string' },
  'keep-precopy': { type: 'boolean' },
  'auto-converge': { type: 'boolean' },
  warmup: { type: 'string' },
  bandwidth: { type: 'string' },
  timeout: { type: 'string' },
  'recover-timeout': { type: 'string' },
  'max-memory': { type: 'string' },
  'map-clean': { type: 'string' },
  'run-after': { type: 'string' },
  json: { type: 'boolean' },
  ...SECURITY_OPTIONS,
  html: { type: 'string' },
} as const;

type Values = ReturnType<typeof parseOptions<typeof OPTIONS>>['values'];

function sendOptions(v: Values): Omit<SendOptions, 'host' | 'port'> {
  const security = parseSecurity(v, usage);
  const source = backing(v.s) ?? DEFAULTS.source;
  const m = mode(v.u) ?? defaultMode(BACKING_INFO[source].shared);
  if (m === 'minor' && !BACKING_INFO[source].shared) throw usage(`-u MINOR needs shared memory (-s shmem or shared_hugetlb), not ${source}`);
  const guest = guestBackend(v.guest);
  const tracking = tracker(v['dirty-tracking']);
  if (guest === 'threads' && tracking === 'kvm-dirty-log') throw usage('--dirty-tracking kvm-dirty-log needs --guest kvm: the threads guest is tracked with uffd-wp');
  const postcopyAfter = v['postcopy-after'] === undefined ? undefined : duration('--postcopy-after', v['postcopy-after'], 0);
  return {
    source,
    mode: m,
    guest,
    tracking,
    bytesPerVcpu: size('-b', v.b, DEFAULTS.bytesPerVcpu),
    vcpus: integer('-v', v.v, DEFAULTS.vcpus),
    policy: {
      postcopyNow: v['postcopy-now'] ?? false,
      postcopyAfterMs: postcopyAfter,
      maxRounds: integer('--max-rounds', v['max-rounds'], DEFAULTS.maxRounds),
      maxStalePages: integer('--max-stale', v['max-stale'], DEFAULTS.maxStalePages, 0),
      downtimeLimitMs: v['downtime-limit'] === undefined ? undefined : duration('--downtime-limit', v['downtime-limit'], 0),
      keepPrecopyWhenNotConverging: v['keep-precopy'] ?? false,
      autoConverge: v['auto-converge'] ?? false,
    },
    warmupMs: duration('--warmup', v.warmup, DEFAULTS.warmupMs),
    bandwidth: v.bandwidth === undefined ? 0 : size('--bandwidth', v.bandwidth, 0),
    timeoutMs: duration('--timeout', v.timeout, DEFAULTS.timeoutMs),
    recoverTimeoutMs: duration('--recover-timeout', v['recover-timeout'], DEFAULTS.recoverTimeoutMs),
    security,
  };
}

function receiveTuning(v: Values): Pick<ReceiveOptions, 'mapClean' | 'runAfterMs'> {
  const mapClean = v['map-clean'] ?? DEFAULTS.mapClean;
  if (mapClean !== 'before' && mapClean !== 'after') throw usage(`--map-clean takes before or after, got '${mapClean}'`);
  return { mapClean, runAfterMs: duration('--run-after', v['run-after'], DEFAULTS.runAfterMs) };
}

/** Which role, with its options: every refusal is a UsageError naming the flag. */
export function parseMigrateArgs(args: string[]):
  | { role: 'send'; json: boolean; html?: string | undefined; send: SendOptions }
  | { role: 'receive'; json: boolean; html?: string | undefined; receive: ReceiveOptions }
  | { role: 'recover'; json: boolean; pid: number }
  | { role: 'demo'; json: boolean; html?: string | undefined; send: Omit<SendOptions, 'host' | 'port'>; receive: Pick<ReceiveOptions, 'mapClean' | 'runAfterMs'>; securityArgs: string[] } {
  if (args[0] === 'recover') {
    const rest = args.slice(1);
    if (rest.length !== 1 || !/^\d{1,9}$/.test(rest[0]!)) throw usage('recover takes the pid of a running `postcopy migrate send` or `receive`: `postcopy migrate recover PID`');
    return { role: 'recover', json: false, pid: Number(rest[0]) };
  }
  const role = args[0] === 'send' || args[0] === 'receive' ? args[0] : undefined;
  const rest = role ? args.slice(1) : args;
  const { values: v } = parseOptions(NAME, rest, OPTIONS);
  const json = v.json ?? false;
  if (v.html === '') throw usage('--html needs a file name');
  const only = (flags: (keyof Values)[], where: string) => {
    for (const f of flags) if (v[f] !== undefined) throw usage(`${f.length === 1 ? '-' : '--'}${f} is for ${where}`);
  };
  if (role === 'send') {
    if (v.demo) throw usage('--demo runs both roles; drop `send`');
    only(['listen', 'max-memory', 'map-clean', 'run-after', 'insecure'], '`migrate receive` or --demo');
    return { role, json, html: v.html, send: { ...endpoint('--connect', v.connect), ...sendOptions(v) } };
  }
  if (role === 'receive') {
    if (v.demo) throw usage('--demo runs both roles; drop `receive`');
    only(['connect', 'b', 'v', 'postcopy-now', 'postcopy-after', 'max-rounds', 'max-stale', 'downtime-limit', 'keep-precopy', 'auto-converge', 'warmup', 'bandwidth', 'dirty-tracking'], '`migrate send` (the source proposes the guest)');
    const source = backing(v.s);
    const listen = endpoint('--listen', v.listen);
    if (v['tls-name'] !== undefined) throw usage('--tls-name is for `migrate send` (the name it expects of the destination)');
    const security = parseSecurity(v, usage);
    if (security.kind === 'plain' && !isLoopback(listen.host) && !v.insecure) {
      throw usage(`receive --listen ${v.listen} without authentication: anyone who reaches that address could take over the migration or read guest memory; secure it with --psk-file or --tls-cert/--tls-key/--tls-ca, listen on 127.0.0.1, or say --insecure on a network you trust`);
    }
    return {
      role,
      json,
      html: v.html,
      receive: {
        ...listen,
        security,
        source,
        mode: mode(v.u),
        guest: guestBackend(v.guest),
        maxMemory: size('--max-memory', v['max-memory'], DEFAULTS.maxMemory),
        ...receiveTuning(v),
        timeoutMs: duration('--timeout', v.timeout, DEFAULTS.timeoutMs),
        recoverTimeoutMs: duration('--recover-timeout', v['recover-timeout'], DEFAULTS.recoverTimeoutMs),
      },
    };
  }
  if (!v.demo) throw usage('say `send`, `receive` or --demo');
  only(['connect', 'listen', 'max-memory', 'insecure', 'tls-name'], '`migrate send` / `migrate receive`');
  return { role: 'demo', json, html: v.html, send: sendOptions(v), receive: receiveTuning(v), securityArgs: securityArgs(v) };
}

export const migrateCommand: Command = {
  name: 'migrate',
  summary: 'live-migrate a running guest (KVM vCPUs, or threads where there is no KVM) over TCP: precopy, then post-copy',
  usage: `${NAME} --demo | send --connect HOST:PORT | receive --listen HOST:PORT [options] | recover PID`,
  description: [
    'Moves a running guest from one process (send) to another (receive). The guest loops over',
    'its memory, incrementing a counter in every page and timing its own progress. The source',
    'streams memory while the guest runs (precopy; a dirty tracker finds re-dirtied pages: KVM\'s',
    'dirty log, or userfaultfd write-protect), pauses it and sends its state and the stale-page',
    'set (blackout); the destination',
    'resumes at once and fetches stale pages on demand, ahead of a background stream (post-copy).',
    'MINOR (shared memory): pages are written through an alias mapping and mapped with',
    'UFFDIO_CONTINUE. MISSING (private memory, as QEMU): stale pages are dropped and filled with',
    'UFFDIO_COPY. Afterwards the destination pauses the guest and checks every page\'s counter:',
    'one lost write fails the migration (exit 1).',
    '',
    'The guest is run by KVM vCPUs (--guest kvm, the default where /dev/kvm is usable) or by',
    'threads in the process doing the same work over the same memory (--guest threads, the',
    'default elsewhere; needs no KVM). Both sides must run the same backend.',
    '',
    '--demo runs both roles on this machine over loopback (the destination in a child process).',
    `Defaults: ${DEFAULTS.vcpus} vCPUs × ${DEFAULTS.bytesPerVcpu / 2 ** 20} MiB of ${DEFAULTS.source}, MINOR faults.`,
    'Needs userfaultfd (root, or /dev/userfaultfd access) and, for --guest kvm, /dev/kvm; hugetlb',
    'sources need reserved hugepages.',
  ].join('\n'),
  optionHelp: [
    ['--demo', 'run source and destination locally and print both sides\' figures'],
    ['send --connect HOST:PORT', 'run the guest here and migrate it to a listening destination'],
    ['receive --listen HOST:PORT', 'wait for a source (port 0: any free port; the port is printed)'],
    ['--guest kvm|threads', 'what runs the guest (default kvm where /dev/kvm is usable, else threads; receive: refuse the other)'],
    ['--dirty-tracking kvm-dirty-log|uffd-wp', 'send: how re-dirtied pages are found (default kvm-dirty-log for kvm, uffd-wp for threads)'],
    ['-s <source>', `backing source: ${MIGRATE_SOURCES.join(', ')} (default ${DEFAULTS.source}; receive: refuse others)`],
    ['-u MINOR|MISSING', 'fault mode (default MINOR for shared memory, MISSING for private; receive: refuse the other)'],
    ['-b <bytes>', `guest memory per vCPU, as bench's -b (default ${DEFAULTS.bytesPerVcpu / 2 ** 20}M)`],
    ['-v <n>', `vCPUs (default ${DEFAULTS.vcpus})`],
    ['--postcopy-now', 'switch to post-copy right after the first precopy round'],
    ['--postcopy-after <duration>', 'switch once precopy has run this long (e.g. 2s)'],
    ['--max-rounds <n>', `at most this many precopy rounds (default ${DEFAULTS.maxRounds})`],
    ['--max-stale <pages>', `switch as soon as a round would send no more than this (default ${DEFAULTS.maxStalePages})`],
    ['--downtime-limit <duration>', 'switch once the dirty set would take no longer than this to send at the measured bandwidth (QEMU\'s downtime-limit)'],
    ['--keep-precopy', 'go on with rounds when they stop shrinking the dirty set (default: switch to post-copy then)'],
    ['--auto-converge', 'when rounds stop shrinking the dirty set, pause the guest for 20% of every 100 ms, +10% each time, before switching (QEMU\'s auto-converge)'],
    ['--warmup <duration>', `let the guest run this long before migrating (default ${DEFAULTS.warmupMs}ms)`],
    ['--bandwidth <bytes>', 'limit the post-copy background stream to this many bytes/s (requested pages are never limited)'],
    ['--timeout <duration>', `a peer silent this long is an error; in post-copy, a lost link (default ${DEFAULTS.timeoutMs / 1000}s)`],
    ['--recover-timeout <duration>', `post-copy paused by a lost link: reconnect (send) or wait (receive) this long (default ${DEFAULTS.recoverTimeoutMs / 1000}s)`],
    ['recover PID', 'make a paused migration (its pid) retry reconnecting at once, as QEMU\'s migrate-recover'],
    ['--max-memory <bytes>', 'receive: refuse larger guests (default 64G)'],
    ['--map-clean before|after', 'MINOR: map clean pages before resuming the guest, or in the background after (default after)'],
    ['--run-after <duration>', `how long the guest runs on after the last page before the check (default ${DEFAULTS.runAfterMs}ms)`],
    ...SECURITY_HELP,
    ['--json', 'print every figure as JSON'],
    ['--html <file>', 'also write an HTML report of the run there (see `postcopy report`)'],
  ],

  async run(args: string[], io: Io): Promise<number> {
    const parsed = parseMigrateArgs(args);
    const m = await import('../apps/migrate/main.js');
    const { FrozenGuestError } = await import('../apps/migrate/destination/destination.js');
    const { clean } = await import('../apps/migrate/report.js');
    if (parsed.role === 'recover') {
      const { askToRecover } = await import('../apps/migrate/recover-command.js');
      io.err(`${askToRecover(parsed.pid)}\n`);
      return ExitCode.OK;
    }
    const { writeRunHtml } = await import('../apps/report/main.js');
    const html = (run: unknown) => parsed.html && writeRunHtml(run, parsed.html);
    if (parsed.role === 'send') {
      html(await m.sendMain(parsed.send, io, parsed.json, args));
      return ExitCode.OK;
    }
    if (parsed.role === 'receive') {
      try {
        const report = await m.receiveMain(parsed.receive, io, parsed.json, args);
        html(report);
        if (clean(report)) return ExitCode.OK;
        io.err(`postcopy: the oracle found ${report.oracle.lostWrites} lost write(s) and the guest saw ${report.oracle.guestMismatches} mismatch(es)\n`);
        return ExitCode.FAILURE;
      } catch (e) {
        if (e instanceof FrozenGuestError) {
          // The vCPUs are blocked on pages that will not come: end every thread now, before
          // any descriptor closes (closing the userfaultfd would let them run on stale pages).
          io.err(`postcopy: ${e.message}\n`);
          native.exitNow(ExitCode.FAILURE);
        }
        throw e;
      }
    }
    const demo = await m.demoMain(parsed.send, parsed.receive, io, parsed.json, args, parsed.securityArgs);
    const { destination } = demo;
    html(demo);
    return clean(destination) ? ExitCode.OK : ExitCode.FAILURE;
  },
};
