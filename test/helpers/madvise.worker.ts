/**
 * madvise(2) from a thread of its own: with a userfaultfd registered over the range and
 * UFFD_EVENT_REMOVE, MADV_DONTNEED waits in the kernel until the REMOVE event is read, so
 * the test's main thread goes on meanwhile (as another vCPU, or the balloon, would).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../../src/native/binding.js';

const c = workerData as { address: number; length: number; advice: number };
native.madvise(c.address, c.length, c.advice);
parentPort!.postMessage({ done: true });
