/**
 * A fault reader: one thread waiting in epoll on a userfaultfd (and a stop eventfd),
 * reading fault messages and resolving each as the Resolution says. Runs in a worker
 * thread; see pager.ts for how readers are started and stopped.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { hva } from '../address.js';
import { Histogram } from '../metrics/histogram.js';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';
import { pagefaultKind } from '../uffd/events.js';
import { Userfaultfd, type FillResult } from '../uffd/userfaultfd.js';
import type { ReaderStats, Resolution } from './resolution.js';

export interface ReaderConfig {
  fd: number;
  features: bigint;
  ioctls: bigint;
  stopFd: number;
  resolution: Resolution;
  pageSize: number;
  /** Sleep this long before resolving each fault (demand_paging_test -d). */
  delayUs: number;
  /** Pin this reader to these CPUs (empty: leave it to the scheduler). */
  cpus: number[];
  /** Several readers share this uffd: wake only one per fault (EPOLLEXCLUSIVE). */
  exclusive: boolean;
  /**
   * Adaptive spinning: after a fault, keep polling the userfaultfd (non-blocking reads)
   * before sleeping in epoll, so the next fault is read without a wake-up. The window is
   * four times the recent gap between faults, within [spinMinUs, spinUs]; 0 disables it:
   * always sleep. Only worth it when this reader has a CPU to itself.
   */
  spinUs: number;
  /** Where to publish the running count of resolved faults (Float64Array slot `progressSlot`), for a sampler; undefined: not published. */
  progress?: SharedArrayBuffer;
  progressSlot?: number;
}

const EPOLLIN = 0x1;
const EPOLLEXCLUSIVE = 1 << 28;
const EPOLL_CTL_ADD = 1;
const STOP = 1;
const UFFD = 0;

const c = workerData as ReaderConfig;
if (c.cpus.length > 0) native.setAffinity(0, c.cpus);
const uffd = Userfaultfd.borrow(c.fd, c.features, c.ioctls, true);
const epfd = native.epollCreate();
native.epollCtl(epfd, EPOLL_CTL_ADD, c.fd, EPOLLIN | (c.exclusive ? EPOLLEXCLUSIVE : 0), UFFD);
native.epollCtl(epfd, EPOLL_CTL_ADD, c.stopFd, EPOLLIN, STOP);
const ready = new Uint32Array(2 * 2);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const pageMask = c.pageSize;
const r = c.resolution;
const service = new Histogram();
const progress = c.progress ? new Float64Array(c.progress) : undefined;
const progressSlot = c.progressSlot ?? 0;
let faults = 0, missing = 0, minor = 0, wp = 0, exists = 0, retries = 0, emptyReads = 0;

const fillOp: (at: number, length: number) => FillResult =
  r.kind === 'copy' ? (at, length) => uffd.copy(hva(at), hva(r.source + (at - r.regionStart)), length)
  : r.kind === 'continue' ? (at, length) => uffd.continue(hva(at), length)
  : (at, length) => uffd.zeropage(hva(at), length);

/**
 * Fills `page` from byte `from` on: -1 when the page is resolved (filled, or found already
 * there: EEXIST, which another reader or an earlier fault caused, is done, as in the
 * kernel's test, with a wake for a thread that may still sleep on it), else the bytes done
 * when the kernel stopped with EAGAIN.
 */
function fill(page: number, from: number): number {
  try {
    const done = from + fillOp(page + from, c.pageSize - from).bytes;
    return done >= c.pageSize ? -1 : done;
  } catch (e) {
    if (!isSystemError(e, 'EEXIST')) throw e;
    exists++;
    uffd.wake(hva(page), c.pageSize);
    return -1;
  }
}

// Faults whose fill stopped at EAGAIN, as [page, bytes done] pairs. EAGAIN means the mm is
// changing (a REMOVE, UNMAP, REMAP or FORK event is queued and not yet read): every fill
// fails so until the event is read, and this thread is the one that reads it. Retrying in
// place would spin for ever; the fault waits here until the messages are read
// (Firecracker's handler does the same: EAGAIN defers, EEXIST is done).
const deferred: number[] = [];

function resolve(address: number): void {
  const page = address - (address % pageMask);
  const done = fill(page, 0);
  if (done >= 0) deferred.push(page, done);
}

/** Retries the deferred faults after a read; returns whether any is left. */
function retryDeferred(): boolean {
  let kept = 0;
  for (let i = 0; i < deferred.length; i += 2) {
    retries++;
    const done = fill(deferred[i]!, deferred[i + 1]!);
    if (done >= 0) {
      deferred[kept++] = deferred[i]!;
      deferred[kept++] = done;
    }
  }
  deferred.length = kept;
  return kept > 0;
}

const spinMaxMs = c.spinUs / 1000;
const spinMinMs = Math.min(spinMaxMs, 0.02);

// In a function, not the module body: V8 optimizes a function's loop fully, a module
// body's only by on-stack replacement.
function serve(): void {
  let spinMs = spinMaxMs;
  let gapMs = spinMaxMs / 4; // moving average of the time from one resolution to the next fault
  let lastFault = -Infinity;
  for (;;) {
    let messages = 0;
    if (deferred.length > 0) {
      // Faults wait on an event: read it (and whatever came) without sleeping; a stop is
      // still seen. When nothing was there, give the thread whose event it was (sleeping
      // until it is read, then finishing its madvise/munmap) a moment to leave.
      const n = native.epollWait(epfd, ready, 0);
      for (let i = 0; i < n; i++) if (ready[i * 2 + 1] === STOP) return;
      messages = uffd.read();
      if (messages === 0) Atomics.wait(sleeper, 0, 0, 0.05);
    } else if (spinMaxMs > 0 && performance.now() - lastFault < spinMs) {
      // Polling: look without sleeping. The stop eventfd is seen by the epoll below once
      // the window closes (a stop only comes after the last fault).
      messages = uffd.read();
      if (messages === 0) continue;
    } else {
      const n = native.epollWait(epfd, ready, -1);
      for (let i = 0; i < n; i++) {
        if (ready[i * 2 + 1] === STOP) return;
      }
      messages = uffd.read();
      if (messages === 0) emptyReads++;
    }
    for (let i = 0; i < messages; i++) {
      const address = uffd.faultAddress(i);
      if (address < 0) continue; // fork/remap/remove/unmap: reading it was what mattered
      const t0 = performance.now();
      const kind = pagefaultKind(uffd.faultFlags(i));
      faults++;
      if (kind === 'minor') minor++;
      else if (kind === 'wp') wp++;
      else missing++;
      if (c.delayUs > 0) Atomics.wait(sleeper, 0, 0, c.delayUs / 1000);
      resolve(address);
      const now = performance.now();
      if (spinMaxMs > 0) {
        gapMs += (Math.min(t0 - lastFault, spinMaxMs) - gapMs) / 8;
        spinMs = Math.max(spinMinMs, Math.min(spinMaxMs, 4 * gapMs));
      }
      lastFault = now;
      service.record((now - t0) * 1e6);
      if (progress) progress[progressSlot] = faults;
    }
    if (deferred.length > 0) retryDeferred();
  }
}

parentPort!.postMessage({ ready: true });
serve();
native.close(epfd);
const stats: ReaderStats = {
  uffd: c.fd,
  threadId: native.gettid(),
  faults,
  missing,
  minor,
  wp,
  exists,
  retries,
  emptyReads,
  cpuNs: native.threadCpuNs(),
  service: service.toData(),
};
parentPort!.postMessage({ stats });
