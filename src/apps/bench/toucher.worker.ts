/**
 * The stand-in for a vCPU where there is no KVM (--vcpu-threads): a thread that does what
 * the guest program does, on the host mapping: for each 4 KiB page of its slice, check the
 * pattern, then write it back. Each touch of an unresolved page sleeps in userfaultfd.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../../native/binding.js';
import { holdsPattern } from './pattern.js';
import type { VcpuResult } from './result.js';

export interface ToucherConfig {
  index: number;
  /** Host address and guest-physical address of this slice. */
  host: number;
  gpa: number;
  bytes: number;
  stride: number;
  seed: number;
  verify: boolean;
  writePercent: number;
  randomAccess: boolean;
  cpus: number[];
  /** Set to 1 by the parent to start every toucher at once. */
  go: SharedArrayBuffer;
  /** Float64Array slot `progressSlot`: pages done so far, for a sampler (undefined: not published). */
  progress?: SharedArrayBuffer;
  progressSlot?: number;
}

const c = workerData as ToucherConfig;
if (c.cpus.length) native.setAffinity(0, c.cpus);
const view = new DataView(native.view(c.host, c.bytes));
const pages = c.bytes / c.stride;
const go = new Int32Array(c.go);
const progress = c.progress ? new Float64Array(c.progress) : undefined;
const progressSlot = c.progressSlot ?? 0;
parentPort!.postMessage({ ready: true });
Atomics.wait(go, 0, 0);

const s = c.seed >>> 0;
let rng = (c.seed ^ (c.index * 0x9e3779b9)) >>> 0 || 1;
let mismatches = 0;
let firstMismatch = 0;
const t0 = process.hrtime.bigint();
for (let i = 0; i < pages; i++) {
  let page = i;
  if (c.randomAccess) {
    rng ^= rng << 13; rng >>>= 0; rng ^= rng >>> 17; rng ^= rng << 5; rng >>>= 0;
    page = rng % pages;
  }
  const off = page * c.stride;
  const gpa = c.gpa + off;
  if (c.verify && !holdsPattern(view, off, gpa, c.seed)) {
    if (mismatches++ === 0) firstMismatch = gpa;
  }
  let write = c.writePercent >= 100;
  if (!write && c.writePercent > 0) {
    rng ^= rng << 13; rng >>>= 0; rng ^= rng >>> 17; rng ^= rng << 5; rng >>>= 0;
    write = rng % 100 < c.writePercent;
  }
  if (write) {
    view.setUint32(off, ((gpa % 0x1_0000_0000) ^ s) >>> 0, true);
    view.setUint32(off + 4, (Math.floor(gpa / 0x1_0000_0000) ^ s) >>> 0, true);
  } else {
    view.getUint8(off);
  }
  if (progress) progress[progressSlot] = i + 1;
}
const ns = Number(process.hrtime.bigint() - t0);
const result: VcpuResult = { index: c.index, ns, accesses: pages, mismatches, firstMismatch, cpuNs: native.threadCpuNs(), threadId: native.gettid() };
parentPort!.postMessage({ result });
