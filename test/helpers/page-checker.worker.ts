/**
 * A guest-like reader for the page server tests: reads the first word of every 4 KiB page
 * of its range, or of each page in `addresses` in that order (each read of a page not there
 * is a fault the server must resolve), and reports the words it found, as a vCPU touching
 * memory would.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../../src/native/binding.js';

const c = workerData as { address: number; bytes: number } | { addresses: number[] };
let out: Uint32Array;
if ('addresses' in c) {
  out = new Uint32Array(c.addresses.length);
  c.addresses.forEach((a, i) => (out[i] = new Uint32Array(native.view(a, 4))[0]!));
} else {
  const words = new Uint32Array(native.view(c.address, c.bytes));
  out = new Uint32Array(c.bytes / 4096);
  for (let p = 0; p < out.length; p++) out[p] = words[p * 1024]!;
}
parentPort!.postMessage({ words: out });
