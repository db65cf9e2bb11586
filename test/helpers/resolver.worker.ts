/**
 * A fault-resolving loop for tests: waits on the userfaultfd and a stop eventfd, reads
 * events, resolves page faults the way it was told, and reports the other events to the
 * parent as they arrive. Runs in a worker thread so the test's main thread can be the
 * one that touches memory (and sleeps in the fault).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { hva } from '../../src/address.js';
import { native } from '../../src/native/binding.js';
import { isSystemError } from '../../src/native/errors.js';
import { Userfaultfd } from '../../src/uffd/userfaultfd.js';
import type { ResolverOptions, ResolverReport } from './resolver.js';

const o = workerData as ResolverOptions & { fd: number; features: bigint; ioctls: bigint; stopFd: number };
const uffd = Userfaultfd.borrow(o.fd, o.features, o.ioctls, false);
const POLLIN = 1;
const fds = new Int32Array([o.fd, POLLIN, 0, o.stopFd, POLLIN, 0]);
const report: ResolverReport = { faults: 0, minor: 0, missing: 0, wp: 0, writes: 0, exists: 0, retries: 0, pages: [], threadIds: [] };

function resolve(address: number, kind: 'missing' | 'minor' | 'wp'): void {
  const page = address - (address % o.pageSize);
  const dst = hva(page);
  if (kind === 'wp') {
    uffd.writeProtect(dst, o.pageSize, false);
    return;
  }
  for (;;) {
    let done;
    switch (o.resolve) {
      case 'copy':
        done = uffd.copy(dst, hva(o.source! + (page - o.start)), o.pageSize, { dontWake: o.wakeSeparately, writeProtect: o.copyWriteProtected });
        break;
      case 'zeropage':
        done = uffd.zeropage(dst, o.pageSize, { dontWake: o.wakeSeparately });
        break;
      case 'continue':
        done = uffd.continue(dst, o.pageSize, { dontWake: o.wakeSeparately });
        break;
      case 'move':
        done = uffd.move(dst, hva(o.source! + (page - o.start)), o.pageSize, { dontWake: o.wakeSeparately });
        break;
    }
    if (done.complete) break;
    report.retries++; // EAGAIN: the mm changed under the ioctl; try again
  }
  if (o.wakeSeparately) uffd.wake(dst, o.pageSize);
}

parentPort!.postMessage({ ready: true });
loop: for (;;) {
  native.poll(fds, -1);
  if (fds[5]! & POLLIN) break loop;
  if (!(fds[2]! & POLLIN)) continue;
  const n = uffd.read();
  for (let i = 0; i < n; i++) {
    const ev = uffd.event(i);
    if (ev.type !== 'pagefault') {
      parentPort!.postMessage({ event: ev });
      continue;
    }
    report.faults++;
    report[ev.kind]++;
    if (ev.write) report.writes++;
    if (report.pages.length < 1 << 16) report.pages.push(ev.address);
    if (ev.threadId && !report.threadIds.includes(ev.threadId)) report.threadIds.push(ev.threadId);
    try {
      resolve(ev.address, ev.kind);
    } catch (e) {
      // Another resolution of the same page already happened: the kernel test treats this as done.
      if (!isSystemError(e, 'EEXIST')) throw e;
      report.exists++;
      uffd.wake(hva(ev.address - (ev.address % o.pageSize)), o.pageSize);
    }
  }
}
parentPort!.postMessage({ report });
