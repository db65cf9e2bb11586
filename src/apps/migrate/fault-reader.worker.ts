/**
 * The destination's fault reader during post-copy: waits in epoll on the userfaultfd (and
 * a stop eventfd). A fault on a page that is already PRESENT is resolved here at once
 * (MINOR: UFFDIO_CONTINUE, which maps a clean page the background mapping has not reached
 * yet; MISSING: the page was just placed, wake the vCPU). A fault on a STALE page goes to
 * the main thread, which asks the source for it; the main thread's UFFDIO_CONTINUE or
 * UFFDIO_COPY of the arriving page wakes the vCPU.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { hva } from '../../address.js';
import { native } from '../../native/binding.js';
import { STOP, stoppableEpoll } from '../../uffd/stoppable-epoll.js';
import { isSystemError } from '../../native/errors.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { PageStates } from './page-state.js';
import type { FaultMessage, FaultReaderConfig, FaultReaderStats } from './fault-reader.js';

const c = workerData as FaultReaderConfig;
const uffd = Userfaultfd.borrow(c.fd, c.features, c.ioctls, true);
const states = new PageStates(c.states);
const epfd = stoppableEpoll(c.fd, c.stopFd);
const ready = new Uint32Array(4);
let faults = 0, local = 0, forwarded = 0, exists = 0;

function resolveLocally(page: number): void {
  const at = hva(c.regionStart + page * c.pageSize);
  if (c.mode === 'minor') {
    try {
      for (let done = 0; done < c.pageSize; ) done += uffd.continue(hva(at + done), c.pageSize - done).bytes;
    } catch (e) {
      if (!isSystemError(e, 'EEXIST')) throw e;
      exists++;
      uffd.wake(at, c.pageSize);
    }
  } else {
    uffd.wake(at, c.pageSize);
  }
}

function serve(): void {
  for (;;) {
    const n = native.epollWait(epfd, ready, -1);
    for (let i = 0; i < n; i++) if (ready[i * 2 + 1] === STOP) return;
    const messages = uffd.read();
    for (let i = 0; i < messages; i++) {
      const address = uffd.faultAddress(i);
      if (address < 0) continue;
      faults++;
      const page = Math.floor((address - c.regionStart) / c.pageSize);
      if (states.present(page)) {
        local++;
        resolveLocally(page);
      } else {
        forwarded++;
        const m: FaultMessage = { page, tid: uffd.faultThreadId(i), at: performance.timeOrigin + performance.now() };
        parentPort!.postMessage(m);
      }
    }
  }
}

parentPort!.postMessage({ ready: true });
serve();
native.close(epfd);
const stats: FaultReaderStats = { faults, local, forwarded, exists, cpuNs: native.threadCpuNs() };
parentPort!.postMessage({ stats });
