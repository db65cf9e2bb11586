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
import { Userfaultfd } from '../uffd/userfaultfd.js';
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
let faults = 0, missing = 0, minor = 0, wp = 0, exists = 0, retries = 0, emptyReads = 0;

function fill(page: number): boolean {
  switch (r.kind) {
    case 'copy':
      return uffd.copy(hva(page), hva(r.source + (page - r.regionStart)), c.pageSize).complete;
    case 'continue':
      return uffd.continue(hva(page), c.pageSize).complete;
    case 'zeropage':
      return uffd.zeropage(hva(page), c.pageSize).complete;
  }
}

function resolve(address: number): void {
  const page = address - (address % pageMask);
  try {
    // Partial (EAGAIN): the mm changed under the ioctl; the rest of the page is still to do.
    while (!fill(page)) retries++;
  } catch (e) {
    // Another reader, or an earlier fault on the same page, already resolved it; the
    // kernel test treats this as done. The faulting thread may still be asleep: wake it.
    if (!isSystemError(e, 'EEXIST')) throw e;
    exists++;
    uffd.wake(hva(page), c.pageSize);
  }
}

const spinMaxMs = c.spinUs / 1000;
const spinMinMs = Math.min(spinMaxMs, 0.02);
const FLAG_WP = 2;
const FLAG_MINOR = 4;

// In a function, not the module body: V8 optimizes a function's loop fully, a module
// body's only by on-stack replacement.
function serve(): void {
  let spinMs = spinMaxMs;
  let gapMs = spinMaxMs / 4; // moving average of the time from one resolution to the next fault
  let lastFault = -Infinity;
  for (;;) {
    let messages = 0;
    if (spinMaxMs > 0 && performance.now() - lastFault < spinMs) {
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
      if (address < 0) continue; // fork/remap/remove/unmap: not requested by the pager
      const t0 = performance.now();
      const flags = uffd.faultFlags(i);
      faults++;
      if (flags & FLAG_MINOR) minor++;
      else if (flags & FLAG_WP) wp++;
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
    }
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
