/**
 * A writer thread for the dirty-tracking tests: writes random 4 KiB pages of its slice
 * [from, to) of the range at `address` until told to stop, through native.view as a vCPU
 * stand-in does. Before each write it reads how many collections the main thread has
 * completed, and after the write records that number as the page's last write: a write
 * that saw k completed collections must be reported by collection k+1 or later.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../../src/native/binding.js';
import { COMPLETED, GO, STOP, type PageWriterConfig } from './tracking.js';

const c = workerData as PageWriterConfig;
const view = new DataView(native.view(c.address, c.bytes));
const control = new Int32Array(c.control);
const lastWrite = new Int32Array(c.lastWrite);
const span = c.to - c.from;
let rng = c.seed >>> 0 || 1;
let writes = 0;
parentPort!.postMessage({ ready: true });
Atomics.wait(control, GO, 0);
while (Atomics.load(control, STOP) === 0) {
  for (let i = 0; i < 64; i++) {
    rng ^= rng << 13; rng >>>= 0; rng ^= rng >>> 17; rng ^= rng << 5; rng >>>= 0;
    const page = c.from + (rng % span);
    const seen = Atomics.load(control, COMPLETED);
    view.setUint32(page * 4096 + ((rng >>> 20) & 1023) * 4, rng, true);
    Atomics.store(lastWrite, page, seen);
    writes++;
  }
}
parentPort!.postMessage({ writes });
