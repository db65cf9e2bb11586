/**
 * The page server tests' peer, doing what Firecracker's persist.rs does when it restores
 * with a Uffd memory backend: opens a userfaultfd non-blocking with EVENT_REMOVE, registers
 * its private anonymous guest regions for MISSING faults, connects to the socket and sends
 * the JSON array of GuestRegionUffdMapping with the userfaultfd in SCM_RIGHTS; its "vCPUs"
 * (worker threads) then touch the memory.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { MapFlag } from '../../src/memory/constants.js';
import { Mapping } from '../../src/memory/mapping.js';
import { sendWithFds, socketFd } from '../../src/socket/scm-rights.js';
import { Userfaultfd } from '../../src/uffd/userfaultfd.js';

export const PAGE = 4096;

export async function connectTo(path: string): Promise<Socket> {
  const socket = connect(path);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return socket;
}

function read(workerData: unknown): Promise<Uint32Array> {
  const w = new Worker(new URL('./page-checker.worker.js', import.meta.url), { workerData });
  return new Promise<Uint32Array>((resolve, reject) => w.once('message', (m: { words: Uint32Array }) => resolve(m.words)).once('error', reject));
}

/** Firecracker's side: guest regions, a userfaultfd, the message. */
export class Client {
  readonly uffd = Userfaultfd.open({ features: ['EVENT_REMOVE'], nonBlocking: true });
  readonly regions: { mapping: Mapping; offset: number }[];
  socket!: Socket;

  /** Regions of `sizes` bytes at file offsets `offsets`. */
  constructor(sizes: number[], offsets: number[]) {
    this.regions = sizes.map((size, i) => {
      const mapping = Mapping.map(size, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
      this.uffd.register(mapping.address, size, ['MISSING']);
      return { mapping, offset: offsets[i]! };
    });
  }

  message(extra: Record<string, unknown> = {}): string {
    return JSON.stringify(this.regions.map((r) => ({ base_host_virt_addr: r.mapping.address, size: r.mapping.length, offset: r.offset, page_size: PAGE, page_size_kib: PAGE, ...extra })));
  }

  async send(path: string, text = this.message(), fds = [this.uffd.fd]): Promise<void> {
    this.socket = await connectTo(path);
    assert.equal(sendWithFds(socketFd(this.socket), Buffer.from(text), fds), Buffer.byteLength(text));
  }

  /** The first word of every page of region i, read by `threads` worker threads (vCPUs). */
  async touch(i: number, threads = 2): Promise<Uint32Array> {
    const r = this.regions[i]!.mapping;
    const part = r.length / threads;
    const parts = await Promise.all(Array.from({ length: threads }, (_, t) => read({ address: r.address + t * part, bytes: part })));
    const out = new Uint32Array(r.length / PAGE);
    parts.forEach((p, t) => out.set(p, (t * part) / PAGE));
    return out;
  }

  /** The first word of each [region, page] in this order, read by one thread (one vCPU). */
  touchInOrder(pages: readonly (readonly [region: number, page: number])[]): Promise<Uint32Array> {
    return read({ addresses: pages.map(([r, p]) => this.regions[r]!.mapping.address + p * PAGE) });
  }

  close(): void {
    this.socket?.destroy();
    for (const r of this.regions) r.mapping.unmap();
    this.uffd.close();
  }
}

/** A memory file of `bytes` in `dir` whose page p holds p + 1 in its first word (so 0 means "a zero page"). */
export function numberedPagesFile(dir: string, bytes: number): string {
  const path = join(dir, 'mem');
  const b = Buffer.alloc(bytes);
  for (let p = 0; p < bytes / PAGE; p++) b.writeUInt32LE(p + 1, p * PAGE);
  writeFileSync(path, b);
  return path;
}
