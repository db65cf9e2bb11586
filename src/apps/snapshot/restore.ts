/**
 * Restoring a snapshot lazily: open and check it (open.ts; refusals come before anything
 * runs), build the same guest over fresh memory, register that memory with userfaultfd,
 * load the saved state and let the guest run at once. Pages come from the file when
 * touched (the page server thread), or first in bulk: --eager (everything before the
 * guest runs), --prefetch (a recorded working set, before the guest runs as REAP does, or
 * with --prefetch-after right after, racing it), --background (the rest, behind the guest).
 *
 * - MISSING: the guest's memory is private (or shared) memory of its own; a fault copies
 *   the unit from the file's mapping (UFFDIO_COPY), a hole is mapped as zeros.
 * - MINOR: the file is in shared memory (tmpfs, hugetlbfs): the guest's memory IS the file,
 *   mapped shared; a fault maps the page-cache page (UFFDIO_CONTINUE) and the guest's
 *   writes go into it. No byte is copied, by us or by the kernel, which is why the snapshot
 *   is consumed: it asks for --consume and marks the directory before the guest runs, so a
 *   later restore refuses it instead of running a guest over memory that moved on.
 *
 * The threads it runs on can be started before the snapshot is opened (restorer.ts): then
 * the time to resume is the open, the guest built, the memory registered, and two messages.
 *
 * The workload ends when every worker has written one whole pass (workload-end.ts); the
 * guest runs on a moment, is paused, the rest of its memory is placed, and the oracle
 * checks every page.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnsupportedError } from '../../errors.js';
import type { GuestBackendName, MigratableGuest, WorkerState } from '../../guest/guest.js';
import { checkGuest, type OracleResult } from '../../guest/oracle.js';
import { describeWorkload } from '../../guest/workload.js';
import { createGuest, kvmAvailability } from '../../guest/open.js';
import { Backing, BACKING_INFO, type BackingSourceName } from '../../memory/backing.js';
import { uffdFeaturesFor } from '../../memory/uffd-features.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { SnapshotInvalidError } from './errors.js';
import { type OpenSnapshot, openSnapshot, verifySnapshot } from './open.js';
import { PageServer } from './page-server.js';
import { Counter, type FileReader, type PlaceTarget, placeRange, readerFor } from './placement.js';
import { UnitMap } from './unit-map.js';
import { waitForPass } from './workload-end.js';
import { prefetchRuns, type WorkingSet } from './working-set.js';
import type { Restorer } from './restorer.js';
import { CONSUMED_FILE } from './manifest.js';

export type RestoreMode = 'missing' | 'minor';

export interface RestoreOptions {
  readonly dir: string;
  /** Undefined: MINOR with --consume where the file is in shared memory, else MISSING (which keeps the snapshot). */
  readonly mode?: RestoreMode;
  /** MISSING: the memory restored into (default anonymous, or anonymous_hugetlb for huge-page snapshots). */
  readonly source?: BackingSourceName;
  readonly eager: boolean;
  readonly background: boolean;
  readonly prefetch?: WorkingSet;
  /** Place the prefetch list behind the running guest instead of before it runs. */
  readonly prefetchAfter?: boolean;
  /** MINOR: the guest may write into the snapshot's memory file (required for MINOR). */
  readonly consume?: boolean;
  /** Threads started before the snapshot was opened (taken from; the caller closes it). */
  readonly restorer?: Restorer;
  /** Check every region's checksum before the guest runs. */
  readonly verify: boolean;
  /** How long the guest runs on after its workload ended, before the oracle (ms). */
  readonly runAfterMs: number;
  /** The workload must end within this (ms). */
  readonly timeoutMs: number;
  /** performance.now() when the restore was asked for (default: on entry). */
  readonly startedAt?: number;
  readonly onEvent?: (e: RestoreEvent) => void;
}

export type RestoreEvent =
  | { phase: 'opened'; backend: GuestBackendName; mode: RestoreMode; size: number; vcpus: number; fs: string }
  | { phase: 'resumed'; resumeMs: number }
  | { phase: 'finished'; workloadMs: number };

export interface RestoreReport {
  readonly dir: string;
  readonly backend: GuestBackendName;
  readonly mode: RestoreMode;
  /** What the guest's memory is. */
  readonly memory: string;
  readonly fs: string;
  readonly size: number;
  readonly unit: number;
  readonly units: number;
  readonly dataUnits: number;
  readonly vcpus: number;
  /** What the workers touch each pass (workload.ts describeWorkload). */
  readonly workload: string;
  readonly verified: boolean;
  readonly eager: boolean;
  readonly background: boolean;
  readonly prefetchUnits: number;
  readonly prefetchRuns: number;
  /** ms from the restore being asked for (the snapshot opened). */
  readonly timings: {
    readonly openMs: number;
    readonly verifyMs: number;
    /** The guest and its memory made, the state loaded, the memory registered with userfaultfd. */
    readonly buildMs: number;
    /** Starting the page server's and the guest's threads. */
    readonly threadsMs: number;
    readonly eagerMs: number;
    /** Placing the prefetch list before the guest ran (0: none, or --prefetch-after). */
    readonly prefetchMs: number;
    /** Snapshot opened → guest running. */
    readonly resumeMs: number;
    /** Snapshot opened → the workload done (every worker one whole pass). */
    readonly workloadEndMs: number;
    /** Guest running → workload done. */
    readonly workloadMs: number;
    /** Guest running → the prefetch list / background fill placed (NaN: none, or not by the pause). */
    readonly prefetchDoneMs: number;
    readonly backgroundDoneMs: number;
  };
  /** Up to the pause (the fill for the oracle after it is counted apart). */
  readonly faults: { readonly total: number; readonly missing: number; readonly minor: number; readonly meanServiceUs: number };
  readonly placed: { readonly byFault: number; readonly byPrefetch: number; readonly byBackground: number; readonly eager: number; readonly afterPause: number };
  /** Units copied from the file, mapped from the page cache, mapped as zeros; fill ioctls; EEXIST. */
  readonly copiedUnits: number;
  readonly continuedUnits: number;
  readonly zeroUnits: number;
  readonly bytesRead: number;
  readonly ioctls: number;
  readonly exists: number;
  readonly pageServerCpuMs: number;
  /** Units in the order of first faults (what --record keeps). */
  readonly faulted: readonly number[];
  readonly states: readonly WorkerState[];
  readonly oracle: OracleResult;
}

function defaultSource(unit: number): BackingSourceName {
  return unit === 4096 ? 'anonymous' : unit === 2 ** 21 ? 'anonymous_hugetlb' : 'anonymous_hugetlb_1gb';
}

/** Chooses the mode and the memory; refuses what cannot work here, saying why. */
function plan(s: OpenSnapshot, o: RestoreOptions): { mode: RestoreMode; source: BackingSourceName | undefined } {
  const { unit } = s.manifest.memory;
  const shared = s.fs === 'tmpfs' || s.fs === 'hugetlbfs';
  const mode = o.mode ?? (o.consume ? 'minor' : 'missing');
  if (mode === 'minor') {
    if (!shared) throw new UnsupportedError(`MINOR faults map the snapshot's own pages, which needs its memory file in shared memory (tmpfs or hugetlbfs); ${s.path} is not`, 'Copy the snapshot to /dev/shm, or restore with -u MISSING');
    if (!o.consume) throw new UnsupportedError('a MINOR restore runs the guest over the snapshot\'s own memory file, so the guest\'s writes change it and it cannot be restored again', 'Add --consume to hand the snapshot over, or restore with -u MISSING to keep it');
    if (o.source) throw new UnsupportedError('-s is for MISSING restores: with MINOR the guest\'s memory is the snapshot file itself');
    if (s.fs === 'hugetlbfs' && unit === 4096) throw new SnapshotInvalidError('ERR_SNAPSHOT_LAYOUT', 'the snapshot was saved in 4 KiB units and its file is on hugetlbfs: restore it from tmpfs');
    return { mode, source: undefined };
  }
  const source = o.source ?? defaultSource(unit);
  const info = BACKING_INFO[source];
  if (info.pageSize !== unit) throw new SnapshotInvalidError('ERR_SNAPSHOT_LAYOUT', `the snapshot was saved in ${unit}-byte units, ${source}'s page is ${info.pageSize}`, `Restore into memory of the same page size (the default is ${defaultSource(unit)})`);
  if (source === 'guest_memfd') throw new UnsupportedError('guest_memfd memory cannot be registered with userfaultfd on this kernel');
  return { mode, source };
}

/** Marks the snapshot consumed (O_EXCL: of two restores racing for it, one wins). */
function markConsumed(s: OpenSnapshot): void {
  let fd: number;
  try {
    fd = openSync(join(s.dir, CONSUMED_FILE), 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new SnapshotInvalidError('ERR_SNAPSHOT_CONSUMED', `${s.dir} is being consumed by another MINOR restore`, 'Save the guest again, or restore with -u MISSING');
    throw e;
  }
  try {
    writeSync(fd, `${JSON.stringify({ pid: process.pid, at: new Date().toISOString() })}\n`);
  } finally {
    closeSync(fd);
  }
}

export async function restoreSnapshot(o: RestoreOptions): Promise<RestoreReport> {
  const t0 = o.startedAt ?? performance.now();
  const at = () => performance.now() - t0;
  const snap = openSnapshot(o.dir);
  let guest: MigratableGuest | undefined;
  let uffd: Userfaultfd | undefined;
  let server: PageServer | undefined;
  let reader: FileReader | undefined;
  let failure: Error | undefined;
  try {
    const m = snap.manifest;
    const { unit, size } = m.memory;
    const { mode, source } = plan(snap, o);
    const backend = m.guest.backend;
    if (backend === 'kvm') {
      const k = kvmAvailability();
      if (!k.usable) throw new UnsupportedError(`the snapshot is of a kvm guest and this machine cannot run one (${k.reason})`, 'Restore it where /dev/kvm is usable, or save a threads guest (--guest threads)');
    }
    const hugetlb = unit > 4096;
    if (o.prefetch && (o.prefetch.size !== size || o.prefetch.unit !== unit)) throw new SnapshotInvalidError('ERR_RECORD', 'the working-set record is of another memory layout');
    const openMs = at();
    o.onEvent?.({ phase: 'opened', backend, mode, size, vcpus: m.guest.shape.vcpus, fs: snap.fs });

    // The guest, over its memory; the saved state loaded before a thread exists.
    const t1 = at();
    const shape = { ...m.guest.shape, source: source ?? (hugetlb ? 'shared_hugetlb' : 'shmem') };
    // With a restorer, the guest's memory (MISSING into anonymous memory, or MINOR's file) goes
    // where its threads already view. Hugetlbfs needs huge-page alignment the range may not have.
    const reservedAt = (mode === 'minor' ? snap.fs === 'tmpfs' : source === 'anonymous') && backend === 'threads' ? o.restorer?.claim(size) : undefined;
    const backing =
      mode === 'minor'
        ? Backing.sharedFile(openSync(snap.path, 'r+'), size, { pageSize: unit, hugetlb: snap.fs === 'hugetlbfs', ...(reservedAt === undefined ? {} : { at: reservedAt }) })
        : reservedAt !== undefined
          ? Backing.create('anonymous', size, { name: 'postcopy-restore', at: reservedAt })
          : undefined;
    guest = createGuest(backend, shape, { ...(backing ? { backing } : {}), ...(o.restorer ? { workers: o.restorer.guestWorkers } : {}) });
    const states = m.guest.states.map((s) => new Uint8Array(Buffer.from(s, 'base64')));
    try {
      guest.load(states, { resetStall: true });
    } catch (e) {
      throw new SnapshotInvalidError('ERR_SNAPSHOT_STATE', `the saved guest state cannot be loaded: ${(e as Error).message}`);
    }
    guest.setClock(BigInt(m.guest.clock.ticks));
    const restored = guest.states();
    const memoryInfo = mode === 'minor' ? { shared: true, hugetlb: snap.fs === 'hugetlbfs' } : BACKING_INFO[source!];
    uffd = Userfaultfd.open({ features: uffdFeaturesFor(memoryInfo, mode === 'minor' ? 'MINOR' : 'MISSING', ['THREAD_ID']), nonBlocking: true });
    const regionStart = guest.backing.primary.address;
    uffd.register(regionStart, size, [mode === 'minor' ? 'MINOR' : 'MISSING']);
    const buildMs = at() - t1;

    // Checksums first: starting threads meanwhile only slows both down on a small machine
    // (a worker's start is CPU work). The page server's and the guest's threads start together.
    const verifyMs = o.verify ? verifySnapshot(snap).ms : 0;
    const t2 = at();
    const placed = UnitMap.shared(snap.units);
    const prefetch = o.prefetch ? prefetchRuns(o.prefetch) : [];
    const prefetchBefore = prefetch.length > 0 && !o.prefetchAfter;
    // Before resume the guest's CPUs are idle: this thread and the page server's place
    // alternate runs of the list, side by side (each unit is one pread and one ioctl).
    const mine = prefetchBefore ? prefetch.filter((_, i) => i % 2 === 0) : [];
    const theirs = prefetchBefore ? prefetch.filter((_, i) => i % 2 === 1) : prefetch;
    reader = mode === 'missing' ? readerFor(snap.fd, unit) : undefined;
    const target: Omit<PlaceTarget, 'counters'> = {
      uffd,
      mode: mode === 'minor' ? 'continue' : 'copy',
      regionStart,
      fileStart: snap.file.address,
      reader,
      unit,
      zeropage: !BACKING_INFO[shape.source].hugetlb && unit === 4096,
      data: snap.data,
      placed,
    };
    const early = o.restorer?.takePageServer();
    const starting = Promise.all([PageServer.start(uffd, { ...target, fileFd: reader ? snap.fd : undefined, prefetch: theirs, background: o.background, bulkBeforeGo: prefetchBefore }, (e) => (failure ??= e), early), guest.arm()]);
    [server] = await starting;
    const counters = server.counters;
    const threadsMs = at() - t2;
    const t4 = at();
    if (o.eager) placeRange({ ...target, counters }, 0, snap.units, Counter.BY_EAGER);
    const eagerMs = at() - t4;
    // REAP: the recorded set placed before the guest runs, in recorded order, one ioctl a
    // run. Nothing else touches the memory yet, so no EAGAIN can come (no mm change).
    const t5 = at();
    if (prefetchBefore) {
      // Counted apart while both threads place (the shared counters are plain doubles), then added in.
      const own = new Float64Array(Counter.WORDS);
      for (const [first, count] of mine) placeRange({ ...target, counters: own }, first, count, Counter.BY_PREFETCH);
      if (theirs.length > 0) await server.prefetchDone(() => failure);
      for (let k = 0; k < Counter.WORDS; k++) counters[k]! += own[k]!;
      counters[Counter.PREFETCH_DONE_AT] = performance.timeOrigin + performance.now();
    }
    const prefetchMs = at() - t5;

    // The guest's writes go into a MINOR restore's file from here on: the snapshot is used up
    // now, not before (a restore that failed before this leaves it as saved).
    if (mode === 'minor') markConsumed(snap);
    guest.go();
    server.go();
    const resumedAtEpoch = performance.timeOrigin + performance.now();
    const resumeMs = at();
    o.onEvent?.({ phase: 'resumed', resumeMs });
    // A unit is safe to read once placed; a MINOR hole is the kernel's own (zeros, no fault to us).
    const readable = mode === 'minor' ? (u: number) => placed.has(u) || !snap.data.has(u) : (u: number) => placed.has(u);
    const endEpoch = await waitForPass(guest, restored, readable, o.timeoutMs, () => failure);
    const workloadEndMs = endEpoch - performance.timeOrigin - t0;
    o.onEvent?.({ phase: 'finished', workloadMs: endEpoch - resumedAtEpoch });
    await sleep(o.runAfterMs);
    await guest.pause();
    if (failure) throw failure;

    const c = Float64Array.from(counters);
    const faulted = server.recorded();
    // Everything not placed yet, so the oracle reads every page without a fault.
    placeRange({ ...target, counters }, 0, snap.units, Counter.BY_FILL);
    const afterPause = counters[Counter.BY_FILL]!;
    const { cpuNs } = await server.stop();
    const finalStates = guest.states();
    const oracle = checkGuest(guest, finalStates);
    const since = (epoch: number) => (epoch > 0 ? epoch - resumedAtEpoch : NaN);
    return {
      dir: o.dir,
      backend,
      mode,
      memory: mode === 'minor' ? `the snapshot file (${snap.fs}) mapped shared (consumed)` : `${source} (${BACKING_INFO[source!].description})`,
      fs: snap.fs,
      size,
      unit,
      units: snap.units,
      dataUnits: m.memory.dataUnits,
      vcpus: m.guest.shape.vcpus,
      workload: describeWorkload(guest.plan.workload),
      verified: o.verify,
      eager: o.eager,
      background: o.background,
      prefetchUnits: prefetch.reduce((n, r) => n + r[1], 0),
      prefetchRuns: prefetch.length,
      timings: {
        openMs,
        verifyMs,
        buildMs,
        threadsMs,
        eagerMs,
        prefetchMs,
        resumeMs,
        workloadEndMs,
        workloadMs: endEpoch - resumedAtEpoch,
        prefetchDoneMs: prefetch.length > 0 ? since(c[Counter.PREFETCH_DONE_AT]!) : NaN,
        backgroundDoneMs: o.background ? since(c[Counter.BACKGROUND_DONE_AT]!) : NaN,
      },
      faults: { total: c[Counter.FAULTS]!, missing: c[Counter.MISSING]!, minor: c[Counter.MINOR]!, meanServiceUs: c[Counter.FAULTS]! > 0 ? c[Counter.SERVICE_NS]! / c[Counter.FAULTS]! / 1000 : 0 },
      placed: { byFault: c[Counter.BY_FAULT]!, byPrefetch: c[Counter.BY_PREFETCH]!, byBackground: c[Counter.BY_BACKGROUND]!, eager: c[Counter.BY_EAGER]!, afterPause },
      copiedUnits: c[Counter.COPIED]!,
      continuedUnits: c[Counter.CONTINUED]!,
      zeroUnits: c[Counter.ZEROED]!,
      bytesRead: c[Counter.COPIED]! * unit,
      ioctls: c[Counter.IOCTLS]!,
      exists: c[Counter.EXISTS]!,
      pageServerCpuMs: cpuNs / 1e6,
      faulted,
      states: finalStates,
      oracle,
    };
  } finally {
    if (guest?.running) await guest.pause().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    if (guest && !guest.running) guest.close();
    uffd?.close();
    reader?.close();
    snap.close();
  }
}
