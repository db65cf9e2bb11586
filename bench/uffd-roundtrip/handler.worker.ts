/**
 * The TypeScript fault handler: the same loop as handler() in roundtrip.c, through the
 * library's public Userfaultfd API (read, faultAddress, copy), pinned to one CPU. The worker
 * exits when the loop ends: no message listener keeps it alive.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { hva } from '../../src/address.js';
import { native } from '../../src/native/binding.js';
import { isSystemError } from '../../src/native/errors.js';
import { Userfaultfd } from '../../src/uffd/userfaultfd.js';
import { PAGE, POLLIN, type HandlerData, type HandlerDone, type HandlerReady } from './protocol.js';

const d = workerData as HandlerData;
native.setAffinity(0, [d.cpu]);
const uffd = Userfaultfd.borrow(d.uffd, d.features, d.ioctls, d.wait === 'poll');
const source = hva(d.source);
const fds = new Int32Array([d.uffd, POLLIN, 0, d.stopFd, POLLIN, 0]);
let faults = 0;
let eexist = 0;

/** Resolves the pagefaults of the last read(); true when the sentinel page was among them. */
function resolve(n: number): boolean {
  let stop = false;
  for (let i = 0; i < n; i++) {
    const address = uffd.faultAddress(i); // allocation-free decode
    if (address < 0) continue;
    const page = address - (address % PAGE);
    try {
      // No retry on EAGAIN: nothing remaps this region during the run, as in the C loop.
      if (!uffd.copy(hva(page), source, PAGE).complete) throw new Error(`UFFDIO_COPY at ${page}: EAGAIN`);
    } catch (e) {
      if (!isSystemError(e, 'EEXIST')) throw e;
      eexist++;
    }
    if (page === d.sentinel) stop = true;
    else faults++;
  }
  return stop;
}

// In a function rather than in the module body, which runs once and is optimized only by
// on-stack replacement, if at all: as a pager's loop would be written.
function loop(): void {
  for (;;) {
    if (d.wait === 'poll') {
      // poll, then read if the uffd is readable: one call into the addon for both.
      const n = uffd.pollRead(fds);
      if (fds[5] !== 0) return;
      if (resolve(n)) return;
      continue;
    }
    if (resolve(uffd.read())) return;
  }
}

parentPort!.postMessage({ ready: true } satisfies HandlerReady);
loop();
parentPort!.postMessage({ faults, eexist } satisfies HandlerDone);
