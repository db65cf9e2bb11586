/**
 * One worker of the threads guest: the migrate program's loop in TypeScript, over this
 * worker's slice of the guest's primary mapping. On pass p it checks that each 4 KiB
 * page the workload names (every page, or a working set: ../workload.ts) holds p - 1 in
 * its counter (its first 8 bytes) and writes p; between two accesses it
 * looks at the pause word; after every access it reads the clock and keeps the longest
 * gap. A touch of a page that is not present blocks this thread in the kernel until a
 * userfaultfd reader resolves it: that is the guest-visible stall post-copy causes.
 *
 * Parked between runs (Atomics.wait on the gate), so a pause and a resume cost no spawn.
 * Nothing is allocated in the loop.
 */
import { parentPort } from 'node:worker_threads';
import { prestartData, workerConfig } from '../../util/prestarted-worker.js';
import { native } from '../../native/binding.js';
import { Control, type ReservedRange, Slot, type WorkerConfig, type WorkerMessage } from './layout.js';

// A thread started before its guest was known may be given an address range reserved for
// the guest's memory: it makes its view of it now, because V8 answers a new multi-GiB
// external buffer with a full collection (11–16 ms a worker here at 2 GiB), which would
// otherwise fall between the snapshot's open and the guest running.
const early = prestartData<ReservedRange>();
const reserved = early ? native.view(early.address, early.bytes) : undefined;
// Given at spawn, or by message to a thread started before the work was known.
const c = await workerConfig<WorkerConfig>();
const control = new Int32Array(c.control);
const clockOffset = new Float64Array(c.clock);
const slot = new BigInt64Array(c.slots, c.index * Slot.WORDS * 8, Slot.WORDS);
const inReserved = early !== undefined && c.host >= early.address && c.host + c.bytes <= early.address + early.bytes;
const memory = inReserved ? new Uint32Array(reserved!, c.host - early.address, c.bytes / 4) : new Uint32Array(native.view(c.host, c.bytes));
const pages = c.bytes / 4096;
const WORDS_PER_PAGE = 1024;
const origin = performance.timeOrigin;
const post = (m: WorkerMessage) => parentPort!.postMessage(m);

post({ type: 'ready', tid: native.gettid() });
let gate = 0;

for (;;) {
  // Parked until the gate moves on.
  Atomics.wait(control, Control.GATE, gate);
  gate = Atomics.load(control, Control.GATE);
  run();
  post({ type: 'paused' });
}

function run(): void {
  let pass = Number(slot[Slot.PASS]);
  let index = Number(slot[Slot.INDEX]);
  let mismatches = Number(slot[Slot.MISMATCHES]);
  let firstMismatch = Number(slot[Slot.FIRST_MISMATCH]);
  // The clock in ms (a double: exact to well under a microsecond); the slot holds ns.
  const offset = clockOffset[0]!;
  let last = Number(slot[Slot.LAST_TICK]) / 1e6;
  let maxGap = Number(slot[Slot.MAX_GAP]) / 1e6;
  let maxGapEnd = Number(slot[Slot.MAX_GAP_END]) / 1e6;
  // The workload (src/guest/workload.ts): a sweep writes page `index`; a working set's
  // passes after the first write page (index × step) mod pages, kept as a running sum.
  let scattered = !c.sweep && pass > 1;
  let length = scattered ? c.setPages : pages;
  let page = scattered ? Number((BigInt(index) * BigInt(c.step)) % BigInt(pages)) : index;
  while (Atomics.load(control, Control.PAUSE) === 0) {
    const w = page * WORDS_PER_PAGE;
    if (memory[w] !== pass - 1 || memory[w + 1] !== 0) {
      if (mismatches++ === 0) firstMismatch = c.guestAddress + page * 4096;
      memory[w + 1] = 0;
    }
    memory[w] = pass;
    const now = origin + performance.now() - offset;
    const gap = now - last;
    last = now;
    if (gap > maxGap) {
      maxGap = gap;
      maxGapEnd = now;
    }
    if (++index === length) {
      index = 0;
      pass++;
      page = 0;
      scattered = !c.sweep && pass > 1;
      length = scattered ? c.setPages : pages;
    } else if (scattered) {
      page += c.step;
      if (page >= pages) page -= pages;
    } else page = index;
  }
  slot[Slot.PASS] = BigInt(pass);
  slot[Slot.INDEX] = BigInt(index);
  slot[Slot.MISMATCHES] = BigInt(mismatches);
  slot[Slot.FIRST_MISMATCH] = BigInt(firstMismatch);
  slot[Slot.LAST_TICK] = BigInt(Math.round(last * 1e6));
  slot[Slot.MAX_GAP] = BigInt(Math.round(maxGap * 1e6));
  slot[Slot.MAX_GAP_END] = BigInt(Math.round(maxGapEnd * 1e6));
}
