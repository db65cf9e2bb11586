/**
 * `postcopy serve` against a client that does what Firecracker's persist.rs does when it
 * restores with a Uffd memory backend (helpers/firecracker-client.ts): sends its regions
 * and userfaultfd, its "vCPUs" (worker threads) touch the memory and it removes a range with
 * madvise(MADV_DONTNEED), as the balloon does. Every byte is checked. Then the bad inputs:
 * each refused with a log line while the server goes on serving another client.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PageServerSocket, type ServerLog } from '../src/apps/serve/server.js';
import { Madvise } from '../src/memory/constants.js';
import { sendWithFds, socketFd } from '../src/socket/scm-rights.js';
import { Client, numberedPagesFile, PAGE } from './helpers/firecracker-client.js';

const dir = mkdtempSync(join(tmpdir(), 'postcopy-test-serve-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 2 ** 20;
const FILE_BYTES = 8 * MiB;
// Page p of the file holds p + 1 in its first word (so 0 means "a zero page").
const memoryFile = numberedPagesFile(dir, FILE_BYTES);

let sockets = 0;
async function server(): Promise<{ s: PageServerSocket; logs: ServerLog[] }> {
  const logs: ServerLog[] = [];
  const s = await PageServerSocket.listen({ socketPath: join(dir, `uffd-${++sockets}.sock`), memoryFile, onLog: (l) => logs.push(l) });
  return { s, logs };
}

const expected = (offset: number, pages: number) => Uint32Array.from({ length: pages }, (_, p) => offset / PAGE + p + 1);

describe('postcopy serve: the Firecracker UFFD handler protocol', () => {
  test('two regions over one userfaultfd: every page from the file at its offset; a removed range comes back as zeros', async () => {
    const { s, logs } = await server();
    const c = new Client([2 * MiB, 4 * MiB], [4 * MiB, 0]);
    try {
      await c.send(s.socketPath);
      assert.deepEqual(await c.touch(0), expected(4 * MiB, 512));
      assert.deepEqual(await c.touch(1), expected(0, 1024));
      // The balloon: the guest gave back 1 MiB of region 1; Firecracker drops it.
      c.regions[1]!.mapping.advise(Madvise.DONTNEED, MiB, MiB);
      const after = await c.touch(1);
      for (let p = 0; p < 1024; p++) assert.equal(after[p], p >= 256 && p < 512 ? 0 : p + 1, `page ${p}`);
      // The counters are published after each batch the server handles: wait for the last one.
      for (let i = 0; i < 200 && s.stats().zeroed < 256; i++) await sleep(10);
      const st = s.stats();
      assert.equal(st.uffds, 1);
      assert.equal(st.removes, 1);
      assert.equal(st.removedBytes, MiB);
      assert.equal(st.copied, 512 + 1024);
      assert.equal(st.zeroed, 256);
      assert.equal(st.bytesRead, (512 + 1024) * PAGE);
      assert.ok(logs.some((l) => l.level === 'info' && l.pid === process.pid), 'the peer pid from SO_PEERCRED');
    } finally {
      c.close();
      await s.close();
    }
  });

  test('several userfaultfds over one socket, each served on its own', async () => {
    const { s } = await server();
    const a = new Client([MiB], [0]);
    const b = new Client([MiB], [2 * MiB]);
    try {
      await a.send(s.socketPath);
      // Firecracker sends each message on the same stream: reuse a's connection for b's.
      assert.ok(sendWithFds(socketFd(a.socket), Buffer.from(b.message()), [b.uffd.fd]) > 0);
      const [wa, wb] = await Promise.all([a.touch(0), b.touch(0)]);
      assert.deepEqual(wa, expected(0, 256));
      assert.deepEqual(wb, expected(2 * MiB, 256));
      assert.equal(s.stats().uffds, 2);
    } finally {
      b.regions.forEach((r) => r.mapping.unmap());
      b.uffd.close();
      a.close();
      await s.close();
    }
  });

  const bad: [string, (c: Client) => { text: string; fds?: number[] }, RegExp][] = [
    ['malformed JSON', () => ({ text: '[{"base_host_virt_addr": 1,' + ']' }), /not JSON/],
    ['not an array', (c) => ({ text: JSON.stringify({ regions: JSON.parse(c.message()) }) }), /not a non-empty JSON array/],
    ['overlapping regions', (c) => {
      const m = JSON.parse(c.message()) as Record<string, number>[];
      return { text: JSON.stringify([m[0], { ...m[0], offset: 0, base_host_virt_addr: m[0]!.base_host_virt_addr! + PAGE }]) };
    }, /overlap/],
    ['a region beyond the file', (c) => ({ text: c.message({ offset: FILE_BYTES - PAGE }) }), /beyond the memory file/],
    ['a page size that is not one', (c) => ({ text: c.message({ page_size: 3000, page_size_kib: 3000 }) }), /not a power of two/],
    ['no descriptor', (c) => ({ text: c.message(), fds: [] }), /without a userfaultfd/],
    ['a descriptor that is not a userfaultfd', (c) => ({ text: c.message(), fds: [0] }), /not a userfaultfd/],
  ];
  for (const [what, make, pattern] of bad) {
    test(`refused: ${what}; a good client is served meanwhile`, async () => {
      const { s, logs } = await server();
      const wrong = new Client([MiB], [0]);
      const good = new Client([MiB], [MiB]);
      try {
        const m = make(wrong);
        await wrong.send(s.socketPath, m.text, m.fds ?? [wrong.uffd.fd]);
        await good.send(s.socketPath);
        assert.deepEqual(await good.touch(0), expected(MiB, 256));
        for (let i = 0; i < 100 && !logs.some((l) => l.level === 'refused'); i++) await sleep(10);
        const refusal = logs.find((l) => l.level === 'refused');
        assert.ok(refusal, `a refusal was logged: ${JSON.stringify(logs)}`);
        assert.match(refusal.message, pattern);
        assert.equal(s.stats().refused, 1);
        // The refused peer's connection is closed by the server.
        await new Promise<void>((resolve) => {
          if (wrong.socket.destroyed) resolve();
          else wrong.socket.once('close', () => resolve()).resume();
        });
      } finally {
        wrong.close();
        good.close();
        await s.close();
      }
    });
  }
});
