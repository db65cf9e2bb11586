/**
 * When a restored guest's workload is done: every worker has written one whole pass of its
 * slice since it resumed (it then has touched its whole working set once: every page for
 * the migrate program's sweep). Seen from the host, whichever backend runs, by the counter
 * of the page that pass writes last (SlicePlan.endOfPass; counters only grow, and a fast
 * pass may be past it already). Only a unit that is `readable` (placed, or a hole the kernel
 * fills itself) is read, so the watcher never faults a page in through the page server.
 */
import type { MigratableGuest, WorkerState } from '../../guest/guest.js';
import { GUEST_PAGE } from '../../guest/guest.js';
import { PostcopyError } from '../../errors.js';

export class WorkloadTimeoutError extends PostcopyError {
  override name = 'WorkloadTimeoutError';
  constructor(ms: number, left: number) {
    super('ERR_WORKLOAD_TIMEOUT', `the restored guest's workload did not finish within ${ms} ms (${left} worker(s) short of a whole pass)`, 'Give it longer with --timeout, or look for a guest thread that failed');
  }
}

interface Watch {
  readonly word: number;
  readonly unit: number;
  readonly expected: bigint;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Resolves with the epoch ms at which every worker had finished its pass. `failed()` is polled: a guest or page server that broke. */
export async function waitForPass(guest: MigratableGuest, states: readonly WorkerState[], readable: (unit: number) => boolean, timeoutMs: number, failed: () => Error | undefined): Promise<number> {
  const view = guest.backing.primary.bytes();
  const words = new BigUint64Array(view.buffer, view.byteOffset, view.byteLength / 8);
  const watches: Watch[] = states.map((s, i) => {
    const slice = guest.slice(i);
    const end = guest.plan.endOfPass(s);
    const offset = slice.guestAddress - guest.shape.guestAddress + end.page * GUEST_PAGE;
    return { word: offset / 8, unit: Math.floor(offset / guest.unit), expected: end.value };
  });
  const start = performance.now();
  let left = watches;
  for (let spins = 0; ; spins++) {
    left = left.filter((w) => !(readable(w.unit) && words[w.word]! >= w.expected));
    if (left.length === 0) return performance.timeOrigin + performance.now();
    const e = failed();
    if (e) throw e;
    if (performance.now() - start > timeoutMs) throw new WorkloadTimeoutError(timeoutMs, left.length);
    // A short sleep keeps the figure within ~0.1 ms without taking a CPU from the guest;
    // now and then the event loop runs (a guest thread's failure arrives as a message).
    if (spins % 64 === 63) await new Promise((r) => setImmediate(r));
    else Atomics.wait(sleeper, 0, 0, 0.1);
  }
}
