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
 * - --record: each fault is noted, by unit of the memory file, in its connection's first
 *   faults; when the connection goes (the peer closed, was refused, or the server stops)
 *   they are merged into the record file as one run (recorder.ts).
 * - --prefetch: a userfaultfd that arrives gets the recorded units within its regions
 *   (prefetch-plan.ts), one UFFDIO_COPY per run (placement.ts, as the restore places them),
 *   the first run at once and one more after each round of events, so a fault never waits
 *   behind more than one run. EEXIST is done; EAGAIN (an event is pending: a REMOVE) holds
 *   that userfaultfd's prefetch until its messages are read, as faults are held. A unit the
 *   peer removed is never prefetched afterwards: the removal marks it as placed.
 */
import { readlinkSync } from 'node:fs';
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { hva } from '../../address.js';
import { native } from '../../native/binding.js';
import { isSystemError } from '../../native/errors.js';
import { receiveWithFds } from '../../socket/scm-rights.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { Counter, type PlaceTarget, placeRange } from '../snapshot/placement.js';
import { UnitMap } from '../snapshot/unit-map.js';
import { MappingError, parseMappings, splitJsonValues, type GuestRegionUffdMapping } from './mappings.js';
import { type RegionRun, regionRuns } from './prefetch-plan.js';
import { FirstFaults, RecordFile } from './recorder.js';
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
  /** --record: this peer's first faults. */
  readonly firstFaults: FirstFaults | undefined;
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
  /** Per region, for placeRange: units placed by prefetch or a fault, or removed (prefetch leaves them alone). */
  readonly targets: readonly PlaceTarget[];
  readonly prefetch: readonly RegionRun[];
  nextRun: number;
  /** The last prefetch run hit EAGAIN: held until this userfaultfd's messages are read. */
  prefetchHeld: boolean;
  /** This userfaultfd's prefetch figures, for its log line. */
  readonly placedBy: { units: number; ioctls: number; exists: number };
}

const conns = new Map<number, Connection>();
const handlers = new Map<number, Handler>();
const stats: ServerStats = { connections: 0, refused: 0, uffds: 0, faults: 0, copied: 0, zeroed: 0, exists: 0, deferred: 0, removes: 0, removedBytes: 0, bytesRead: 0, prefetched: 0, prefetchIoctls: 0, recordedRuns: 0, recordedUnits: 0 };
const ws = c.workingSet;
const recordFile = ws?.record ? new RecordFile(ws.record.path, ws.layout, ws.record.previous) : undefined;
/** placeRange's counters (only prefetch places through it), added into stats after each run. */
const placeCounters = new Float64Array(Counter.WORDS);

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
  if (recordFile && conn.firstFaults && conn.firstFaults.order.length > 0) {
    const units = conn.firstFaults.order.length;
    try {
      const merged = recordFile.add(conn.firstFaults);
      stats.recordedRuns++;
      stats.recordedUnits += units;
      log({ level: 'info', connection: conn.id, pid: conn.pid, message: `record: ${units} first-faulted unit(s) merged into ${recordFile.path} (now ${merged.units.length} unit(s) over ${merged.runs} run(s))` });
    } catch (e) {
      log({ level: 'warn', connection: conn.id, pid: conn.pid, message: `record: writing ${recordFile.path} failed, this peer's ${units} unit(s) are not in it: ${(e as Error).message}` });
    }
  }
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
  const pageSize = regions[0]!.page_size;
  if (ws && pageSize !== ws.unit) {
    closeFd(fd);
    dropConnection(conn, `the regions' pages are ${pageSize} bytes and the working set (--record, --prefetch) is in ${ws.unit}-byte units: serve with --page-size ${pageSize}`);
    return false;
  }
  // Its features were negotiated by the peer; the ioctls used here check nothing of them.
  const uffd = Userfaultfd.borrow(fd, 0n, 0n, true);
  const targets = regions.map((r): PlaceTarget => {
    const units = r.size / pageSize;
    return {
      uffd,
      mode: 'copy',
      regionStart: r.base_host_virt_addr,
      fileStart: c.fileStart + r.offset,
      unit: pageSize,
      zeropage: false,
      // Every unit is copied from the file, holes too (zeros), as faults are.
      data: new UnitMap(units, new Uint8Array(Math.ceil(units / 8)).fill(0xff)),
      placed: new UnitMap(units),
      counters: placeCounters,
    };
  });
  const prefetch = ws ? regionRuns(ws.prefetch, regions, pageSize) : [];
  const h: Handler = { conn, uffd, regions, pageSize, removed: new Set(), deferred: [], targets, prefetch, nextRun: 0, prefetchHeld: false, placedBy: { units: 0, ioctls: 0, exists: 0 } };
  handlers.set(fd, h);
  conn.uffds.add(fd);
  native.epollCtl(epfd, EPOLL_CTL_ADD, fd, EPOLLIN, fd);
  stats.uffds++;
  const bytes = regions.reduce((n, r) => n + r.size, 0);
  log({ level: 'info', connection: conn.id, pid: conn.pid, message: `userfaultfd ${fd}: ${regions.length} region(s), ${bytes} bytes in ${regions[0]!.page_size}-byte pages${ws && ws.prefetch.length > 0 ? `; prefetching ${prefetch.reduce((n, r) => n + r.count, 0)} recorded unit(s) in ${prefetch.length} run(s)` : ''}` });
  // Right away: the peer sends its regions before its vCPUs run.
  if (prefetching(h)) prefetchStep(h);
  return true;
}

const prefetching = (h: Handler) => h.nextRun < h.prefetch.length;

/** The next prefetch run: one UFFDIO_COPY (more only where it stops short at a unit already there). */
function prefetchStep(h: Handler): void {
  const run = h.prefetch[h.nextRun]!;
  const before = Float64Array.from(placeCounters);
  let placedAll: boolean;
  try {
    placedAll = placeRange(h.targets[run.region]!, run.first, run.count, Counter.BY_PREFETCH);
  } catch (e) {
    // The peer's memory is gone (it exited: ESRCH), or worse: stop prefetching for it, serve on.
    h.nextRun = h.prefetch.length;
    log({ level: 'warn', connection: h.conn.id, pid: h.conn.pid, message: `userfaultfd ${h.uffd.fd}: prefetch stopped: ${(e as Error).message}` });
    return;
  }
  const delta = (k: number) => placeCounters[k]! - before[k]!;
  const units = delta(Counter.BY_PREFETCH);
  stats.prefetched += units;
  stats.copied += delta(Counter.COPIED);
  stats.bytesRead += delta(Counter.COPIED) * h.pageSize;
  stats.prefetchIoctls += delta(Counter.IOCTLS);
  stats.exists += delta(Counter.EXISTS);
  h.placedBy.units += units;
  h.placedBy.ioctls += delta(Counter.IOCTLS);
  h.placedBy.exists += delta(Counter.EXISTS);
  if (!placedAll) {
    // EAGAIN: this run again (its placed units skipped) once the pending events are read.
    stats.deferred++;
    h.prefetchHeld = true;
    return;
  }
  if (++h.nextRun === h.prefetch.length) {
    const p = h.placedBy;
    log({ level: 'info', connection: h.conn.id, pid: h.conn.pid, message: `userfaultfd ${h.uffd.fd}: prefetch done: ${p.units} unit(s) placed in ${p.ioctls} UFFDIO_COPY(s), ${p.exists} already there` });
  }
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

function regionIndex(h: Handler, page: number): number {
  return h.regions.findIndex((r) => page >= r.base_host_virt_addr && page < r.base_host_virt_addr + r.size);
}

/** Serves the fault at `page`: true once done, false on EAGAIN (defer). */
function serve(h: Handler, page: number): boolean {
  const index = regionIndex(h, page);
  const region = h.regions[index];
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
        // Prefetch need not copy it again (a fault never trusts this map: it always copies).
        h.targets[index]!.placed.set((page - region.base_host_virt_addr) / h.pageSize);
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
  h.prefetchHeld = false;
  // Events first (a REMOVE changes what later faults get), then faults in order.
  const faults: number[] = [];
  for (let i = 0; i < n; i++) {
    const address = h.uffd.faultAddress(i);
    if (address >= 0) {
      stats.faults++;
      const page = address - (address % h.pageSize);
      faults.push(page);
      const first = h.conn.firstFaults;
      const r = first ? h.regions[regionIndex(h, page)] : undefined;
      if (r) first!.note((r.offset + page - r.base_host_virt_addr) / h.pageSize);
      continue;
    }
    const e = h.uffd.event(i);
    if (e.type === 'remove') {
      stats.removes++;
      stats.removedBytes += e.end - e.start;
      for (let p = e.start - (e.start % h.pageSize); p < e.end; p += h.pageSize) {
        h.removed.add(p);
        const i = regionIndex(h, p);
        if (i >= 0) h.targets[i]!.placed.set((p - h.regions[i]!.base_host_virt_addr) / h.pageSize);
      }
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
    const conn: Connection = { id: msg.connection, fd: msg.fd, pid: msg.pid, text: '', fds: [], uffds: new Set(), firstFaults: recordFile ? new FirstFaults(c.fileSize / ws!.unit) : undefined };
    conns.set(msg.fd, conn);
    stats.connections++;
    native.epollCtl(epfd, EPOLL_CTL_ADD, msg.fd, EPOLLIN, msg.fd);
    onConnectionReadable(conn);
  }
  return true;
}

function loop(): void {
  for (;;) {
    // Prefetch to do: look for events without sleeping. Held work (EAGAIN): look again in 1 ms.
    let waiting = false;
    let busy = false;
    for (const h of handlers.values()) {
      if (h.deferred.length > 0 || h.prefetchHeld) waiting = true;
      else if (prefetching(h)) busy = true;
    }
    const n = native.epollWait(epfd, ready, busy ? 0 : waiting ? 1 : -1);
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
    if (n === 0) for (const h of handlers.values()) if (h.deferred.length > 0 || h.prefetchHeld) onUffdReadable(h);
    // Then one prefetch run per userfaultfd (faults first: each waits behind one run at most).
    for (const h of handlers.values()) if (prefetching(h) && !h.prefetchHeld) prefetchStep(h);
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
