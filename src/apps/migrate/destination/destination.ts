/**
 * The destination of a migration, as session states (session.ts): handshake (accept.ts:
 * check the source's HELLO, build the same guest, preallocate its memory), precopy (write
 * arriving pages: placement.ts), switching (SWITCHOVER: mark the stale set, load the
 * guest's state, resume at once), post-copy (a worker touching a stale page faults; the
 * fault reader forwards it; the page is asked for on the urgent connection, placed, and the
 * worker runs on: requests.ts; MINOR maps clean pages in the background: clean-mapper.ts),
 * complete (every page is in: the guest runs on for a moment, is paused, and the oracle
 * checks every page).
 *
 * Never lets the guest run on memory it does not have: if the source fails after the
 * switchover, the workers stay blocked in their faults and the caller must end the process
 * with native.exitNow() (see FrozenGuestError), not close the userfaultfd.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { hva } from '../../../address.js';
import { PostcopyError } from '../../../errors.js';
import type { GuestBackendName, MigratableGuest, WorkerState } from '../../../guest/guest.js';
import { alignClock, checkGuest, longestGap, type OracleResult } from '../../../guest/oracle.js';
import type { BackingSourceName } from '../../../memory/backing.js';
import type { Frame } from '../../../transport/frame.js';
import type { Listener } from '../../../transport/listener.js';
import { describeSecurity, PLAIN, type Security } from '../../../transport/security.js';
import type { Userfaultfd } from '../../../uffd/userfaultfd.js';
import { FaultReader, type FaultReaderStats } from '../fault-reader.js';
import { FrameType, type Hello, MigrationProtocolError, type MigrationMode, encodeJson, encodeRequest, encodeResumeAck, errorMessage, frameName, parseClockProbe, parsePages, parseResume, parseRoundEnd, parseZero } from '../protocol.js';
import { Session, type SessionState } from '../session.js';
import { parseSwitchover, type Switchover } from '../switchover.js';
import { acceptSource, acceptUrgent, channelOptions, refuse } from './accept.js';
import { DEFAULT_RECOVER_TIMEOUT_MS, isLinkLoss, keepaliveFor, RecoveryTimeoutError } from '../link-loss.js';
import { UnitBitmap } from '../stale-set.js';
import { Channel } from '../../../transport/channel.js';
import { mapCleanPages } from './clean-mapper.js';
import { PagePlacer } from './placement.js';
import { PageRequests } from './requests.js';
import type { Recorder } from '../../../metrics/series.js';

export type { OracleResult } from '../../../guest/oracle.js';

export interface DestinationOptions {
  readonly listener: Listener;
  /** Refuse a source that proposes another mode, backing or guest backend than these (undefined: accept any this host can run). */
  readonly mode?: MigrationMode;
  readonly source?: BackingSourceName;
  readonly guest?: GuestBackendName;
  /** Refuse guests larger than this. */
  readonly maxMemory: number;
  /** Map clean pages (MINOR) before resuming the guest, or after it runs. */
  readonly mapClean: 'before' | 'after';
  /** How long the guest runs on after the last page is in, before the oracle pauses it (ms). */
  readonly runAfterMs: number;
  readonly timeoutMs: number;
  /** What the listener was started with (it does the TLS); kept for the report. */
  readonly security?: Security;
  /** A link lost in post-copy waits this long (ms) for the source to resume before the guest is given up. Default 60 s. */
  readonly recoverTimeoutMs?: number;
  readonly onEvent?: (e: DestinationEvent) => void;
  /** Samples pages arriving by how they travelled and link bytes over time (events come from onEvent). */
  readonly recorder?: Recorder;
}

export type DestinationEvent =
  | { phase: 'listening'; host: string; port: number }
  | { phase: 'refused'; peer: string; reason: string }
  | { phase: 'accepted'; peer: string; hello: Hello }
  | { phase: 'state'; from: SessionState; to: SessionState }
  | { phase: 'round'; round: number; pages: number }
  | { phase: 'resumed'; stalePages: number; downtimeMs: number }
  | { phase: 'postcopy'; received: number; of: number }
  | { phase: 'paused'; reason: string; missingPages: number }
  | { phase: 'recovered'; needed: number; pausedMs: number; requests: number }
  | { phase: 'complete' }
  | { phase: 'checked'; lostWrites: number };

/** The source failed after the guest resumed here on partial memory: its workers are blocked in faults that will not be answered. */
export class FrozenGuestError extends PostcopyError {
  override name = 'FrozenGuestError';
  constructor(detail: string, readonly missingPages: number) {
    super(
      'ERR_SOURCE_LOST',
      `${detail}; ${missingPages} page(s) never arrived, so the guest stays paused (its workers wait on those pages) and will not run on partial memory`,
      'The guest cannot be recovered here; restart the migration from a source that still has it',
    );
  }
}

export interface DestinationReport {
  readonly guest: GuestBackendName;
  /** How both connections were secured. */
  readonly security: string;
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
  /** Allocating and mapping the memory before accepting (see populateForArrivals), ms. */
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
  readonly latencyMs: { count: number; p50: number; p99: number; max: number; log2Us: number[] };
  /** Per worker, the sum of those waits (ms). */
  readonly blocktimeMs: readonly number[];
  /**
   * The longest gap in any worker's own progress (the guest's clock) from the source's
   * pause on: the blackout, post-copy waits, and the run after; ms. NaN if the clocks
   * could not be lined up.
   */
  readonly guestStallMs: number;
  /** The session's states with their times (ms since the first). */
  readonly timeline: readonly { state: SessionState; atMs: number }[];
  /** Post-copy pauses (link lost) and recoveries: how many, how long paused in all. */
  readonly recovery: { readonly pauses: number; readonly pausedMs: number };
  readonly states: readonly WorkerState[];
  readonly oracle: OracleResult;
}

const ms = (ns: bigint) => Number(ns) / 1e6;

export async function runDestination(o: DestinationOptions): Promise<DestinationReport> {
  o.onEvent?.({ phase: 'listening', ...o.listener.address });
  const accepted = await acceptSource({ ...o, onRefused: (peer, reason) => o.onEvent?.({ phase: 'refused', peer, reason }) });
  const { main, hello, uffd, guest } = accepted;
  o.onEvent?.({ phase: 'accepted', peer: main.peer, hello });
  const receiver = new Receiver(accepted, o);
  let urgent: Channel | undefined;
  let frozen = false;
  try {
    main.send(FrameType.ACCEPT, 0, encodeJson({ version: hello.version }));
    urgent = await acceptUrgent(o, hello.session);
    return await receiver.run(urgent);
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
    // A frozen guest's workers are blocked in faults: closing the userfaultfd would let
    // them run on the stale pages. Leave everything as it is; the caller ends the process.
    if (!frozen) {
      if (guest.running) await guest.pause().catch(() => undefined);
      // The fault reader blocks in epoll_wait on its own thread: stop it on every path, or it keeps the process alive.
      await receiver.stopReader().catch(() => undefined);
      receiver.placer.close();
      if (!guest.running) {
        guest.close();
        uffd.close();
      }
    }
  }
}

/** One accepted session, from precopy to the oracle. */
class Receiver {
  readonly session = new Session('destination');
  readonly placer: PagePlacer;
  readonly #requests: PageRequests;
  readonly #guest: MigratableGuest;
  readonly #uffd: Userfaultfd;
  readonly #hello: Hello;
  #main: Channel;
  #urgent: Channel | undefined;
  #pauses = 0;
  #pausedMs = 0;
  #pausedAt = 0;
  /** The link went while SWITCHOVER was being applied: pause once it is. */
  #lostInSwitch: Error | undefined;
  readonly #o: DestinationOptions;
  readonly #prepareMs: number;
  readonly #memory: { guestAddress: number; size: number };
  #reader: FaultReader | undefined;
  #readerStats: FaultReaderStats | undefined;
  readonly #rounds: { round: number; pages: number }[] = [];
  #sw: Switchover | undefined;
  #switchoverAtNs = 0n;
  #resumedAtNs = 0n;
  #completeAtNs = 0n;
  #mapCleanMs = 0;
  #clockAligned = true;
  #mapping: Promise<void> = Promise.resolve();
  #lastEvent = 0;
  /** Frames that arrive while SWITCHOVER is applied wait here. */
  #queue: { connection: 'main' | 'urgent'; frame: Frame; from: Channel }[] = [];
  readonly #finished: Promise<void>;
  #finish!: () => void;
  #fail!: (e: Error) => void;

  constructor(a: { main: Channel; hello: Hello; uffd: Userfaultfd; guest: MigratableGuest; populated: boolean; prepareMs: number }, o: DestinationOptions) {
    this.#guest = a.guest;
    this.#uffd = a.uffd;
    this.#hello = a.hello;
    this.#main = a.main;
    this.#o = o;
    this.#prepareMs = a.prepareMs;
    this.#memory = { guestAddress: a.hello.memory.guestAddress, size: a.hello.memory.size };
    this.placer = new PagePlacer(a.guest, a.uffd, a.hello.mode, a.populated);
    this.#requests = new PageRequests(a.hello.vcpus);
    this.#finished = new Promise<void>((resolve, reject) => ((this.#finish = resolve), (this.#fail = reject)));
    this.#finished.catch(() => undefined);
    this.session.onChange((e) => o.onEvent?.({ phase: 'state', from: e.from, to: e.to }));
  }

  get #unit(): number {
    return this.placer.unit;
  }

  /** Fails the session; after the switchover with pages missing, the guest is frozen. */
  #failWith = (e: Error): void => {
    const state = this.session.state;
    if (state === 'failed' || state === 'complete') return;
    // Only once the guest has run on partial memory: before go(), pausing it stops its
    // workers at the pause word before they touch a page.
    const frozen = (state === 'postcopy' || state === 'paused' || state === 'recovering') && this.placer.remaining > 0;
    const before = state === 'handshake' || state === 'precopy';
    const err = this.session.fail(
      frozen
        ? new FrozenGuestError(`post-copy failed: ${e.message}`, this.placer.remaining)
        : before
          ? new PostcopyError((e as PostcopyError).code ?? 'ERR_MIGRATION_ABORTED', `${e.message}; the migration failed before the switchover: this destination discards its copy, the guest stays with the source`)
          : e,
    );
    this.#fail(err);
  };

  /** A channel went: in post-copy the link is lost and the session pauses; otherwise it fails. */
  #linkDown = (ch: Channel, e: Error): void => {
    if (ch !== this.#main && ch !== this.#urgent) return;
    const state = this.session.state;
    if (state === 'paused' || state === 'recovering' || state === 'failed' || state === 'complete') return;
    if (!isLinkLoss(e) || state === 'precopy' || state === 'handshake') return this.#failWith(e);
    if (state === 'switching') {
      this.#lostInSwitch ??= e;
      return;
    }
    this.#pause(e);
  };

  #attach(main: Channel, urgent: Channel): void {
    this.#main = main;
    this.#urgent = urgent;
    main.onFrame((f) => this.#receive('main', f, main));
    urgent.onFrame((f) => this.#receive('urgent', f, urgent));
    for (const ch of [main, urgent]) void ch.closed.then((e) => e && this.#linkDown(ch, e));
  }

  /**
   * QEMU's postcopy-paused: drop both connections, keep everything else. Workers that touch
   * a missing page wait in their fault (its request is kept and sent again on resume); the
   * others run on. The source is expected back on the listener.
   */
  #pause(e: Error): void {
    this.session.enter('paused');
    this.#pauses++;
    this.#pausedAt = performance.now();
    this.#main.destroy();
    this.#urgent?.destroy();
    this.#urgent = undefined;
    this.#o.onEvent?.({ phase: 'paused', reason: e.message, missingPages: this.placer.remaining });
    this.#recover().catch((r: Error) => this.#failWith(r));
  }

  /** Waits on the listener for the source to resume this session; refuses anyone else meanwhile. */
  async #recover(): Promise<void> {
    const limit = this.#o.recoverTimeoutMs ?? DEFAULT_RECOVER_TIMEOUT_MS;
    const deadline = performance.now() + limit;
    const timeout = this.#o.timeoutMs;
    let last: Error | undefined;
    for (;;) {
      const left = Math.floor(deadline - performance.now());
      if (left <= 0) throw new RecoveryTimeoutError('destination', limit, last);
      let timer: NodeJS.Timeout | undefined;
      const socket = await Promise.race([
        this.#o.listener.accept(),
        new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), left))),
      ]).finally(() => clearTimeout(timer));
      if (!socket) continue;
      if (this.session.state === 'failed') return void socket.destroy();
      const ch = Channel.fromSocket(socket, { ...channelOptions('source', timeout), keepaliveMs: keepaliveFor(timeout) });
      let resumed = false;
      try {
        const f = await ch.next(Math.min(timeout || left, left));
        if (f.type !== FrameType.RESUME) throw new MigrationProtocolError(`this destination is in a paused post-copy and takes only RESUME for its session, not ${frameName(f.type)}`);
        if (parseResume(f.payload).session !== this.#hello.session) throw new MigrationProtocolError('RESUME for another session: this destination is in a paused post-copy of its own');
        resumed = true;
        this.session.enter('recovering');
        // What is still missing here is what the source must send: pages that were on the
        // wire when the link went come again; pages that arrived are not sent twice.
        const needed = new UnitBitmap(this.placer.units);
        for (let u = 0; u < this.placer.units; u++) if (!this.placer.states.present(u)) needed.set(u);
        const count = needed.count();
        ch.send(FrameType.RESUME_ACK, 0, ...encodeResumeAck(count, needed.bytes));
        const urgent = await acceptUrgent({ ...this.#o, timeoutMs: Math.min(timeout || left, left), onRefused: (peer, reason) => this.#o.onEvent?.({ phase: 'refused', peer, reason }) }, this.#hello.session);
        urgent.setIdleTimeout(timeout);
        urgent.setKeepalive(keepaliveFor(timeout));
        this.#attach(ch, urgent);
        // Requests in flight when the link went: asked again, in the order they were made.
        const asked = this.#requests.outstanding();
        for (const u of asked) urgent.send(FrameType.REQUEST, 0, encodeRequest(this.#memory.guestAddress + u * this.#unit));
        this.session.enter('postcopy');
        const pausedMs = performance.now() - this.#pausedAt;
        this.#pausedMs += pausedMs;
        this.#o.onEvent?.({ phase: 'recovered', needed: count, pausedMs, requests: asked.length });
        if (this.placer.remaining === 0) this.#complete();
        return;
      } catch (e) {
        last = e as Error;
        if (!resumed) {
          const reason = (e as Error).message;
          this.#o.onEvent?.({ phase: 'refused', peer: ch.peer, reason });
          await refuse(ch, reason);
          continue;
        }
        ch.destroy();
        if (!isLinkLoss(e)) throw e;
        // Lost again while recovering: wait for the next attempt.
        if (this.session.state === 'recovering') this.session.enter('paused');
      }
    }
  }

  async stopReader(): Promise<FaultReaderStats | undefined> {
    const r = this.#reader;
    this.#reader = undefined;
    if (r) this.#readerStats = await r.stop();
    return this.#readerStats;
  }

  async run(urgent: Channel): Promise<DestinationReport> {
    const guest = this.#guest;
    const hello = this.#hello;
    const primary = guest.backing.primary;
    // Both ends send keepalives: silence on either connection is a lost link.
    urgent.setIdleTimeout(this.#o.timeoutMs);
    urgent.setKeepalive(keepaliveFor(this.#o.timeoutMs));
    this.#main.setKeepalive(keepaliveFor(this.#o.timeoutMs));
    // Everything that takes long is done now, before the source pauses its guest: the
    // registration (the guest's mapping is touched only by the guest, and by UFFDIO_COPY in
    // MISSING mode), the fault reader, the worker threads.
    this.#uffd.register(hva(primary.address), hello.memory.size, [hello.mode === 'minor' ? 'MINOR' : 'MISSING']);
    this.#reader = await FaultReader.start(
      this.#uffd,
      { mode: hello.mode, regionStart: primary.address, pageSize: this.#unit, states: this.placer.states },
      (m) => {
        // Placed between the reader's look and now: the placement woke the worker.
        if (this.placer.states.present(m.page)) return;
        // While paused the request is only kept: it is asked again when the source resumes.
        if (this.#requests.fault(m) && this.session.state === 'postcopy') {
          try {
            this.#urgent?.send(FrameType.REQUEST, 0, encodeRequest(this.#memory.guestAddress + m.page * this.#unit));
          } catch (e) {
            if (!isLinkLoss(e)) throw e;
          }
        }
      },
      this.#failWith,
    );
    await guest.arm();
    this.#o.recorder?.watch(['pages.precopy', 'pages.background', 'pages.onDemand', 'link.receivedBytes'], () => [this.placer.precopyPages, this.#requests.backgroundPages, this.#requests.onDemandPages, this.#main.bytesReceived + urgent.bytesReceived]);
    this.session.enter('precopy');
    this.#attach(this.#main, urgent);

    await this.#finished;
    await this.#mapping;
    this.#main.expectClose();
    this.#urgent?.expectClose();
    // The source is done; the guest runs on alone.
    await sleep(this.#o.runAfterMs);
    await guest.pause();
    const faults = (await this.stopReader())!;
    this.#uffd.unregister(hva(primary.address), hello.memory.size);
    const finalStates = guest.states();
    const oracle = checkGuest(guest, finalStates);
    this.#o.onEvent?.({ phase: 'checked', lostWrites: oracle.lostWrites });
    const sw = this.#sw!;
    const t0 = this.session.history[0]?.at ?? 0;
    return {
      guest: guest.backend,
      security: describeSecurity(this.#o.security ?? PLAIN),
      mode: hello.mode,
      source: hello.source as BackingSourceName,
      unit: this.#unit,
      pages: this.placer.units,
      vcpus: hello.vcpus,
      rounds: this.#rounds,
      precopyPages: this.placer.precopyPages,
      stalePages: sw.stalePages,
      onDemandPages: this.#requests.onDemandPages,
      backgroundPages: this.#requests.backgroundPages,
      duplicatePages: this.placer.duplicatePages,
      prepareMs: this.#prepareMs,
      downtimeMs: ms(this.#resumedAtNs - sw.pausedAtNs),
      resumeMs: ms(this.#resumedAtNs - this.#switchoverAtNs),
      mapCleanMs: this.#mapCleanMs,
      postcopyMs: ms(this.#completeAtNs - this.#resumedAtNs),
      faults,
      latencyMs: this.#requests.latencySummary(),
      blocktimeMs: this.#requests.blocktimeMs,
      guestStallMs: this.#clockAligned ? Number(longestGap(finalStates)) / sw.ticksPerMs : NaN,
      timeline: this.session.history.map((e) => ({ state: e.to, atMs: e.at - t0 })),
      recovery: { pauses: this.#pauses, pausedMs: this.#pausedMs },
      states: finalStates,
      oracle,
    };
  }

  /** Every frame from the source: checked against the state, then handled. */
  #receive(connection: 'main' | 'urgent', f: Frame, from: Channel): void {
    // Frames an old connection delivered before it went are not the session's any more.
    if (from !== this.#main && from !== this.#urgent) return;
    try {
      this.session.admit(connection, f);
      if (this.session.state === 'switching' && f.type !== FrameType.ERROR) {
        this.#queue.push({ connection, frame: f, from });
        return;
      }
      this.#handle(connection, f);
    } catch (e) {
      this.#failWith(e as Error);
    }
  }

  #handle(connection: 'main' | 'urgent', f: Frame): void {
    const unit = this.#unit;
    const base = this.#memory.guestAddress;
    switch (f.type) {
      case FrameType.PAGES: {
        const { guestAddress, data } = parsePages(f.payload, unit, this.#memory);
        const first = (guestAddress - base) / unit;
        if (this.session.state === 'precopy') this.placer.precopy(first, data);
        else if (this.session.state === 'postcopy') this.#postcopyPages(first, data);
        else this.placer.duplicatePages += data.byteLength / unit; // crossed COMPLETE
        return;
      }
      case FrameType.ZERO: {
        const z = parseZero(f.payload, unit, this.#memory);
        this.placer.precopyZero((z.guestAddress - base) / unit, z.length / unit);
        return;
      }
      case FrameType.ROUND_END: {
        const r = parseRoundEnd(f.payload);
        this.#rounds.push(r);
        // Tell the source this round is in: it starts the next one (or the blackout) on an empty pipe.
        this.#main.send(FrameType.ROUND_END, 0, encodeJson({ round: r.round }));
        this.#o.onEvent?.({ phase: 'round', round: r.round, pages: r.pages });
        return;
      }
      case FrameType.SWITCHOVER: {
        this.session.enter('switching');
        this.#switchover(f).then(
          () => {
            const queued = this.#queue;
            this.#queue = [];
            for (const q of queued) this.#receive(q.connection, q.frame, q.from);
            if (this.#lostInSwitch && this.session.state === 'postcopy') this.#pause(this.#lostInSwitch);
          },
          (e: Error) => this.#failWith(e),
        );
        return;
      }
      case FrameType.CLOCK_PROBE: {
        const t1 = process.hrtime.bigint();
        const { t0 } = parseClockProbe(f.payload);
        this.#urgent?.send(FrameType.CLOCK_REPLY, 0, encodeJson({ t0: String(t0), t1: String(t1), t2: String(process.hrtime.bigint()) }));
        return;
      }
      case FrameType.ERROR:
        throw new PostcopyError('ERR_PEER', `the source failed: ${errorMessage(f.payload)}`);
      default:
        // admit() let through only the types above.
        throw new MigrationProtocolError(`unhandled frame type ${f.type} on the ${connection} connection`);
    }
  }

  async #switchover(f: Frame): Promise<void> {
    const hello = this.#hello;
    const guest = this.#guest;
    this.#switchoverAtNs = process.hrtime.bigint();
    const sw = parseSwitchover(f.payload, { workers: hello.vcpus, stateBytes: guest.stateBytes, pages: this.placer.units });
    this.#sw = sw;
    const marked = this.placer.markStale(sw.stale);
    if (marked !== sw.stalePages) throw new MigrationProtocolError(`SWITCHOVER frame: stalePages says ${sw.stalePages}, the bitmap holds ${marked}`);
    guest.load(sw.states, { resetStall: true });
    this.#clockAligned = alignClock(guest, sw.clock, sw.wallMs);
    const clean = () => mapCleanPages(this.#uffd, (u) => this.placer.host(u), this.#unit, this.placer.units, sw.stale, this.#o.mapClean === 'before' ? 0 : 512);
    if (hello.mode === 'minor' && this.#o.mapClean === 'before') this.#mapCleanMs = await clean();
    this.#requests.setWorkers(guest.go());
    this.#resumedAtNs = process.hrtime.bigint();
    this.session.enter('postcopy');
    try {
      this.#main.send(FrameType.RESUMED, 0, encodeJson({ resumedAtNs: String(this.#resumedAtNs) }));
    } catch (e) {
      // The link went during the switchover: the guest runs, post-copy pauses (see #linkDown).
      if (!isLinkLoss(e)) throw e;
    }
    this.#o.onEvent?.({ phase: 'resumed', stalePages: sw.stalePages, downtimeMs: ms(this.#resumedAtNs - sw.pausedAtNs) });
    if (hello.mode === 'minor' && this.#o.mapClean === 'after') {
      this.#mapping = clean().then((t) => void (this.#mapCleanMs = t));
      this.#mapping.catch((e: Error) => this.#failWith(e));
    }
    if (this.placer.remaining === 0) this.#complete();
  }

  #postcopyPages(first: number, data: Uint8Array): void {
    const now = performance.timeOrigin + performance.now();
    this.placer.place(first, data, (u) => this.#requests.arrived(u, now));
    if (this.placer.remaining === 0) this.#complete();
    else if (performance.now() - this.#lastEvent > 100) {
      this.#lastEvent = performance.now();
      const of = this.#sw!.stalePages;
      this.#o.onEvent?.({ phase: 'postcopy', received: of - this.placer.remaining, of });
    }
  }

  #complete(): void {
    this.#completeAtNs = process.hrtime.bigint();
    this.session.enter('complete');
    try {
      this.#main.send(FrameType.COMPLETE, 0, encodeJson({ pages: this.placer.units }));
    } catch (e) {
      // Every page is here: the guest no longer needs the source, whatever the link does.
      if (!isLinkLoss(e)) throw e;
    }
    this.#o.onEvent?.({ phase: 'complete' });
    this.#finish();
  }
}
