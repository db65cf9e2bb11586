/**
 * `postcopy snapshot save | restore`: runs one, prints its figures (text or JSON).
 *
 * save runs a guest here (as `migrate send` does: the guest lives in this process), lets it
 * run, pauses it, checks it with the oracle, writes the snapshot, and then stops it or
 * (--resume) lets it run on and checks it again: saving must not disturb it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import type { Io } from '../../cli/command.js';
import { UnsupportedError } from '../../errors.js';
import type { GuestBackendName, MigratableGuest } from '../../guest/guest.js';
import { checkGuest, type OracleResult } from '../../guest/oracle.js';
import { describeWorkload, workingSet } from '../../guest/workload.js';
import { createGuest, defaultBackend, defaultTracker, kvmAvailability } from '../../guest/open.js';
import type { BackingSourceName } from '../../memory/backing.js';
import { checkMemory } from '../migrate/main.js';
import { type SaveRunReport, restoreLines, saveLines } from './report.js';
import { type RestoreOptions, type RestoreReport, restoreSnapshot } from './restore.js';
import { Restorer } from './restorer.js';
import { saveSnapshot } from './save.js';
import { type LivePolicy, saveSnapshotLive } from './live-save.js';
import { probeUffdWp } from '../../tracking/probe.js';
import type { TrackerName } from '../../tracking/tracker.js';
import { mergeWorkingSet, readWorkingSet, writeWorkingSet } from './working-set.js';
import { fileSystemOf, openSnapshot } from './open.js';
import { existsSync } from 'node:fs';

/** Guest memory starts at 4 GiB, above the KVM guest's system slot (as migrate's does). */
export const GUEST_ADDRESS = 4 * 2 ** 30;

export interface SaveOptions {
  /** Undefined with --demo: a new directory in /dev/shm. */
  readonly out: string | undefined;
  readonly guest: GuestBackendName | undefined;
  readonly source: BackingSourceName;
  readonly bytesPerVcpu: number;
  readonly vcpus: number;
  /** How long the guest runs before it is saved (ms). */
  readonly runMs: number;
  /** After saving, let the guest run on this long and check it again (0: stop it). */
  readonly resumeMs: number;
  /** --live: write memory while the guest runs, in rounds of its dirty tracker, under this policy (live-save.ts). */
  readonly live?: LivePolicy | undefined;
  /** A working-set workload (‰ of each slice after the first pass); undefined: every page, every pass. */
  readonly workingSetPermille?: number | undefined;
}

/**
 * Keeps a running guest running until every worker is past its first pass, where the
 * workload has a working set (its state read at short pauses): a snapshot taken inside the
 * first pass would restore into a whole pass over all memory, not the working set.
 */
async function untilPastFirstPass(guest: MigratableGuest): Promise<void> {
  if (guest.plan.workload.kind === 'sweep') return;
  for (;;) {
    await guest.pause();
    const past = guest.states().every((s) => s.pass > 2n || (s.pass === 2n && s.index > 0));
    await guest.run();
    if (past) return;
    await sleep(50);
  }
}

export const toJson = (value: unknown) => JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v), 2);

function backendFor(asked: GuestBackendName | undefined, io: Io, json: boolean): GuestBackendName {
  if (asked === 'kvm') {
    const k = kvmAvailability();
    if (!k.usable) throw new UnsupportedError(`--guest kvm: ${k.reason}`, 'Leave out --guest to run the threads guest, which needs no KVM');
  }
  if (asked) return asked;
  const d = defaultBackend();
  if (!json) io.err(`guest: ${d.backend} (${d.why}; --guest to choose)\n`);
  return d.backend;
}

/**
 * The tracker a live save uses with `backend`, refused here with the remedy when it cannot
 * be trusted: uffd-wp is tried by behaviour first (a kernel that misreports written pages
 * would give a snapshot that restores with lost writes).
 */
function liveTracker(backend: GuestBackendName): TrackerName {
  const tracking = defaultTracker(backend);
  if (tracking === 'uffd-wp') {
    const wp = probeUffdWp();
    if (!wp.usable) throw new UnsupportedError(`--live needs dirty tracking, and uffd-wp does not work right here: ${wp.reason}`, `${wp.remedy}; or leave out --live (the guest is paused while all of its memory is written)`);
  }
  return tracking;
}

export async function saveMain(o: SaveOptions, io: Io, json: boolean): Promise<SaveRunReport> {
  checkMemory(o.bytesPerVcpu, o.vcpus, 1);
  const backend = backendFor(o.guest, io, json);
  const tracking = o.live ? liveTracker(backend) : undefined;
  // Checked before a guest exists: hugetlbfs has no write(2), so the state file cannot go there.
  if (o.out && fileSystemOf(o.out) === 'hugetlbfs') throw new UnsupportedError(`${o.out} is on hugetlbfs, where the state file cannot be written (hugetlbfs files can only be mapped)`, 'Save into a directory on tmpfs (/dev/shm) or a disk; hugetlb memory is saved there in whole huge pages');
  const dir = o.out ?? mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'postcopy-snapshot-'));
  const workload = o.workingSetPermille === undefined ? {} : { workload: workingSet(o.workingSetPermille) };
  const guest: MigratableGuest = createGuest(backend, { source: o.source, size: o.bytesPerVcpu * o.vcpus, vcpus: o.vcpus, guestAddress: GUEST_ADDRESS, ...workload }, tracking ? { tracking } : {});
  try {
    const t0 = performance.now();
    await guest.run();
    await sleep(o.runMs);
    await untilPastFirstPass(guest);
    let t1: number;
    let before: OracleResult | undefined;
    let save;
    let pausedMs;
    if (o.live) {
      t1 = performance.now();
      // The oracle checks the guest at the pause, where the snapshot's state was taken; then it may run on.
      save = await saveSnapshotLive(guest, dir, o.live, {
        atPause: async () => {
          before = checkGuest(guest, guest.states());
          if (o.resumeMs > 0) await guest.run();
        },
      });
      pausedMs = save.live.pause.ms;
      if (o.resumeMs > 0) await sleep(o.resumeMs);
    } else {
      await guest.pause();
      t1 = performance.now();
      before = checkGuest(guest, guest.states());
      save = saveSnapshot(guest, dir);
      pausedMs = performance.now() - t1;
      if (o.resumeMs > 0) {
        await guest.run();
        await sleep(o.resumeMs);
      }
    }
    if (!before) throw new Error('saveMain: the guest was saved without being checked at its pause');
    let after;
    if (o.resumeMs > 0) {
      await guest.pause();
      after = checkGuest(guest, guest.states());
    }
    const report: SaveRunReport = { guest: backend, vcpus: o.vcpus, source: o.source, workload: describeWorkload(guest.plan.workload), ranMs: t1 - t0, pausedMs, save, before, after };
    if (json) io.out(`${toJson(report)}\n`);
    else io.out(`${saveLines(report).join('\n')}\nrestore it with: postcopy snapshot restore ${dir}\n`);
    return report;
  } finally {
    if (guest.running) await guest.pause().catch(() => undefined);
    guest.close();
  }
}

export interface RestoreMainOptions extends Omit<RestoreOptions, 'prefetch' | 'onEvent' | 'restorer'> {
  readonly prefetchFile: string | undefined;
  readonly recordFile: string | undefined;
  /** Start the threads before the snapshot is opened (restorer.ts). */
  readonly prestart: boolean;
}

export async function restoreMain(o: RestoreMainOptions, io: Io, json: boolean): Promise<RestoreReport> {
  const nodeStartMs = performance.now();
  // The threads first, as a VMM exists before its snapshot load request; the time this
  // takes is reported apart (like Node's start-up), not in the time to resume.
  const restorer = o.prestart ? await Restorer.prestart() : undefined;
  try {
    return await restoreWith(o, io, json, nodeStartMs, restorer);
  } finally {
    await restorer?.close();
  }
}

async function restoreWith(o: RestoreMainOptions, io: Io, json: boolean, nodeStartMs: number, restorer: Restorer | undefined): Promise<RestoreReport> {
  // The record files are read (and refused) before anything is built.
  let prefetch;
  let previous;
  if (o.prefetchFile || o.recordFile) {
    const s = openSnapshot(o.dir);
    try {
      if (o.prefetchFile) prefetch = readWorkingSet(o.prefetchFile, s.manifest);
      if (o.recordFile && existsSync(o.recordFile)) previous = readWorkingSet(o.recordFile, s.manifest);
    } finally {
      s.close();
    }
  }
  const report = await restoreSnapshot({
    ...o,
    ...(prefetch ? { prefetch } : {}),
    ...(restorer ? { restorer } : {}),
    startedAt: performance.now(),
    onEvent: (e) => {
      if (json) return;
      if (e.phase === 'resumed') io.err(`resumed in ${e.resumeMs.toFixed(2)} ms\n`);
    },
  });
  if (o.recordFile) {
    // Re-read the manifest only for its identity: the restore has closed its snapshot.
    const s = openSnapshot(o.dir);
    try {
      writeWorkingSet(o.recordFile, mergeWorkingSet(previous, s.manifest, report.faulted));
    } finally {
      s.close();
    }
  }
  if (json) {
    const { faulted, ...rest } = report;
    io.out(`${toJson({ ...rest, faultedUnits: faulted.length, nodeStartMs, prestartMs: restorer?.startMs ?? null })}\n`);
  } else io.out(`${restoreLines(report, nodeStartMs, restorer?.startMs).join('\n')}\n${o.recordFile ? `record:   ${report.faulted.length} faulted unit(s) merged into ${o.recordFile}\n` : ''}`);
  return report;
}
