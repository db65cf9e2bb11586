/**
 * `postcopy serve --record` and `--prefetch`, the CLI as a child process against the
 * Firecracker-faithful client (helpers/firecracker-client.ts): one run records the units a
 * single-threaded toucher faults on, in its order, in terms of the memory file; a second
 * run, from other host addresses, prefetches them as the userfaultfd arrives, so touching
 * them costs the server no fault, and every byte is still the file's. A record of another
 * layout is refused before the server listens; a peer whose pages are not the record's
 * unit is refused with a log line. And a REMOVE pending when the userfaultfd arrives makes
 * the first prefetch copy fail with EAGAIN: deferred, and the removed range then skipped.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import type { ServerStats } from '../src/apps/serve/server.js';
import { mergeWorkingSet, readWorkingSet, type RecordLayout, writeWorkingSet } from '../src/apps/snapshot/working-set.js';
import { Madvise } from '../src/memory/constants.js';
import { native } from '../src/native/binding.js';
import { Client, numberedPagesFile, PAGE } from './helpers/firecracker-client.js';
import { type Child, postcopy } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'postcopy-test-serve-record-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 2 ** 20;
const FILE_BYTES = 8 * MiB;
// Page p of the file holds p + 1 in its first word (so 0 means "a zero page").
const memoryFile = numberedPagesFile(dir, FILE_BYTES);
const layout: RecordLayout = { memory: { size: FILE_BYTES, unit: PAGE }, checksum: 'test' };

// The guest: region 0 is 2 MiB at file offset 4 MiB, region 1 is 1 MiB at offset 0.
const SIZES = [2 * MiB, MiB];
const OFFSETS = [4 * MiB, 0];
const fileUnit = ([r, p]: readonly [number, number]) => OFFSETS[r]! / PAGE + p;

/**
 * The working set: 12 runs of 8 pages, at 16-page steps (so no two runs touch), picked
 * from both regions in a scrambled order; the pages of each run ascending.
 */
const CHUNK = 8;
const chunks: [number, number][] = [];
for (let r = 0; r < SIZES.length; r++) for (let p = 0; p < SIZES[r]! / PAGE; p += 2 * CHUNK) chunks.push([r, p]);
let seed = 0x5eed;
const picked: [number, number][] = [];
while (picked.length < 12) {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  const [c] = chunks.splice(seed % chunks.length, 1);
  picked.push(c!);
}
const order: [number, number][] = picked.flatMap(([r, p]) => Array.from({ length: CHUNK }, (_, i): [number, number] => [r, p + i]));

let sockets = 0;
/** Servers still running: killed at the end, so that a failed test does not leave one holding the run open. */
const running = new Set<Child>();
after(() => {
  for (const child of running) child.process.kill('SIGKILL');
});

async function serve(args: string[]): Promise<{ child: Child; socket: string }> {
  const socket = join(dir, `uffd-${++sockets}.sock`);
  const child = postcopy(['serve', '--socket', socket, '--file', memoryFile, '--json', ...args]);
  running.add(child);
  child.process.once('exit', () => running.delete(child));
  await child.waitFor(/"type":"listening"/);
  return { child, socket };
}

/** SIGTERM, and the counters it prints on the way out. */
async function stop(child: Child): Promise<ServerStats> {
  child.process.kill('SIGTERM');
  running.delete(child);
  assert.equal(await child.exited(), 0, child.stderr());
  return JSON.parse(child.stdout()) as ServerStats;
}

describe('postcopy serve --record / --prefetch', () => {
  const record = join(dir, 'working-set.json');

  test('--record: the units first faulted, in the toucher\'s order, as offsets in the memory file', async () => {
    const { child, socket } = await serve(['--record', record]);
    const c = new Client(SIZES, OFFSETS);
    try {
      await c.send(socket);
      const words = await c.touchInOrder(order);
      assert.deepEqual(Array.from(words), order.map((t) => fileUnit(t) + 1));
    } finally {
      c.close();
    }
    // The peer went: its run is merged into the file then, while the server serves on.
    await child.waitFor(/record: 96 first-faulted unit\(s\) merged/);
    const ws = readWorkingSet(record, layout);
    assert.deepEqual(ws.units, order.map(fileUnit));
    assert.equal(ws.runs, 1);
    assert.ok(ws.counts.every((n) => n === 1));
    const st = await stop(child);
    assert.equal(st.faults, order.length);
    assert.equal(st.recordedRuns, 1);
    assert.equal(st.recordedUnits, order.length);
    assert.equal(st.prefetched, 0);
  });

  test('--prefetch: the recorded units placed as the userfaultfd arrives, one UFFDIO_COPY per run; touching them faults no more', async () => {
    assert.ok(existsSync(record), 'the record from the test before');
    const { child, socket } = await serve(['--prefetch', record]);
    // Another restore: the same regions at other host addresses.
    const c = new Client(SIZES, OFFSETS);
    let rest: Uint32Array;
    try {
      await c.send(socket);
      await child.waitFor(/prefetch done: 96 unit\(s\) placed in 12 UFFDIO_COPY/);
      const words = await c.touchInOrder(order);
      assert.deepEqual(Array.from(words), order.map((t) => fileUnit(t) + 1));
      // The rest comes on demand: all of region 0, recorded pages or not.
      rest = await c.touch(0);
    } finally {
      c.close();
    }
    assert.deepEqual(Array.from(rest), Array.from({ length: SIZES[0]! / PAGE }, (_, p) => OFFSETS[0]! / PAGE + p + 1));
    const st = await stop(child);
    const recordedInRegion0 = order.filter(([r]) => r === 0).length;
    assert.equal(st.prefetched, order.length);
    assert.equal(st.prefetchIoctls, picked.length, 'one UFFDIO_COPY per recorded run');
    assert.equal(st.faults, SIZES[0]! / PAGE - recordedInRegion0, 'a fault for each page that was not recorded, none for the recorded ones');
    assert.equal(st.copied, order.length + st.faults);
  });

  test('--record FILE merges: a second peer is a second run, its new units appended in its order', async () => {
    const merged = join(dir, 'merged.json');
    const first = order.slice(0, 16);
    const second = [...order.slice(8, 24)].reverse();
    const { child, socket } = await serve(['--record', merged]);
    for (const touches of [first, second]) {
      const c = new Client(SIZES, OFFSETS);
      try {
        await c.send(socket);
        await c.touchInOrder(touches);
      } finally {
        c.close();
      }
      await child.waitFor(new RegExp(`over ${touches === first ? 1 : 2} run\\(s\\)`));
    }
    const st = await stop(child);
    assert.equal(st.recordedRuns, 2);
    const ws = readWorkingSet(merged, layout);
    assert.equal(ws.runs, 2);
    assert.deepEqual(ws.units, [...first, ...order.slice(16, 24).reverse()].map(fileUnit));
    assert.deepEqual(ws.counts, [...Array(8).fill(1), ...Array(8).fill(2), ...Array(8).fill(1)]);
  });

  test('a record of another layout: refused before the server listens', async () => {
    const other = join(dir, 'other-layout.json');
    writeWorkingSet(other, mergeWorkingSet(undefined, { memory: { size: 2 * FILE_BYTES, unit: PAGE }, checksum: 'other' }, [0, 1, 2]));
    const cases: [string[], RegExp][] = [
      [['--prefetch', other], /recorded on 16777216 bytes in 4096-byte units, this snapshot is 8388608 bytes in 4096-byte units/],
      [['--record', other], /recorded on 16777216 bytes/],
      [['--prefetch', record, '--page-size', '2M'], /recorded on 8388608 bytes in 4096-byte units, this snapshot is 8388608 bytes in 2097152-byte units/],
    ];
    for (const [args, pattern] of cases) {
      const socket = join(dir, `refused-${++sockets}.sock`);
      const child = postcopy(['serve', '--socket', socket, '--file', memoryFile, ...args]);
      assert.equal(await child.exited(), 3, child.stderr());
      assert.match(child.stderr(), pattern);
      assert.ok(!existsSync(socket), 'nothing listened');
    }
  });

  test('a peer whose pages are not the record\'s unit: refused with a log line', async () => {
    const { child, socket } = await serve(['--record', join(dir, 'huge.json'), '--page-size', '2M']);
    const c = new Client([MiB], [0]);
    try {
      await c.send(socket);
      await child.waitFor(/"level":"refused".*4096 bytes and the working set .* is in 2097152-byte units: serve with --page-size 4096/);
    } finally {
      c.close();
    }
    const st = await stop(child);
    assert.equal(st.refused, 1);
    assert.equal(st.uffds, 0);
  });

  test('a REMOVE pending as the userfaultfd arrives: the first prefetch copy is deferred (EAGAIN), the removed range never prefetched', async () => {
    // Region 1's 256 pages, all recorded: one run.
    const all = join(dir, 'all.json');
    writeWorkingSet(all, mergeWorkingSet(undefined, layout, Array.from({ length: 256 }, (_, p) => p)));
    const { child, socket } = await serve(['--prefetch', all]);
    const c = new Client([MiB], [0]);
    try {
      const region = c.regions[0]!.mapping;
      // The balloon takes pages 64..127 before the page server has the userfaultfd: the
      // madvise waits in the kernel until someone reads its REMOVE, and until then every
      // UFFDIO_COPY on this userfaultfd fails with EAGAIN.
      const balloon = new Worker(new URL('./helpers/madvise.worker.js', import.meta.url), { workerData: { address: region.address + 64 * PAGE, length: 64 * PAGE, advice: Madvise.DONTNEED } });
      const removed = new Promise<void>((resolve, reject) => balloon.once('message', () => resolve()).once('error', reject));
      const epfd = native.epollCreate();
      try {
        native.epollCtl(epfd, 1 /* EPOLL_CTL_ADD */, c.uffd.fd, 0x1 /* EPOLLIN */, c.uffd.fd);
        let pending = 0;
        for (let i = 0; i < 100 && pending === 0; i++) pending = native.epollWait(epfd, new Uint32Array(2), 100);
        assert.equal(pending, 1, 'the REMOVE event is queued');
      } finally {
        native.close(epfd);
      }
      await c.send(socket);
      await child.waitFor(/prefetch done: 192 unit\(s\) placed/);
      await removed;
      const words = await c.touch(0);
      assert.deepEqual(Array.from(words), Array.from({ length: 256 }, (_, p) => (p >= 64 && p < 128 ? 0 : p + 1)));
    } finally {
      c.close();
    }
    const st = await stop(child);
    assert.ok(st.deferred >= 1, `the first copy was deferred: ${JSON.stringify(st)}`);
    assert.equal(st.removes, 1);
    assert.equal(st.prefetched, 192);
    // 1 deferred attempt, then the two runs around the removed range (more if the retry came before the madvise was done).
    assert.ok(st.prefetchIoctls >= 3, `prefetch ioctls: ${st.prefetchIoctls}`);
    assert.equal(st.faults, 64, 'only the removed pages fault');
    assert.equal(st.zeroed, 64);
  });
});
