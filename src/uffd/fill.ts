/**
 * Filling a range to the end. COPY, ZEROPAGE, CONTINUE, POISON and MOVE stop with EAGAIN
 * (a FillResult with complete false) while the mm is changing under them: a fork, mremap,
 * munmap or MADV_DONTNEED/REMOVE of registered memory whose event (FORK, REMAP, UNMAP,
 * REMOVE) the kernel has queued and not yet seen read. Every fill fails so until a reader
 * reads that event. So:
 * - a thread that is NOT the one reading the userfaultfd's events (a migration's main
 *   thread, while a fault reader runs) can retry: fillAll does, from where the kernel
 *   stopped, waiting a little longer each time;
 * - the thread that reads the events must not retry in place (it would spin for ever:
 *   nobody reads the event). It defers the fault, reads its messages, and retries after
 *   them, as Firecracker's handler and Pager do (EAGAIN defers, EEXIST is done).
 */
import type { FillResult } from './userfaultfd.js';

/** One fill ioctl over [dst, dst+length), with `src` the source where it has one (COPY, MOVE). */
export type FillOp = (dst: number, src: number, length: number) => FillResult;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Runs `op` over [dst, dst+length) until all of it is done, continuing where each EAGAIN
 * stopped (src advancing with dst), and returns how many times it had to retry. Between
 * retries it calls `onAgain(retry)` if given (e.g. to read events on this thread), else
 * sleeps: 0, then 50 µs doubling up to 10 ms, so the thread holding the event can run.
 * Only for a thread that does not read this userfaultfd's events itself (see above).
 * Errors (EEXIST included) are thrown as they come.
 */
export function fillAll(op: FillOp, dst: number, src: number, length: number, onAgain?: (retry: number) => void): number {
  let retries = 0;
  for (let done = 0; done < length; ) {
    const r = op(dst + done, src + done, length - done);
    done += r.bytes;
    if (r.complete || done >= length) break;
    retries++;
    if (onAgain) onAgain(retries);
    else if (retries > 1) Atomics.wait(sleeper, 0, 0, Math.min(10, 0.05 * 2 ** Math.min(retries - 2, 8)));
  }
  return retries;
}
