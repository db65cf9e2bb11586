/**
 * The restore's page server: one thread waiting in epoll on the userfaultfd (and a stop
 * eventfd). Faults come first: each faulting unit is placed from the snapshot (placement.ts)
 * and recorded, in the order of first faults, for --record. Between faults it works
 * through the prefetch list (runs in recorded order, one ioctl per run) and then, with
 * --background, every unit not placed yet, a chunk at a time, looking for faults between
 * two pieces of work so a waiting guest thread never queues behind bulk work.
 */
import { parentPort } from 'node:worker_threads';
import { hva } from '../../address.js';
import { workerConfig } from '../../util/prestarted-worker.js';
import { native } from '../../native/binding.js';
import { STOP, stoppableEpoll } from '../../uffd/stoppable-epoll.js';
import { pagefaultKind } from '../../uffd/events.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { Counter, type PlaceTarget, placeRange, readerFor } from './placement.js';
import type { PageServerConfig } from './page-server.js';
import { UnitMap } from './unit-map.js';

// Given at spawn, or by message to a thread started before the work was known.
const c = await workerConfig<PageServerConfig>();
const uffd = Userfaultfd.borrow(c.fd, c.features, c.ioctls, true);
const counters = new Float64Array(c.counters);
const target: PlaceTarget = {
  uffd,
  mode: c.mode,
  regionStart: c.regionStart,
  fileStart: c.fileStart,
  reader: c.mode === 'copy' && c.fileFd >= 0 ? readerFor(c.fileFd, c.unit) : undefined,
  unit: c.unit,
  zeropage: c.zeropage,
  data: new UnitMap(c.units, new Uint8Array(c.data)),
  placed: new UnitMap(c.units, new Uint8Array(c.placed)),
  counters,
};
const record = new Int32Array(c.record);
const faulted = new UnitMap(c.units);
const prefetch = new Int32Array(c.prefetch);
const epfd = stoppableEpoll(c.fd, c.stopFd);
const ready = new Uint32Array(4);
/** Background chunk: 2 MiB of 4 KiB units, or one huge page. */
const CHUNK = Math.max(1, Math.floor((2 << 20) / c.unit));

let nextRun = 0;
let backgroundAt = 0;
const deferred: number[] = [];
const now = () => performance.timeOrigin + performance.now();

function bulkPending(): boolean {
  if (counters[Counter.GO] === 0 && !(c.bulkBeforeGo && nextRun < prefetch.length / 2)) return false;
  return nextRun < prefetch.length / 2 || (c.background && backgroundAt < c.units);
}

/** One piece of bulk work: the next prefetch run, else the next background chunk. */
function bulkStep(): void {
  if (nextRun < prefetch.length / 2) {
    const first = prefetch[nextRun * 2]!;
    const count = prefetch[nextRun * 2 + 1]!;
    if (!placeRange(target, first, count, Counter.BY_PREFETCH)) return; // EAGAIN: this run again after the events are read
    if (++nextRun === prefetch.length / 2) counters[Counter.PREFETCH_DONE_AT] = now();
    return;
  }
  const count = Math.min(CHUNK, c.units - backgroundAt);
  if (!placeRange(target, backgroundAt, count, Counter.BY_BACKGROUND)) return;
  backgroundAt += count;
  if (backgroundAt === c.units) counters[Counter.BACKGROUND_DONE_AT] = now();
}

function onFault(address: number, flags: number): void {
  const t0 = performance.now();
  const u = Math.floor((address - c.regionStart) / c.unit);
  counters[Counter.FAULTS]!++;
  if (pagefaultKind(flags) === 'minor') counters[Counter.MINOR]!++;
  else counters[Counter.MISSING]!++;
  if (!faulted.has(u)) {
    faulted.set(u);
    const n = record[0]!;
    if (n < record.length - 1) {
      record[n + 1] = u;
      Atomics.store(record, 0, n + 1);
    }
  }
  if (target.placed.has(u)) uffd.wake(hva(c.regionStart + u * c.unit), c.unit);
  else if (!placeRange(target, u, 1, Counter.BY_FAULT)) {
    counters[Counter.DEFERRED]!++;
    deferred.push(u);
  }
  counters[Counter.SERVICE_NS]! += (performance.now() - t0) * 1e6;
}

function serve(): void {
  for (;;) {
    // Sleep only when nothing waits: bulk work or deferred faults poll instead; before the
    // guest runs, wake now and then to see whether it does.
    const busy = bulkPending() || deferred.length > 0;
    const n = native.epollWait(epfd, ready, busy ? 0 : counters[Counter.GO] === 0 && (prefetch.length > 0 || c.background) ? 1 : -1);
    for (let i = 0; i < n; i++) if (ready[i * 2 + 1] === STOP) return;
    const messages = uffd.read();
    for (let i = 0; i < messages; i++) {
      const address = uffd.faultAddress(i);
      if (address >= 0) onFault(address, uffd.faultFlags(i));
    }
    if (deferred.length > 0) {
      const again = deferred.splice(0);
      for (const u of again) if (!placeRange(target, u, 1, Counter.BY_FAULT)) deferred.push(u);
    }
    if (messages === 0 && bulkPending()) bulkStep();
  }
}

parentPort!.postMessage({ ready: true });
serve();
native.close(epfd);
target.reader?.close();
parentPort!.postMessage({ stopped: true, cpuNs: native.threadCpuNs() });
