/**
 * The destination of a migration: listens, checks the source's HELLO (refusing what it
 * cannot build, and going on listening), builds the same guest, writes precopied pages,
 * and at SWITCHOVER registers the guest memory with userfaultfd, loads the vCPUs' state
 * and resumes at once. Post-copy: a vCPU touching a stale page faults; the page is asked
 * for on the urgent connection, placed (MINOR: written through the alias, then
 * UFFDIO_CONTINUE; MISSING: UFFDIO_COPY) and the vCPU runs on. Clean pages are mapped in
 * the background (MINOR) or are already in place (MISSING).
 *
 * When every page is in, the guest runs on for a moment, is paused, and the oracle
 * checks every page's counter against its vCPU's position.
 *
 * Never lets the guest run on memory it does not have: if the source fails after the
 * switchover, the vCPUs stay blocked in their faults and the caller must end the process
 * with native.exitNow() (see FrozenGuestError), not close the userfaultfd.
 */
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { hva } from '../../address.js';
import { PostcopyError } from '../../errors.js';
import type { Kvm } from '../../kvm/system.js';
import { BACKING_INFO, isBackingSource, type BackingSourceName } from '../../memory/backing.js';
import { Histogram } from '../../metrics/histogram.js';
import { isSystemError } from '../../native/errors.js';
import { Channel } from '../../transport/channel.js';
import type { Frame } from '../../transport/frame.js';
import type { Listener } from '../../transport/listener.js';
import { type FillResult, Userfaultfd } from '../../uffd/userfaultfd.js';
import { native } from '../../native/binding.js';
import { MIGRATE_PROGRAM, checkCounters, type MigrateState } from '../../kvm/guest/migrate-program.js';
import { MapFlag } from '../../memory/constants.js';
import { Mapping } from '../../memory/mapping.js';
import { FaultReader, type FaultMessage, type FaultReaderStats } from './fault-reader.js';
import { GUEST_PAGE, MigrationGuest, checkShape } from './guest.js';
import { PageStates } from './page-state.js';
import {
  FrameType,
  type Hello,
  MAX_PAYLOAD,
  MigrationProtocolError,
  type MigrationMode,
  encodeJson,
  encodeRequest,
  errorMessage,
  frameName,
  isFrameType,
  parseHello,
  parsePages,
  parseZero,
} from './protocol.js';
import { parseSwitchover, type Switchover } from './switchover.js';
import { UnitBitmap } from './stale-set.js';

export interface DestinationOptions {
  readonly listener: Listener;
  /** Refuse a source that proposes another mode or backing than these (undefined: accept either). */
  readonly mode?: MigrationMode;
  readonly source?: BackingSourceName;
  /** Refuse guests larger than this. */
  readonly maxMemory: number;
  /** Map clean pages (MINOR) before resuming the guest, or after it runs. */
  readonly mapClean: 'before' | 'after';
  /** How long the guest runs on after the last page is in, before the oracle pauses it (ms). */
  readonly runAfterMs: number;
  readonly timeoutMs: number;
  readonly onEvent?: (e: DestinationEvent) => void;
}

export type DestinationEvent =
  | { phase: 'listening'; host: string; port: number }
  | { phase: 'refused'; peer: string; reason: string }
  | { phase: 'accepted'; peer: string; hello: Hello }
  | { phase: 'round'; round: number; pages: number }
  | { phase: 'resumed'; stalePages: number; downtimeMs: number }
  | { phase: 'postcopy'; received: number; of: number }
  | { phase: 'complete' }
  | { phase: 'checked'; lostWrites: number };

/** The source failed after the guest resumed here on partial memory: its vCPUs are blocked in faults that will not be answered. */
export class FrozenGuestError extends PostcopyError {
  override name = 'FrozenGuestError';
  constructor(detail: string, readonly missingPages: number) {
    super(
      'ERR_SOURCE_LOST',
      `${detail}; ${missingPages} page(s) never arrived, so the guest stays paused (its vCPUs wait on those pages) and will not run on partial memory`,
      'The guest cannot be recovered here; restart the migration from a source that still has it',
    );
  }
}

export interface OracleResult {
  readonly checkedPages: number;
  /** Pages whose counter is not what their vCPU wrote last. */
  readonly lostWrites: number;
  readonly first: readonly { guestAddress: number; found: string; expected: string }[];
  /** What the guest itself saw: accesses that found a counter other than the last pass's. */
  readonly guestMismatches: number;
}

export interface DestinationReport {
  readonly mode: MigrationMode;
  readonly source: BackingSourceName;
  readonly unit: number;
  readonly pages: number;
  readonly vcpus: number;
  readonly rounds: readonly { round: number; pages: number }[];
  readonly precopyPages: number;
  readonly stalePages: number;
  readonly onDemandPages: number;
  readonly backgroundPages: number;
  readonly duplicatePages: number;
  /** Allocating and mapping the memory before accepting (see MigrationGuest.populate), ms. */
  readonly prepareMs: number;
  /** Source pause → guest resumed here (CLOCK_MONOTONIC: meaningful when both run on one machine). */
  readonly downtimeMs: number;
  /** SWITCHOVER received → guest resumed here. */
  readonly resumeMs: number;
  readonly mapCleanMs: number;
  /** Resumed → every page in. */
  readonly postcopyMs: number;
  readonly faults: FaultReaderStats;
  /** Fault read → its page placed, for faults that waited on the network (ms). */
  readonly latencyMs: { count: number; p50: number; p99: number; max: number };
  /** Per vCPU, the sum of those waits (ms). */
  readonly blocktimeMs: readonly number[];
  /**
   * The longest gap in any vCPU's own progress (guest TSC) from the source's pause on: the
   * blackout, post-copy waits, and the run after; ms. NaN if the TSCs could not be lined up.
   */
  readonly guestStallMs: number;
  readonly states: readonly MigrateState[];
  readonly oracle: OracleResult;
}

const ms = (ns: bigint) => Number(ns) / 1e6;

/** A UFFDIO_COPY/CONTINUE over [at, at+length), continued where a partial fill (EAGAIN) stopped. */
function resolveAll(op: (at: number, src: number, length: number) => FillResult, at: number, src: number, length: number): void {
  for (let done = 0; done < length; ) done += op(at + done, src + done, length - done).bytes;
}

function uffdFeatures(mode: MigrationMode, source: BackingSourceName): ('MINOR_SHMEM' | 'MINOR_HUGETLBFS' | 'MISSING_SHMEM' | 'MISSING_HUGETLBFS' | 'THREAD_ID')[] {
  const info = BACKING_INFO[source];
  if (mode === 'minor') return [info.hugetlb ? 'MINOR_HUGETLBFS' : 'MINOR_SHMEM', 'THREAD_ID'];
  if (info.shared) return [info.hugetlb ? 'MISSING_HUGETLBFS' : 'MISSING_SHMEM', 'THREAD_ID'];
  return info.hugetlb ? ['MISSING_HUGETLBFS', 'THREAD_ID'] : ['THREAD_ID'];
}

/** Why this destination cannot take `hello`, or undefined. */
function refusal(hello: Hello, o: DestinationOptions): string | undefined {
  if (hello.program.name !== MIGRATE_PROGRAM.name || hello.program.codeBytes !== MIGRATE_PROGRAM.code.length) {
    return `the source runs guest program '${hello.program.name}' (${hello.program.codeBytes} bytes), this side '${MIGRATE_PROGRAM.name}' (${MIGRATE_PROGRAM.code.length}): run the same postcopy version on both sides`;
  }
  if (!isBackingSource(hello.source)) return `unknown backing source '${hello.source}'`;
  if (hello.source === 'guest_memfd') return 'guest_memfd memory cannot be registered with userfaultfd on this kernel (see `postcopy probe`)';
  if (o.mode && hello.mode !== o.mode) return `the source asks for ${hello.mode.toUpperCase()} faults, this destination was started with -u ${o.mode.toUpperCase()}`;
  if (o.source && hello.source !== o.source) return `the source's memory is ${hello.source}, this destination was started with -s ${o.source}`;
  const info = BACKING_INFO[hello.source];
  if (hello.mode === 'minor' && !info.shared) return `MINOR faults need shared memory (shmem, shared_hugetlb), not ${hello.source}`;
  if (info.pageSize !== hello.pageSize) return `page size ${hello.pageSize} does not match ${hello.source}'s ${info.pageSize}`;
  if (hello.memory.size > o.maxMemory) return `guest memory of ${hello.memory.size} bytes exceeds this destination's limit of ${o.maxMemory} (--max-memory)`;
  try {
    checkShape({ source: hello.source, size: hello.memory.size, vcpus: hello.vcpus, guestAddress: hello.memory.guestAddress }, info.pageSize);
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}

const peerOf = (s: Socket) => `${s.remoteAddress}:${s.remotePort}`;
const channelOptions = (name: string, idleTimeoutMs: number) => ({ isKnownType: isFrameType, maxPayload: MAX_PAYLOAD, name, idleTimeoutMs });

/** Refuses a peer with an ERROR frame (best effort) and closes. */
async function refuse(ch: Channel, reason: string): Promise<void> {
  try {
    ch.send(FrameType.ERROR, 0, encodeJson({ message: reason }));
    ch.expectClose();
    await Promise.race([ch.close(), sleep(1000)]);
  } catch {
    // the peer may be gone already
  }
  ch.destroy();
}

/** Accepts connections until one sends an acceptable HELLO; refuses the others and goes on listening. */
async function acceptSource(kvm: Kvm, o: DestinationOptions): Promise<{ main: Channel; hello: Hello; uffd: Userfaultfd; guest: MigrationGuest; populated: boolean; prepareMs: number }> {
  let populated = false;
  let prepareMs = 0;
  for (;;) {
    const socket = await o.listener.accept();
    const peer = peerOf(socket);
    const ch = Channel.fromSocket(socket, channelOptions('source', o.timeoutMs));
    let hello: Hello;
    try {
      const f = await ch.next(o.timeoutMs);
      if (f.type !== FrameType.HELLO) throw new MigrationProtocolError(`expected HELLO, got ${frameName(f.type)}`);
      hello = parseHello(f.payload);
      const why = refusal(hello, o);
      if (why) throw new MigrationProtocolError(why);
    } catch (e) {
      const reason = (e as Error).message;
      o.onEvent?.({ phase: 'refused', peer, reason });
      await refuse(ch, reason);
      continue;
    }
    // What the kernel must offer is checked now, so the source hears why before it sends a page.
    let uffd: Userfaultfd | undefined;
    let guest: MigrationGuest | undefined;
    try {
      uffd = Userfaultfd.open({ features: uffdFeatures(hello.mode, hello.source as BackingSourceName), nonBlocking: true });
      guest = MigrationGuest.create(kvm, { source: hello.source as BackingSourceName, size: hello.memory.size, vcpus: hello.vcpus, guestAddress: hello.memory.guestAddress }, { dirtyLog: false });
      const t0 = process.hrtime.bigint();
      populated = guest.populate();
      prepareMs = ms(process.hrtime.bigint() - t0);
    } catch (e) {
      uffd?.close();
      const reason = `this destination cannot build the guest: ${(e as Error).message}`;
      o.onEvent?.({ phase: 'refused', peer, reason });
      await refuse(ch, reason);
      continue;
    }
    o.onEvent?.({ phase: 'accepted', peer, hello });
    return { main: ch, hello, uffd, guest, populated, prepareMs };
  }
}

/** The source's second connection, which must name the session; other peers are refused meanwhile. */
async function acceptUrgent(o: DestinationOptions, session: string): Promise<Channel> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new PostcopyError('ERR_PEER_SILENT', `the source did not open its urgent connection within ${o.timeoutMs} ms`);
    let timer: NodeJS.Timeout | undefined;
    const socket = await Promise.race([
      o.listener.accept(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PostcopyError('ERR_PEER_SILENT', `the source did not open its urgent connection within ${o.timeoutMs} ms`)), left);
      }),
    ]).finally(() => clearTimeout(timer));
    const ch = Channel.fromSocket(socket, channelOptions('source (urgent)', 0));
    try {
      const f = await ch.next(left);
      if (f.type !== FrameType.URGENT) throw new MigrationProtocolError(`expected URGENT, got ${frameName(f.type)}`);
      const s = JSON.parse(Buffer.from(f.payload).toString()) as { session?: unknown };
      if (s.session !== session) throw new MigrationProtocolError('URGENT for another session');
      return ch;
    } catch (e) {
      const reason = (e as Error).message;
      o.onEvent?.({ phase: 'refused', peer: peerOf(socket), reason });
      await refuse(ch, reason);
    }
  }
}

export async function runDestination(kvm: Kvm, o: DestinationOptions): Promise<DestinationReport> {
  o.onEvent?.({ phase: 'listening', ...o.listener.address });
  const { main, hello, uffd, guest, populated, prepareMs } = await acceptSource(kvm, o);
  let urgent: Channel | undefined;
  let frozen = false;
  try {
    main.send(FrameType.ACCEPT, 0, encodeJson({ version: hello.version }));
    urgent = await acceptUrgent(o, hello.session);
    const report = await receive(guest, uffd, hello, main, urgent, o, { populated, prepareMs });
    return report;
  } catch (e) {
    frozen = e instanceof FrozenGuestError;
    try {
      main.send(FrameType.ERROR, 0, encodeJson({ message: (e as Error).message }));
    } catch {
      // the source may be gone
    }
    throw e;
  } finally {
    main.destroy();
    urgent?.destroy();
    // A frozen guest's vCPUs are blocked in faults: closing the userfaultfd would let them
    // run on the stale pages. Leave everything as it is; the caller ends the process.
    if (!frozen) {
      if (guest.running) await guest.pause().catch(() => undefined);
      if (!guest.running) {
        guest.close();
        uffd.close();
      }
    }
  }
}

async function receive(
  guest: MigrationGuest,
  uffd: Userfaultfd,
  hello: Hello,
  main: Channel,
  urgent: Channel,
  o: DestinationOptions,
  prepared: { populated: boolean; prepareMs: number },
): Promise<DestinationReport> {
  const unit = guest.unit;
  const units = hello.memory.size / unit;
  const base = hello.memory.guestAddress;
  const memory = { guestAddress: base, size: hello.memory.size };
  const primary = guest.backing.primary;
  // Where arriving bytes are written: the alias (never registered) for MINOR; the guest's own
  // mapping for MISSING, which is registered only at switchover.
  const fill = (hello.mode === 'minor' ? guest.backing.alias! : primary).bytes();
  const states = new PageStates(units);
  // A page of zeros to UFFDIO_COPY from (MISSING, memory not populated), made when first needed.
  let zeros: Mapping | undefined;
  const zeroPage = () => (zeros ??= Mapping.map(unit, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS }));
  // MISSING: which pages of the (registered) guest mapping hold bytes; all of them once populated.
  const populated = new Uint8Array(hello.mode === 'missing' ? units : 0).fill(prepared.populated ? 1 : 0);

  const rounds: { round: number; pages: number }[] = [];
  let precopyPages = 0;
  let switched = false;
  let sw: Switchover | undefined;
  let switchoverAtNs = 0n;
  let resumedAtNs = 0n;
  let completeAtNs = 0n;
  let remaining = 0;
  let onDemandPages = 0;
  let backgroundPages = 0;
  let duplicatePages = 0;
  let mapCleanMs = 0;
  let tscAligned = true;
  let reader: FaultReader | undefined;
  const requested = new Map<number, { at: number; tids: number[] }>();
  const latency = new Histogram();
  const tidToVcpu = new Map<number, number>();
  const blocktime = new Array<number>(hello.vcpus).fill(0);
  let lastEvent = 0;

  let finish!: () => void;
  let fail!: (e: Error) => void;
  const finished = new Promise<void>((resolve, reject) => ((finish = resolve), (fail = reject)));
  finished.catch(() => undefined);
  const failWith = (e: Error) => {
    if (switched && remaining > 0) fail(new FrozenGuestError(`post-copy failed: ${e.message}`, remaining));
    else fail(e);
  };
  void main.closed.then((e) => e && failWith(e));
  void urgent.closed.then((e) => e && failWith(e));

  /** The waits that end now that unit `u` is in: latency and blocktime. */
  const arrived = (u: number, now: number) => {
    const r = requested.get(u);
    if (!r) {
      backgroundPages++;
      return;
    }
    requested.delete(u);
    const waited = now - r.at;
    latency.record(waited * 1e6);
    for (const tid of r.tids) {
      const v = tidToVcpu.get(tid);
      if (v !== undefined) blocktime[v]! += waited;
    }
  };

  /**
   * Places pages that arrived after the switchover, each once, in runs: one UFFDIO_CONTINUE
   * (or UFFDIO_COPY straight from the received bytes) per run of pages not yet present,
   * which also wakes whoever waits on them. A page already present is never written again:
   * the guest may have written it since.
   */
  const place = (first: number, data: Uint8Array) => {
    const n = data.byteLength / unit;
    for (let i = 0; i < n; ) {
      if (states.present(first + i)) {
        duplicatePages++;
        i++;
        continue;
      }
      let j = i + 1;
      while (j < n && !states.present(first + j)) j++;
      const at = primary.address + (first + i) * unit;
      const run = data.subarray(i * unit, j * unit);
      if (hello.mode === 'minor') {
        fill.set(run, (first + i) * unit);
        resolveAll((a, _s, len) => uffd.continue(hva(a), len), at, 0, run.byteLength);
      } else {
        resolveAll((a, src, len) => uffd.copy(hva(a), hva(src), len), at, native.addressOf(run), run.byteLength);
      }
      const now = performance.timeOrigin + performance.now();
      for (let k = i; k < j; k++) {
        states.markPresent(first + k);
        arrived(first + k, now);
      }
      remaining -= j - i;
      i = j;
    }
    if (remaining === 0) {
      completeAtNs = process.hrtime.bigint();
      main.send(FrameType.COMPLETE, 0, encodeJson({ pages: units }));
      o.onEvent?.({ phase: 'complete' });
      finish();
    } else if (performance.now() - lastEvent > 100) {
      lastEvent = performance.now();
      o.onEvent?.({ phase: 'postcopy', received: (sw?.stalePages ?? 0) - remaining, of: sw?.stalePages ?? 0 });
    }
  };

  const onPages = (f: Frame) => {
    const { guestAddress, data } = parsePages(f.payload, unit, memory);
    const first = (guestAddress - base) / unit;
    if (!switched) {
      const n = data.byteLength / unit;
      if (hello.mode === 'minor') fill.set(data, first * unit);
      else {
        // The guest's mapping is registered already: a page's first bytes go in with
        // UFFDIO_COPY (writing an absent page would fault into our own reader); later
        // rounds overwrite it in place.
        for (let i = 0; i < n; i++) {
          const u = first + i;
          const page = data.subarray(i * unit, (i + 1) * unit);
          if (populated[u]) fill.set(page, u * unit);
          else {
            resolveAll((a, src, len) => uffd.copy(hva(a), hva(src), len), primary.address + u * unit, native.addressOf(page), unit);
            populated[u] = 1;
          }
        }
      }
      precopyPages += n;
      return;
    }
    if (remaining > 0) place(first, data);
    else duplicatePages += data.byteLength / unit;
  };

  const onFault = (m: FaultMessage) => {
    if (states.present(m.page)) {
      // Placed between the reader's look and now; the placement woke the vCPU.
      return;
    }
    const r = requested.get(m.page);
    if (r) {
      r.tids.push(m.tid);
      return;
    }
    requested.set(m.page, { at: m.at, tids: [m.tid] });
    onDemandPages++;
    urgent.send(FrameType.REQUEST, 0, encodeRequest(base + m.page * unit));
  };

  /** MINOR: maps runs of clean pages into the guest's mapping (they are in the page cache already), `yieldEvery` pages at a time. */
  const mapClean = async (yieldEvery: number) => {
    const t0 = process.hrtime.bigint();
    const chunk = Math.max(1, (2 * 2 ** 20) / unit);
    const isClean = (u: number) => !sw!.stale[u >> 3]! || ((sw!.stale[u >> 3]! >> (u & 7)) & 1) === 0;
    let done = 0;
    for (let u = 0; u < units; ) {
      if (!isClean(u)) {
        u++;
        continue;
      }
      let n = 1;
      while (n < chunk && u + n < units && isClean(u + n)) n++;
      try {
        resolveAll((a, _s, len) => uffd.continue(hva(a), len), primary.address + u * unit, 0, n * unit);
      } catch (e) {
        if (!isSystemError(e, 'EEXIST')) throw e;
        // A vCPU faulted on one of these first and the reader mapped it: go page by page.
        for (let i = 0; i < n; i++) {
          try {
            uffd.continue(hva(primary.address + (u + i) * unit), unit);
          } catch (e2) {
            if (!isSystemError(e2, 'EEXIST')) throw e2;
          }
        }
      }
      u += n;
      done += n;
      if (yieldEvery > 0 && done >= yieldEvery) {
        done = 0;
        // A timer, not setImmediate: the thread must leave the CPU, not just the event
        // loop, or the vCPUs (lower priority) wait behind the bulk mapping: it doubled the
        // guest's stall here. vCPUs touching a clean page first have the reader map it.
        await sleep(0);
      }
    }
    mapCleanMs = ms(process.hrtime.bigint() - t0);
  };
  let mapping: Promise<void> = Promise.resolve();

  const onSwitchover = async (f: Frame) => {
    switchoverAtNs = process.hrtime.bigint();
    sw = parseSwitchover(f.payload, { vcpus: hello.vcpus, pages: units });
    remaining = states.setFromStaleBitmap(sw.stale);
    switched = true;
    // MISSING: drop the stale pages so that a vCPU's touch faults.
    if (hello.mode === 'missing') {
      for (const [first, count] of new UnitBitmap(units, sw.stale).runs(units)) {
        guest.backing.discard(first * unit, count * unit);
      }
    }
    guest.load(sw.vcpus, { resetStall: true });
    tscAligned = alignTsc(guest, sw);
    if (hello.mode === 'minor' && o.mapClean === 'before') await mapClean(0);
    const tids = guest.go();
    tids.forEach((tid, i) => tidToVcpu.set(tid, i));
    resumedAtNs = process.hrtime.bigint();
    main.send(FrameType.RESUMED, 0, encodeJson({ resumedAtNs: String(resumedAtNs) }));
    o.onEvent?.({ phase: 'resumed', stalePages: sw.stalePages, downtimeMs: ms(resumedAtNs - sw.pausedAtNs) });
    if (hello.mode === 'minor' && o.mapClean === 'after') mapping = mapClean(512);
    if (remaining === 0) {
      completeAtNs = process.hrtime.bigint();
      main.send(FrameType.COMPLETE, 0, encodeJson({ pages: units }));
      o.onEvent?.({ phase: 'complete' });
      finish();
    }
  };

  // Frames after SWITCHOVER wait until it is handled (the guest state must be loaded first).
  let queue: Frame[] | undefined;
  const handle = (f: Frame) => {
    if (queue) {
      queue.push(f);
      return;
    }
    try {
      switch (f.type) {
        case FrameType.PAGES:
          return onPages(f);
        case FrameType.ZERO: {
          if (switched) throw new MigrationProtocolError('a ZERO frame after the switchover');
          const z = parseZero(f.payload, unit, memory);
          const first = (z.guestAddress - base) / unit;
          const count = z.length / unit;
          if (hello.mode === 'minor') fill.fill(0, first * unit, (first + count) * unit);
          else {
            for (let u = first; u < first + count; u++) {
              if (populated[u]) fill.fill(0, u * unit, (u + 1) * unit);
              else {
                // Unpopulated and registered: only an ioctl may fill it (a store would fault into our own reader).
                resolveAll((a, src, len) => uffd.copy(hva(a), hva(src), len), primary.address + u * unit, zeroPage().address, unit);
                populated[u] = 1;
              }
            }
          }
          precopyPages += count;
          return;
        }
        case FrameType.ROUND_END: {
          const r = JSON.parse(Buffer.from(f.payload).toString()) as { round: number; pages: number };
          rounds.push({ round: r.round, pages: r.pages });
          // Tell the source this round is in: it starts the next one (or the blackout) on an empty pipe.
          main.send(FrameType.ROUND_END, 0, encodeJson({ round: r.round }));
          o.onEvent?.({ phase: 'round', round: r.round, pages: r.pages });
          return;
        }
        case FrameType.SWITCHOVER: {
          if (switched) throw new MigrationProtocolError('a second SWITCHOVER frame');
          queue = [];
          onSwitchover(f).then(
            () => {
              const q = queue!;
              queue = undefined;
              for (const g of q) handle(g);
            },
            (e: Error) => failWith(e),
          );
          return;
        }
        case FrameType.ERROR:
          throw new PostcopyError('ERR_PEER', `the source failed: ${errorMessage(f.payload)}`);
        default:
          throw new MigrationProtocolError(`unexpected ${frameName(f.type)} frame from the source`);
      }
    } catch (e) {
      failWith(e as Error);
    }
  };
  // Everything that takes long is done now, before the source pauses its guest: the
  // registration (the guest's mapping is touched only by the guest, and by UFFDIO_COPY in
  // MISSING mode), the fault reader, the vCPU threads.
  uffd.register(hva(primary.address), hello.memory.size, [hello.mode === 'minor' ? 'MINOR' : 'MISSING']);
  reader = await FaultReader.start(uffd, { mode: hello.mode, regionStart: primary.address, pageSize: unit, states }, onFault, failWith);
  await guest.arm();
  main.onFrame(handle);
  urgent.onFrame((f) => {
    try {
      if (f.type !== FrameType.PAGES) throw new MigrationProtocolError(`unexpected ${frameName(f.type)} frame on the urgent connection`);
      if (!switched || queue) throw new MigrationProtocolError('a requested page before the switchover');
      onPages(f);
    } catch (e) {
      failWith(e as Error);
    }
  });

  await finished;
  await mapping;
  main.expectClose();
  urgent.expectClose();
  // The source is done; the guest runs on alone.
  await sleep(o.runAfterMs);
  await guest.pause();
  const faults = await reader!.stop();
  uffd.unregister(hva(primary.address), hello.memory.size);
  const finalStates = guest.states();
  const oracle = check(guest, finalStates);
  zeros?.unmap();
  o.onEvent?.({ phase: 'checked', lostWrites: oracle.lostWrites });
  const khz = sw!.tscKhz;
  let stall = 0n;
  for (const s of finalStates) {
    if (s.maxGapTicks > stall) stall = s.maxGapTicks;
  }
  return {
    mode: hello.mode,
    source: hello.source as BackingSourceName,
    unit,
    pages: units,
    vcpus: hello.vcpus,
    rounds,
    precopyPages,
    stalePages: sw!.stalePages,
    onDemandPages,
    backgroundPages,
    duplicatePages,
    prepareMs: prepared.prepareMs,
    downtimeMs: ms(resumedAtNs - sw!.pausedAtNs),
    resumeMs: ms(resumedAtNs - switchoverAtNs),
    mapCleanMs,
    postcopyMs: ms(completeAtNs - resumedAtNs),
    faults,
    latencyMs: summarize(latency),
    blocktimeMs: blocktime,
    guestStallMs: tscAligned ? Number(stall) / khz : NaN,
    states: finalStates,
    oracle,
  };
}

/**
 * Lines the destination's guest TSC up with the source's plus the time that passed, so
 * the guest's own gap measurement spans the migration. On one host with a shared TSC
 * (this machine's PVM KVM keeps guest TSC = host TSC) nothing needs doing; elsewhere try
 * KVM_SET_MSRS(IA32_TSC), and if KVM keeps its own, say the stall cannot be measured.
 */
function alignTsc(guest: MigrationGuest, sw: Switchover): boolean {
  const { tsc, khz } = guest.tsc();
  const expected = sw.tsc + BigInt(Math.round((Date.now() - sw.wallMs) * khz));
  const tolerance = BigInt(khz) * 50n; // 50 ms
  const off = (t: bigint) => (t > expected ? t - expected : expected - t) > tolerance;
  if (!off(tsc)) return true;
  guest.setTsc(expected);
  return !off(guest.tsc().tsc);
}

/** The oracle: every page's counter against its vCPU's position; read through the memory's own mapping, uffd unregistered. */
function check(guest: MigrationGuest, finalStates: readonly MigrateState[]): OracleResult {
  const bytes = (guest.backing.alias ?? guest.backing.primary).bytes();
  const counters = guest.counters(bytes);
  const wordsPerPage = GUEST_PAGE / 8;
  let lostWrites = 0;
  let checkedPages = 0;
  const first: { guestAddress: number; found: string; expected: string }[] = [];
  finalStates.forEach((s, i) => {
    const slice = guest.slice(i);
    const firstPage = (slice.guestAddress - guest.shape.guestAddress) / GUEST_PAGE;
    const r = checkCounters(s, slice.pages, (p) => counters[(firstPage + p) * wordsPerPage]!);
    lostWrites += r.bad;
    checkedPages += slice.pages;
    for (const b of r.first) {
      if (first.length < 16) first.push({ guestAddress: slice.guestAddress + b.page * GUEST_PAGE, found: String(b.found), expected: String(b.expected) });
    }
  });
  return { checkedPages, lostWrites, first, guestMismatches: finalStates.reduce((n, s) => n + s.mismatches, 0) };
}

function summarize(h: Histogram): { count: number; p50: number; p99: number; max: number } {
  const s = h.summary();
  return { count: s.count, p50: s.p50 / 1e6, p99: s.p99 / 1e6, max: s.max / 1e6 };
}
