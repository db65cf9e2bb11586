/**
 * The source of a migration, as session states (session.ts): handshake (HELLO, ACCEPT, the
 * urgent connection), precopy (precopy.ts: rounds from the guest's dirty tracker while it
 * runs), switching (pause the guest, send its state and the stale set: the blackout),
 * post-copy (postcopy-sender.ts: requested pages at once on the urgent connection, the
 * rest in a background stream), complete (the destination has every page).
 *
 * Knows nothing of the guest backend or the tracker: both come through their interfaces.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { PostcopyError } from '../../../errors.js';
import type { GuestBackendName, GuestShape, MigratableGuest, WorkerState } from '../../../guest/guest.js';
import { createGuest, defaultTracker, programOf } from '../../../guest/open.js';
import type { TrackerName } from '../../../tracking/tracker.js';
import { Channel } from '../../../transport/channel.js';
import type { Frame } from '../../../transport/frame.js';
import {
  FrameType,
  type Hello,
  MAX_PAYLOAD,
  MigrationProtocolError,
  type MigrationMode,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  encodeJson,
  errorMessage,
  frameName,
  isFrameType,
  parseAccept,
  parseComplete,
  parseRequest,
  parseResumed,
  parseRoundAck,
} from '../protocol.js';
import { Session, type SessionState } from '../session.js';
import { UnitBitmap } from '../stale-set.js';
import { encodeSwitchover } from '../switchover.js';
import { PostcopySender } from './postcopy-sender.js';
import type { Recorder } from '../../../metrics/series.js';
import { type RoundFigures, RUN_BYTES, runPrecopy, sendRun, type SwitchoverPolicy, type SwitchoverReason } from './precopy.js';

export type { RoundFigures, SwitchoverPolicy } from './precopy.js';

export interface SourceOptions {
  readonly host: string;
  readonly port: number;
  readonly shape: GuestShape;
  readonly guest: GuestBackendName;
  /** The dirty tracker (default: the guest backend's own: KVM's dirty log, or uffd-wp). */
  readonly tracking?: TrackerName;
  readonly mode: MigrationMode;
  readonly policy: SwitchoverPolicy;
  /** Let the guest run this long before migrating (ms). */
  readonly warmupMs: number;
  /** Post-copy background stream limit, bytes/s (0: none). Requested pages are never limited. */
  readonly bandwidth: number;
  /** A peer silent this long (ms) is an error. */
  readonly timeoutMs: number;
  readonly onEvent?: (e: SourceEvent) => void;
  /** Samples link bytes and post-copy pages sent over time (events come from onEvent). */
  readonly recorder?: Recorder;
}

export type SourceEvent =
  | { phase: 'connected'; host: string; port: number }
  | { phase: 'state'; from: SessionState; to: SessionState }
  | { phase: 'round'; round: number; pages: number; ms: number }
  | { phase: 'switchover'; stalePages: number }
  | { phase: 'postcopy'; sent: number; of: number }
  | { phase: 'complete' };

export interface SourceReport {
  readonly guest: GuestBackendName;
  readonly tracker: TrackerName;
  readonly unit: number;
  readonly pages: number;
  readonly rounds: readonly RoundFigures[];
  readonly precopyPages: number;
  /** Of those, pages sent as ZERO runs: never written by the guest, so neither read nor sent. */
  readonly zeroPages: number;
  readonly stalePages: number;
  readonly backgroundPages: number;
  readonly onDemandPages: number;
  /** Requests for pages the background stream had already sent (they crossed on the wire). */
  readonly lateRequests: number;
  /** First round's bytes ÷ its time: the stream throughput, MB/s (1e6). */
  readonly streamMBps: number;
  /** Source pause → destination resume (CLOCK_MONOTONIC: meaningful when both run on one machine). */
  readonly downtimeMs: number;
  /** The source's part of the downtime: asking the guest to pause → all stopped; stopped → SWITCHOVER written. */
  readonly blackout: { readonly pauseMs: number; readonly stateMs: number };
  /** Start of precopy → COMPLETE. */
  readonly totalMs: number;
  /** Start of precopy → pause. */
  readonly precopyMs: number;
  /** What ended precopy, and how many units the last look found dirty. */
  readonly switchover: { readonly reason: SwitchoverReason; readonly lastDirty: number };
  /** The guest's own progress at the pause. */
  readonly states: readonly WorkerState[];
  /** The guest clock's rate (TSC kHz for KVM; 1e6 ns/ms for threads). */
  readonly tscKhz: number;
  /** The session's states with their times (ms since the first). */
  readonly timeline: readonly { state: SessionState; atMs: number }[];
}

/** Keep at most this much queued in the socket before waiting for it to drain. */
const HIGH_WATER = 2 ** 20;

const ms = (ns: bigint) => Number(ns) / 1e6;

/** A promise that rejects with ERR_PEER_SILENT after `timeoutMs`, and its cancel. */
function silence(timeoutMs: number, what: string): { promise: Promise<never>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PostcopyError('ERR_PEER_SILENT', `${what} within ${timeoutMs} ms`)), timeoutMs);
  });
  promise.catch(() => undefined);
  return { promise, cancel: () => clearTimeout(timer) };
}

export async function runSource(o: SourceOptions): Promise<SourceReport> {
  const tracking = o.tracking ?? defaultTracker(o.guest);
  const guest = createGuest(o.guest, o.shape, { tracking });
  const session = new Session('source');
  session.onChange((e) => o.onEvent?.({ phase: 'state', from: e.from, to: e.to }));
  let main: Channel | undefined;
  let urgent: Channel | undefined;
  try {
    await guest.run();
    if (o.warmupMs > 0) await sleep(o.warmupMs);
    const channelOptions = {
      isKnownType: isFrameType,
      maxPayload: MAX_PAYLOAD,
      connectRemedy: `Is \`postcopy migrate receive --listen ${o.host}:${o.port}\` running there?`,
    };
    main = await Channel.connect(o.host, o.port, { ...channelOptions, name: 'destination', idleTimeoutMs: o.timeoutMs });
    const id = randomBytes(12).toString('hex');
    const hello: Hello = {
      magic: PROTOCOL_MAGIC,
      version: PROTOCOL_VERSION,
      pageSize: guest.unit,
      memory: { guestAddress: o.shape.guestAddress, size: o.shape.size },
      vcpus: o.shape.vcpus,
      mode: o.mode,
      source: o.shape.source,
      guest: guest.backend,
      program: programOf(guest.backend),
      stateBytes: guest.stateBytes,
      session: id,
    };
    main.send(FrameType.HELLO, 0, encodeJson(hello));
    const answer = await main.next(o.timeoutMs);
    session.admit('main', answer);
    if (answer.type === FrameType.ERROR) throw new PostcopyError('ERR_REFUSED', `the destination refused the migration: ${errorMessage(answer.payload)}`);
    parseAccept(answer.payload);
    urgent = await Channel.connect(o.host, o.port, { ...channelOptions, name: 'destination (urgent)', idleTimeoutMs: 0 });
    urgent.send(FrameType.URGENT, 0, encodeJson({ session: id }));
    o.onEvent?.({ phase: 'connected', host: o.host, port: o.port });
    return await migrate(guest, tracking, session, main, urgent, o);
  } catch (e) {
    session.fail(e as Error);
    main?.destroy();
    urgent?.destroy();
    if (guest.running) await guest.pause().catch(() => undefined);
    throw e;
  } finally {
    await Promise.all([main?.close(), urgent?.close()]);
    if (!guest.running) guest.close();
  }
}

async function migrate(guest: MigratableGuest, tracking: TrackerName, session: Session, main: Channel, urgent: Channel, o: SourceOptions): Promise<SourceReport> {
  const tracker = guest.tracker!;
  const unit = guest.unit;
  const units = o.shape.size / unit;
  const memory = guest.backing.primary.bytes();
  const base = o.shape.guestAddress;
  const unitsPerRun = Math.max(1, RUN_BYTES / unit);

  // What the destination says, whenever it says it: checked against the state first.
  let resumedAtNs: bigint | undefined;
  let acked = 0;
  let onAck: (() => void) | undefined;
  let sender: PostcopySender | undefined;
  let complete!: () => void;
  let failed!: (e: Error) => void;
  const done = new Promise<void>((resolve, reject) => ((complete = resolve), (failed = reject)));
  done.catch(() => undefined);
  const fail = (e: Error) => failed(session.fail(e));
  const receive = (connection: 'main' | 'urgent') => (f: Frame) => {
    try {
      session.admit(connection, f);
      switch (f.type) {
        case FrameType.ROUND_END:
          acked = parseRoundAck(f.payload).round;
          return onAck?.();
        case FrameType.RESUMED:
          resumedAtNs = parseResumed(f.payload).resumedAtNs;
          return;
        case FrameType.COMPLETE:
          parseComplete(f.payload, units);
          if (sender && sender.remaining > 0) throw new MigrationProtocolError(`COMPLETE while ${sender.remaining} stale page(s) were never sent`);
          session.enter('complete');
          return complete();
        case FrameType.REQUEST: {
          const u = (parseRequest(f.payload, unit, { guestAddress: base, size: o.shape.size }) - base) / unit;
          if (sender?.request(u)) sendRun(urgent, memory, unit, base, u, 1);
          return;
        }
        case FrameType.ERROR:
          throw new PostcopyError('ERR_PEER', `the destination failed: ${errorMessage(f.payload)}`);
        default:
          throw new MigrationProtocolError(`unhandled ${frameName(f.type)} frame on the ${connection} connection`);
      }
    } catch (e) {
      fail(e as Error);
    }
  };
  main.onFrame(receive('main'));
  urgent.onFrame(receive('urgent'));
  void main.closed.then((e) => e && fail(e));
  void urgent.closed.then((e) => e && fail(e));
  // Precopy only sends: a destination that goes quiet shows up as a send buffer that does not drain.
  main.setIdleTimeout(0);

  const drain = async (c: Channel) => {
    if (c.writableLength <= HIGH_WATER) return;
    const s = silence(o.timeoutMs, 'the destination has not read anything');
    try {
      await Promise.race([c.drain(), s.promise, done]);
    } finally {
      s.cancel();
    }
  };
  const roundTaken = async (round: number) => {
    if (acked >= round) return;
    const s = silence(o.timeoutMs, `the destination did not take in precopy round ${round}`);
    try {
      await Promise.race([new Promise<void>((resolve) => (onAck = () => acked >= round && resolve())), done, s.promise]);
    } finally {
      s.cancel();
      onAck = undefined;
    }
  };

  o.recorder?.watch(['link.sentBytes', 'pages.background', 'pages.onDemand'], () => [main.bytesSent + urgent.bytesSent, sender?.backgroundPages ?? 0, sender?.onDemandPages ?? 0]);
  // Precopy.
  session.enter('precopy');
  const t0 = process.hrtime.bigint();
  const pre = await runPrecopy({
    main,
    backing: guest.backing,
    tracker,
    unit,
    guestAddress: base,
    policy: o.policy,
    roundTaken,
    drain: () => drain(main),
    onRound: (r) => o.onEvent?.({ phase: 'round', ...r }),
  });

  // Blackout: pause, read the state and the last dirty set, and send them with what the
  // last look collected and precopy did not send.
  session.enter('switching');
  const pausedAtNs = process.hrtime.bigint();
  await guest.pause();
  const stoppedAtNs = process.hrtime.bigint();
  const states = guest.save();
  const { ticks, ticksPerMs } = guest.clock();
  const stale = UnitBitmap.fromDirtyLog(tracker.collect(), tracker.pages, unit / 4096);
  stale.or(pre.unsent);
  const stalePages = stale.count();
  // (A copy of the bitmap: the socket may still hold the parts when post-copy clears bits of `stale`.)
  main.send(FrameType.SWITCHOVER, 0, ...encodeSwitchover({ pausedAtNs, clock: ticks, ticksPerMs, wallMs: Date.now(), states, stale: stale.bytes.slice(), stalePages }));
  const sentAtNs = process.hrtime.bigint();
  sender = new PostcopySender(stale, stalePages);
  session.enter('postcopy');
  // The main connection stays without an idle timeout: in post-copy the destination says
  // nothing on it until COMPLETE (its requests come on the urgent one), and a slow
  // background stream takes longer than any timeout. A destination that stops reading
  // shows up in drain(); one that is gone closes the connection; COMPLETE is awaited
  // with the timeout once the stream is sent.
  o.onEvent?.({ phase: 'switchover', stalePages });

  // Post-copy: the background stream, with requests let in between two frames.
  const started = performance.now();
  let lastEvent = 0;
  for (let run = sender.nextRun(unitsPerRun); run; run = sender.nextRun(unitsPerRun)) {
    sendRun(main, memory, unit, base, run[0], run[1]);
    await drain(main);
    if (o.bandwidth > 0) {
      const due = started + ((sender.backgroundPages * unit) / o.bandwidth) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
    }
    await new Promise((r) => setImmediate(r));
    if (session.state === 'failed') break;
    if (performance.now() - lastEvent > 100) {
      lastEvent = performance.now();
      o.onEvent?.({ phase: 'postcopy', sent: stalePages - sender.remaining, of: stalePages });
    }
  }
  o.onEvent?.({ phase: 'postcopy', sent: stalePages - sender.remaining, of: stalePages });
  const s = silence(o.timeoutMs, 'the destination did not confirm it has every page');
  try {
    await Promise.race([done, s.promise]);
  } finally {
    s.cancel();
  }
  const endNs = process.hrtime.bigint();
  main.expectClose();
  urgent.expectClose();
  o.onEvent?.({ phase: 'complete' });
  const h0 = session.history[0]?.at ?? 0;
  return {
    guest: guest.backend,
    tracker: tracking,
    unit,
    pages: units,
    rounds: pre.rounds,
    precopyPages: pre.precopyPages,
    zeroPages: pre.zeroPages,
    stalePages,
    backgroundPages: sender.backgroundPages,
    onDemandPages: sender.onDemandPages,
    lateRequests: sender.lateRequests,
    streamMBps: pre.firstRoundNs > 0n ? pre.firstRoundBytes / (Number(pre.firstRoundNs) / 1e9) / 1e6 : 0,
    downtimeMs: resumedAtNs !== undefined ? ms(resumedAtNs - pausedAtNs) : NaN,
    blackout: { pauseMs: ms(stoppedAtNs - pausedAtNs), stateMs: ms(sentAtNs - stoppedAtNs) },
    totalMs: ms(endNs - t0),
    precopyMs: ms(pausedAtNs - t0),
    switchover: { reason: pre.reason, lastDirty: pre.lastDirty },
    states: states.map((st) => guest.decodeState(st)),
    tscKhz: ticksPerMs,
    timeline: session.history.map((e) => ({ state: e.to, atMs: e.at - h0 })),
  };
}
