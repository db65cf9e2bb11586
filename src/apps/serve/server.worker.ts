/**
 * The page server's thread, as Firecracker's example handlers work: one thread in epoll
 * over its connections and the userfaultfds they sent.
 *
 * - A connection (handed over by the main thread, which accepted it paused) carries JSON
 *   arrays of GuestRegionUffdMapping, each with a userfaultfd in SCM_RIGHTS; several over
 *   one socket. A malformed message, a wrong region list, a message without a descriptor,
 *   a descriptor that is not a userfaultfd: refused with a log line, that connection (and
 *   the userfaultfds it sent) closed; every other goes on.
 * - A page fault is served from the memory file: UFFDIO_COPY from its mapping at the
 *   region's offset, or a zero page for a range the peer removed (UFFD_EVENT_REMOVE:
 *   madvise(MADV_DONTNEED), a balloon; such a range is no longer the file's). EEXIST is
 *   done (wake); EAGAIN (an event is queued behind it) defers the fault until the
 *   userfaultfd's pending messages have been read, then it is retried.
 */
import { readlinkSync } from 'node:fs';
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { hva } from '../../address.js';
import { native } from '../../native/binding.js';
import { isSystemError } from '../../native/errors.js';
import { receiveWithFds } from '../../socket/scm-rights.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { MappingError, parseMappings, splitJsonValues, type GuestRegionUffdMapping } from './mappings.js';
import type { ServerControl, ServerLog, ServerStats, ServerWorkerConfig } from './server.js';

const c = workerData as ServerWorkerConfig;
const port = c.port as MessagePort;
const EPOLLIN = 0x1;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const epfd = native.epollCreate();
native.epollCtl(epfd, EPOLL_CTL_ADD, c.wakeFd, EPOLLIN, c.wakeFd);
const ready = new Uint32Array(2 * 32);
const eventCount = new Uint8Array(8);
const recvBuffer = new Uint8Array(64 * 1024);
const decoder = new TextDecoder();
const log = (m: Omit<ServerLog, 'type'>) => parentPort!.postMessage({ type: 'log', ...m } satisfies ServerLog);
/** A page of zeros to copy where no zero page exists (hugetlb), made when first needed. */
let zeroPages = new Map<number, Uint8Array>();

interface Connection {
  readonly id: number;
  readonly fd: number;
  readonly pid: number;
  text: string;
  readonly fds: number[];
  readonly uffds: Set<number>;
}

interface Handler {
  readonly conn: Connection;
  readonly uffd: Userfaultfd;
  readonly regions: readonly GuestRegionUffdMapping[];
  readonly pageSize: number;
  /** Pages (by host address) the peer removed: served as zeros from now on. */
  readonly removed: Set<number>;
  /** Faults waiting for their userfaultfd's pending events to be read (EAGAIN). */
  deferred: number[];
}

const conns = new Map<number, Connection>();
const handlers = new Map<number, Handler>();
const stats: ServerStats = { connections: 0, refused: 0, uffds: 0, faults: 0, copied: 0, zeroed: 0, exists: 0, deferred: 0, removes: 0, removedBytes: 0, bytesRead: 0 };

const shared = new Float64Array(c.stats);
const STAT_KEYS = Object.keys(stats) as (keyof ServerStats)[];
/** The counters into shared memory, where the main thread reads them at any time. */
function publish(): void {
  STAT_KEYS.forEach((k, i) => (shared[i] = stats[k]));
}

function closeFd(fd: number): void {
  try {
    native.close(fd);
  } catch {
    // already gone
  }
}

function dropConnection(conn: Connection, why?: string): void {
  if (!conns.delete(conn.fd)) return;
  if (why) {
    stats.refused++;
    log({ level: 'refused', connection: conn.id, pid: conn.pid, message: why });
  }
  try {
    native.epollCtl(epfd, EPOLL_CTL_DEL, conn.fd, 0, 0);
  } catch {
    // closed under us
  }
  for (const fd of conn.fds) closeFd(fd);
  for (const u of conn.uffds) {
    const h = handlers.get(u);
    if (!h) continue;
    handlers.delete(u);
    native.epollCtl(epfd, EPOLL_CTL_DEL, u, 0, 0);
    h.uffd.close();
    closeFd(u);
  }
  // The main thread owns the socket (libuv's descriptor): it closes it.
  parentPort!.postMessage({ type: 'closed', connection: conn.id });
}

function isUserfaultfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[userfaultfd]';
  } catch {
    return false;
  }
}

function addHandler(conn: Connection, text: string): boolean {
  let regions: GuestRegionUffdMapping[];
  try {
    regions = parseMappings(text, c.fileSize);
  } catch (e) {
    if (e instanceof MappingError) {
      dropConnection(conn, `${e.message}; message ${JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text)}`);
      return false;
    }
    throw e;
  }
  const fd = conn.fds.shift();
  if (fd === undefined) {
    dropConnection(conn, 'the message came without a userfaultfd (SCM_RIGHTS)');
    return false;
  }
  if (!isUserfaultfd(fd)) {
    closeFd(fd);
    dropConnection(conn, `the descriptor sent is not a userfaultfd (${(() => { try { return readlinkSync(`/proc/self/fd/${fd}`); } catch { return 'unknown'; } })()})`);
    return false;
  }
  // Its features were negotiated by the peer; the ioctls used here check nothing of them.
  const uffd = Userfaultfd.borrow(fd, 0n, 0n, true);
  handlers.set(fd, { conn, uffd, regions, pageSize: regions[0]!.page_size, removed: new Set(), deferred: [] });
  conn.uffds.add(fd);
  native.epollCtl(epfd, EPOLL_CTL_ADD, fd, EPOLLIN, fd);
  stats.uffds++;
  const bytes = regions.reduce((n, r) => n + r.size, 0);
  log({ level: 'info', connection: conn.id, pid: conn.pid, message: `userfaultfd ${fd}: ${regions.length} region(s), ${bytes} bytes in ${regions[0]!.page_size}-byte pages` });
  return true;
}

function onConnectionReadable(conn: Connection): void {
  for (;;) {
    let r;
    try {
      r = receiveWithFds(conn.fd, recvBuffer, 8);
    } catch (e) {
      dropConnection(conn, `recvmsg: ${(e as Error).message}`);
      return;
    }
    if (r === undefined) break;
    conn.fds.push(...r.fds);
    if (r.truncated) {
      dropConnection(conn, 'the message carried more descriptors than a mapping message can (8)');
      return;
    }
    if (r.bytes === 0) {
      if (conn.text.trim() !== '') {
        dropConnection(conn, `the peer closed in the middle of a message (${conn.text.length} bytes of it)`);
        return;
      }
      log({ level: 'info', connection: conn.id, pid: conn.pid, message: 'the peer closed the connection' });
      dropConnection(conn);
      return;
    }
    conn.text += decoder.decode(recvBuffer.subarray(0, r.bytes), { stream: true });
    if (conn.text.length > 1 << 20) {
      dropConnection(conn, 'the message is larger than 1 MiB');
      return;
    }
    const { values, rest } = splitJsonValues(conn.text);
    conn.text = rest;
    for (const v of values) if (!addHandler(conn, v)) return;
  }
}

function regionOf(h: Handler, page: number): GuestRegionUffdMapping | undefined {
  for (const r of h.regions) if (page >= r.base_host_virt_addr && page < r.base_host_virt_addr + r.size) return r;
  return undefined;
}

/** Serves the fault at `page`: true once done, false on EAGAIN (defer). */
function serve(h: Handler, page: number): boolean {
  const region = regionOf(h, page);
  if (!region) {
    log({ level: 'warn', connection: h.conn.id, pid: h.conn.pid, message: `a fault at 0x${page.toString(16)} is outside the regions sent with userfaultfd ${h.uffd.fd}: left alone` });
    return true;
  }
  try {
    let r;
    if (h.removed.has(page)) {
      if (h.pageSize === 4096) r = h.uffd.zeropage(hva(page), h.pageSize);
      else {
        let zeros = zeroPages.get(h.pageSize);
        if (!zeros) zeroPages.set(h.pageSize, (zeros = new Uint8Array(h.pageSize)));
        r = h.uffd.copy(hva(page), hva(native.addressOf(zeros)), h.pageSize);
      }
      if (r.complete) stats.zeroed++;
    } else {
      r = h.uffd.copy(hva(page), hva(c.fileStart + region.offset + (page - region.base_host_virt_addr)), h.pageSize);
      if (r.complete) {
        stats.copied++;
        stats.bytesRead += h.pageSize;
      }
    }
    return r.complete || r.bytes > 0;
  } catch (e) {
    if (!isSystemError(e, 'EEXIST')) throw e;
    stats.exists++;
    h.uffd.wake(hva(page), h.pageSize);
    return true;
  }
}

function onUffdReadable(h: Handler): void {
  let n: number;
  try {
    n = h.uffd.read();
  } catch (e) {
    dropConnection(h.conn, `reading userfaultfd ${h.uffd.fd}: ${(e as Error).message}`);
    return;
  }
  // Events first (a REMOVE changes what later faults get), then faults in order.
  const faults: number[] = [];
  for (let i = 0; i < n; i++) {
    const address = h.uffd.faultAddress(i);
    if (address >= 0) {
      stats.faults++;
      faults.push(address - (address % h.pageSize));
      continue;
    }
    const e = h.uffd.event(i);
    if (e.type === 'remove') {
      stats.removes++;
      stats.removedBytes += e.end - e.start;
      for (let p = e.start - (e.start % h.pageSize); p < e.end; p += h.pageSize) h.removed.add(p);
    } else if (e.type !== 'pagefault') {
      log({ level: 'warn', connection: h.conn.id, pid: h.conn.pid, message: `userfaultfd ${h.uffd.fd}: ${e.type} event not handled` });
    }
  }
  const again = h.deferred.splice(0);
  for (const page of [...again, ...faults]) {
    if (!serve(h, page)) {
      stats.deferred++;
      h.deferred.push(page);
    }
  }
}

function onControl(): boolean {
  native.read(c.wakeFd, eventCount);
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
    const msg = m.message as ServerControl;
    if (msg.type === 'stop') return false;
    const conn: Connection = { id: msg.connection, fd: msg.fd, pid: msg.pid, text: '', fds: [], uffds: new Set() };
    conns.set(msg.fd, conn);
    stats.connections++;
    native.epollCtl(epfd, EPOLL_CTL_ADD, msg.fd, EPOLLIN, msg.fd);
    onConnectionReadable(conn);
  }
  return true;
}

function loop(): void {
  for (;;) {
    let waiting = false;
    for (const h of handlers.values()) if (h.deferred.length > 0) waiting = true;
    const n = native.epollWait(epfd, ready, waiting ? 1 : -1);
    for (let i = 0; i < n; i++) {
      const fd = ready[i * 2 + 1]!;
      if (fd === c.wakeFd) {
        if (!onControl()) return;
        continue;
      }
      const conn = conns.get(fd);
      if (conn) onConnectionReadable(conn);
      const h = handlers.get(fd);
      if (h) onUffdReadable(h);
    }
    // Deferred faults whose userfaultfd was not readable: try again (the event may be read by now).
    if (n === 0) for (const h of handlers.values()) if (h.deferred.length > 0) onUffdReadable(h);
    publish();
  }
}

parentPort!.postMessage({ type: 'ready' });
loop();
for (const conn of [...conns.values()]) dropConnection(conn);
native.close(epfd);
publish();
parentPort!.postMessage({ type: 'stopped', stats });
zeroPages = new Map();
