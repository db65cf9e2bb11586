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
import { checkGuest, type OracleResult } from '../../../guest/oracle.js';
import { type ClockSample, estimateOffset } from '../../../transport/clock-offset.js';

/** Clock probes before precopy, one after another: the tightest of them bounds the error. */
const CLOCK_PROBES = 8;
import type { TrackerName } from '../../../tracking/tracker.js';
import { Channel, type ConnectOptions } from '../../../transport/channel.js';
import { describeSecurity, PLAIN, type Security } from '../../../transport/security.js';
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
  parseClockReply,
  parseResumeAck,
  parseRoundAck,
} from '../protocol.js';
import { backoffMs, DEFAULT_RECOVER_TIMEOUT_MS, isLinkLoss, keepaliveFor, RecoveryTimeoutError } from '../link-loss.js';
import { Session, type SessionState } from '../session.js';
import { UnitBitmap } from '../stale-set.js';
import { encodeSwitchover } from '../switchover.js';
import { PostcopySender } from './postcopy-sender.js';
import { Throttle } from './throttle.js';
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
  /** Plain TCP (default) or TLS 1.3 on both connections. */
  readonly security?: Security;
  /** A link lost in post-copy is re-made for this long (ms) before the migration fails. Default 60 s. */
  readonly recoverTimeoutMs?: number;
  /** Called once with a function that makes a paused source retry at once (`postcopy migrate recover`). */
  readonly onRecoverRequest?: (retryNow: () => void) => void;
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
  | { phase: 'paused'; reason: string }
  | { phase: 'retry'; attempt: number; inMs: number; reason: string }
  | { phase: 'recovered'; attempt: number; needed: number; pausedMs: number }
  | { phase: 'complete' };

export interface SourceReport {
  readonly guest: GuestBackendName;
  /** How both connections were secured. */
  readonly security: string;
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
  /** Source pause → destination resume, the destination's clock put on this one's with `clock` (± its errorMs). */
  readonly downtimeMs: number;
  /** The destination's clock minus this one's, measured on the idle urgent connection, and the bound of the error (half the best round trip). */
  readonly clock: { readonly offsetMs: number; readonly errorMs: number; readonly samples: number } | undefined;
  /** The source's part of the downtime: asking the guest to pause → all stopped; stopped → SWITCHOVER written. */
  readonly blackout: { readonly pauseMs: number; readonly stateMs: number };
  /** Start of precopy → COMPLETE. */
  readonly totalMs: number;
  /** Start of precopy → pause. */
  readonly precopyMs: number;
  /** What ended precopy, and how many units the last look found dirty. */
  readonly switchover: { readonly reason: SwitchoverReason; readonly lastDirty: number; readonly throttlePercent: number };
  /** The guest's own progress at the pause. */
  readonly states: readonly WorkerState[];
  /** The guest clock's rate (TSC kHz for KVM; 1e6 ns/ms for threads). */
  readonly tscKhz: number;
  /** The session's states with their times (ms since the first). */
  readonly timeline: readonly { state: SessionState; atMs: number }[];
  /** Post-copy pauses (link lost) and recoveries: how many, how long paused in all, pages sent again. */
  readonly recovery: { readonly pauses: number; readonly pausedMs: number; readonly resentPages: number };
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
      security: o.security ?? PLAIN,
    };
    main = await Channel.connect(o.host, o.port, { ...channelOptions, name: 'destination', idleTimeoutMs: o.timeoutMs, keepaliveMs: keepaliveFor(o.timeoutMs) });
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
    const answer = await main.next(o.timeoutMs).catch((e: unknown) => {
      // A TLS listener drops a plain peer in its handshake, before any frame: say what that likely means.
      if ((o.security ?? PLAIN).kind === 'plain' && (e as { code?: string }).code === 'ERR_PEER_CLOSED') {
        throw new PostcopyError('ERR_REFUSED', `the destination closed the connection without answering HELLO`, 'If it was started with --psk-file or --tls-*, give this side the same; else see its output');
      }
      throw e;
    });
    session.admit('main', answer);
    if (answer.type === FrameType.ERROR) throw new PostcopyError('ERR_REFUSED', `the destination refused the migration: ${errorMessage(answer.payload)}`);
    parseAccept(answer.payload);
    urgent = await Channel.connect(o.host, o.port, { ...channelOptions, name: 'destination (urgent)', idleTimeoutMs: 0, keepaliveMs: keepaliveFor(o.timeoutMs) });
    urgent.send(FrameType.URGENT, 0, encodeJson({ session: id }));
    o.onEvent?.({ phase: 'connected', host: o.host, port: o.port });
    const links = { main, urgent };
    try {
      return await migrate(guest, tracking, session, links, id, channelOptions, o);
    } finally {
      // Recovery may have replaced them: the finally below closes the last ones.
      main = links.main;
      urgent = links.urgent;
    }
  } catch (e) {
    // Where the migration was when it failed (the session may have failed already, from a channel's handler).
    const stage = session.state === 'failed' ? (session.history.at(-1)?.from ?? 'handshake') : session.state;
    session.fail(e as Error);
    main?.destroy();
    urgent?.destroy();
    // Lost before the switchover: the guest never left, so it runs on here (QEMU's source
    // resumes too). Shown, not assumed: it must make progress after the failure and its
    // memory must check clean.
    if ((stage === 'precopy' || (stage === 'handshake' && main)) && guest.running) throw await keptRunning(guest, e as Error, stage);
    if (guest.running) await guest.pause().catch(() => undefined);
    throw e;
  } finally {
    await Promise.all([main?.close(), urgent?.close()]);
    if (!guest.running) guest.close();
  }
}

/** A migration that failed before the switchover, with what the source's guest did after. */
export class MigrationAbortedError extends PostcopyError {
  override name = 'MigrationAbortedError';
  constructor(cause: Error, readonly ranOn: boolean, readonly oracle: OracleResult, stage: SessionState) {
    super(
      'ERR_MIGRATION_ABORTED',
      `the migration failed before the switchover (in ${stage}): ${cause.message}; the guest ${ranOn ? 'ran on here after the failure' : 'did NOT run on here'}, and its memory checks ${oracle.lostWrites === 0 && oracle.guestMismatches === 0 ? `clean (${oracle.checkedPages} pages)` : `with ${oracle.lostWrites} lost write(s)`}; the destination discards its copy`,
      'Fix the link or the destination and migrate again',
    );
    this.cause = cause;
  }
}

/** Lets the guest run on for a moment after a precopy failure, then pauses it and checks it. */
async function keptRunning(guest: MigratableGuest, cause: Error, stage: SessionState): Promise<MigrationAbortedError> {
  const at = guest.clock().ticks;
  await sleep(200);
  await guest.pause();
  const states = guest.states();
  return new MigrationAbortedError(cause, states.some((st) => st.lastTsc > at), checkGuest(guest, states), stage);
}


interface Links {
  main: Channel;
  urgent: Channel;
}

type ChannelBase = Pick<ConnectOptions, 'isKnownType' | 'maxPayload' | 'connectRemedy' | 'security'>;

async function migrate(guest: MigratableGuest, tracking: TrackerName, session: Session, links: Links, id: string, channelOptions: ChannelBase, o: SourceOptions): Promise<SourceReport> {
  let { main } = links;
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
  // In post-copy the guest lives on both hosts: a lost link pauses (and recovery is tried),
  // anything else fails. `lost` wakes the post-copy stream when its links go.
  let lost!: Promise<never>;
  let loseLinks!: (e: Error) => void;
  const newGeneration = () => {
    lost = new Promise<never>((_, reject) => (loseLinks = reject));
    lost.catch(() => undefined);
  };
  newGeneration();
  let pauses = 0;
  let pausedMs = 0;
  let pausedAt = 0;
  const pause = (e: Error) => {
    session.enter('paused');
    pauses++;
    pausedAt = performance.now();
    links.main.destroy();
    links.urgent.destroy();
    o.onEvent?.({ phase: 'paused', reason: e.message });
    loseLinks(e);
  };
  const linkDown = (e: Error) => {
    const state = session.state;
    if (state === 'failed' || state === 'complete' || state === 'paused' || state === 'recovering') return;
    if ((state === 'switching' || state === 'postcopy') && isLinkLoss(e)) return pause(e);
    fail(e);
  };
  const receive = (connection: 'main' | 'urgent', ch: Channel) => (f: Frame) => {
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
          if (sender?.request(u)) sendRun(links.urgent, memory, unit, base, u, 1);
          return;
        }
        case FrameType.CLOCK_REPLY: {
          const r = parseClockReply(f.payload);
          clockSamples.push({ ...r, t3: process.hrtime.bigint() });
          return onReply?.();
        }
        case FrameType.ERROR:
          throw new PostcopyError('ERR_PEER', `the destination failed: ${errorMessage(f.payload)}`);
        default:
          throw new MigrationProtocolError(`unhandled ${frameName(f.type)} frame on the ${connection} connection`);
      }
    } catch (e) {
      // Only the current links speak for the session: an old one's last gasp is not news.
      if (ch === links.main || ch === links.urgent) linkDown(e as Error);
    }
  };
  const attach = (m: Channel, u: Channel) => {
    m.onFrame(receive('main', m));
    u.onFrame(receive('urgent', u));
    for (const ch of [m, u]) void ch.closed.then((e) => e && (ch === links.main || ch === links.urgent) && linkDown(e));
  };
  attach(links.main, links.urgent);
  // The two hosts' clocks, before precopy while both sides are idle (a destination busy
  // placing pages answers late, and the wait would widen the bound): probes one at a time
  // on the urgent connection.
  const clockSamples: ClockSample[] = [];
  let onReply: (() => void) | undefined;
  for (let i = 0; i < CLOCK_PROBES; i++) {
    const replied = new Promise<void>((resolve) => (onReply = resolve));
    links.urgent.send(FrameType.CLOCK_PROBE, 0, encodeJson({ t0: String(process.hrtime.bigint()) }));
    const s = silence(o.timeoutMs || 10_000, 'the destination did not answer a clock probe');
    try {
      await Promise.race([replied, s.promise, done]);
    } finally {
      s.cancel();
    }
  }
  onReply = undefined;
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

  o.recorder?.watch(['link.sentBytes', 'pages.background', 'pages.onDemand'], () => [links.main.bytesSent + links.urgent.bytesSent, sender?.backgroundPages ?? 0, sender?.onDemandPages ?? 0]);
  // Precopy.
  session.enter('precopy');
  const throttle = o.policy.autoConverge ? new Throttle(guest) : undefined;
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
    ...(throttle ? { throttle: () => throttle.raise() } : {}),
  }).finally(() => throttle?.stop());

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
  // From now on the destination is quiet on both connections until COMPLETE, but for its
  // keepalives and requests: silence is a lost link, and a lost link pauses, not fails.
  links.main.setIdleTimeout(o.timeoutMs);
  links.urgent.setIdleTimeout(o.timeoutMs);
  o.onEvent?.({ phase: 'switchover', stalePages });

  // Post-copy: the background stream, with requests let in between two frames; after a
  // lost link, recovery, and the stream goes on with what the destination still needs.
  let retryNow: (() => void) | undefined;
  o.onRecoverRequest?.(() => retryNow?.());
  const started = performance.now();
  let lastEvent = 0;
  const stream = async () => {
    for (let run = sender!.nextRun(unitsPerRun); run; run = sender!.nextRun(unitsPerRun)) {
      sendRun(links.main, memory, unit, base, run[0], run[1]);
      await Promise.race([drain(links.main), lost]);
      if (o.bandwidth > 0) {
        const due = started + ((sender!.backgroundPages * unit) / o.bandwidth) * 1000;
        const wait = due - performance.now();
        if (wait > 0) await Promise.race([sleep(wait), lost]);
      }
      await Promise.race([new Promise((r) => setImmediate(r)), lost]);
      if (session.state === 'failed') throw session.error;
      if (performance.now() - lastEvent > 100) {
        lastEvent = performance.now();
        o.onEvent?.({ phase: 'postcopy', sent: stalePages - sender!.remaining, of: stalePages });
      }
    }
    o.onEvent?.({ phase: 'postcopy', sent: stalePages - sender!.remaining, of: stalePages });
    const s = silence(o.timeoutMs, 'the destination did not confirm it has every page');
    try {
      await Promise.race([done, s.promise, lost]);
    } finally {
      s.cancel();
    }
  };
  const recover = async () => {
    const limit = o.recoverTimeoutMs ?? DEFAULT_RECOVER_TIMEOUT_MS;
    const deadline = performance.now() + limit;
    let last: Error | undefined;
    for (let n = 1; ; n++) {
      const left = Math.floor(deadline - performance.now());
      if (left <= 0) throw new RecoveryTimeoutError('source', limit, last);
      let m: Channel | undefined;
      let u: Channel | undefined;
      try {
        const options = { ...channelOptions, idleTimeoutMs: o.timeoutMs, keepaliveMs: keepaliveFor(o.timeoutMs), connectTimeoutMs: Math.max(1, Math.min(o.timeoutMs || left, left)) };
        m = await Channel.connect(o.host, o.port, { ...options, name: 'destination' });
        session.enter('recovering');
        m.send(FrameType.RESUME, 0, encodeJson({ session: id, attempt: n }));
        const ack = await m.next(Math.min(o.timeoutMs || left, left));
        session.admit('main', ack);
        if (ack.type === FrameType.ERROR) throw new PostcopyError('ERR_REFUSED', `the destination refused to resume post-copy: ${errorMessage(ack.payload)}`);
        const need = parseResumeAck(ack.payload, units);
        const needed = new UnitBitmap(units, need.bitmap);
        if (needed.count() !== need.needed) throw new MigrationProtocolError(`RESUME_ACK frame: needed says ${need.needed}, the bitmap holds ${needed.count()}`);
        u = await Channel.connect(o.host, o.port, { ...options, name: 'destination (urgent)' });
        u.send(FrameType.URGENT, 0, encodeJson({ session: id }));
        links.main = m;
        links.urgent = u;
        newGeneration();
        sender!.resume(needed, need.needed);
        attach(m, u);
        session.enter('postcopy');
        const ms_ = performance.now() - pausedAt;
        pausedMs += ms_;
        o.onEvent?.({ phase: 'recovered', attempt: n, needed: need.needed, pausedMs: ms_ });
        return;
      } catch (e) {
        m?.destroy();
        u?.destroy();
        if (!isLinkLoss(e) || session.state === 'failed') throw e;
        last = e as Error;
        if (session.state === 'recovering') session.enter('paused');
        const wait = Math.min(backoffMs(n), Math.max(0, deadline - performance.now()));
        o.onEvent?.({ phase: 'retry', attempt: n, inMs: wait, reason: last.message });
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          retryNow = () => (clearTimeout(t), resolve());
        });
        retryNow = undefined;
      }
    }
  };
  for (;;) {
    try {
      await stream();
      break;
    } catch (e) {
      if (session.state === 'failed') throw session.error ?? e;
      if (session.state !== 'paused') {
        if (!isLinkLoss(e)) throw e;
        pause(e as Error);
      }
      try {
        await recover();
      } catch (r) {
        throw session.fail(r as Error);
      }
    }
  }
  const endNs = process.hrtime.bigint();
  const clock = clockSamples.length > 0 ? estimateOffset(clockSamples) : undefined;
  links.main.expectClose();
  links.urgent.expectClose();
  o.onEvent?.({ phase: 'complete' });
  const h0 = session.history[0]?.at ?? 0;
  return {
    guest: guest.backend,
    security: describeSecurity(o.security ?? PLAIN),
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
    downtimeMs: resumedAtNs !== undefined ? ms(resumedAtNs - (clock?.offsetNs ?? 0n) - pausedAtNs) : NaN,
    clock: clock ? { offsetMs: ms(clock.offsetNs), errorMs: ms(clock.errorNs), samples: clock.samples } : undefined,
    blackout: { pauseMs: ms(stoppedAtNs - pausedAtNs), stateMs: ms(sentAtNs - stoppedAtNs) },
    totalMs: ms(endNs - t0),
    precopyMs: ms(pausedAtNs - t0),
    switchover: { reason: pre.reason, lastDirty: pre.lastDirty, throttlePercent: throttle?.percent ?? 0 },
    states: states.map((st) => guest.decodeState(st)),
    tscKhz: ticksPerMs,
    timeline: session.history.map((e) => ({ state: e.to, atMs: e.at - h0 })),
    recovery: { pauses, pausedMs, resentPages: sender.resentPages },
  };
}
