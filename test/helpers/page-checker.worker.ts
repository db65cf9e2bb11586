/**
 * A guest-like reader for the page server tests: reads the first word of every 4 KiB page
 * of its range (each read of a page not there is a fault the server must resolve) and
 * reports the words it found, as a vCPU touching memory would.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../../src/native/binding.js';

const c = workerData as { address: number; bytes: number };
const words = new Uint32Array(native.view(c.address, c.bytes));
const out = new Uint32Array(c.bytes / 4096);
for (let p = 0; p < out.length; p++) out[p] = words[p * 1024]!;
parentPort!.postMessage({ words: out });
