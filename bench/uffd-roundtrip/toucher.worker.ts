/**
 * The TypeScript toucher: toucher() of roundtrip.c in a worker pinned to one CPU. One
 * plain byte load per page through a Uint8Array over the region, so each load is one
 * missing fault, timed from before the first load to after the last. A worker rather
 * than the main thread, so the toucher can be pinned without pinning the event loop
 * that coordinates the run.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { hva } from '../../src/address.js';
import { Mapping } from '../../src/memory/mapping.js';
import { native } from '../../src/native/binding.js';
import { PAGE, PATTERN, type ToucherData, type ToucherDone } from './protocol.js';

const d = workerData as ToucherData;
native.setAffinity(0, [d.cpu]);
// A view only: the parent owns (and later unmaps) the region, after this worker has exited.
const bytes = new Mapping(hva(d.region), (d.pages + 1) * PAGE).bytes();
const end = d.pages * PAGE;

// In a function, so that V8 can optimize the loop to a plain load; in the module body it
// stayed in baseline code, a KeyedLoadIC call per page (seen with perf).
function touch(): number {
  let sum = 0;
  for (let off = 0; off < end; off += PAGE) sum += bytes[off]!;
  return sum;
}

const t0 = process.hrtime.bigint();
const sum = touch();
const t1 = process.hrtime.bigint();
// Wakes a handler blocked in read(2): it resolves this fault and sees the sentinel.
if (d.wait === 'read' && bytes[end] !== PATTERN) throw new Error('the sentinel page was not copied');

parentPort!.postMessage({ ns: Number(t1 - t0), sum } satisfies ToucherDone);
