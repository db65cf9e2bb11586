/**
 * The source of a migration: runs the guest, streams its memory while it runs (precopy,
 * rounds driven by KVM's dirty log), pauses it, sends the vCPUs' state and the stale set
 * (blackout), then serves post-copy: pages a destination vCPU waits for at once on the
 * urgent connection, the rest in a background stream that continues after the last
 * requested page. Finishes when the destination says it has every page.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { PostcopyError } from '../../errors.js';
import type { Kvm } from '../../kvm/system.js';
import { Channel } from '../../transport/channel.js';
import { type Frame } from '../../transport/frame.js';
import { MIGRATE_PROGRAM, type MigrateState, migrateState } from '../../kvm/guest/migrate-program.js';
import { unpackRegs } from '../../kvm/x86/regs.js';
import { GUEST_PAGE, MigrationGuest, type GuestShape } from './guest.js';
import {
  FrameType,
  type Hello,
  MAX_PAYLOAD,
  MigrationProtocolError,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  encodeJson,
  errorMessage,
  frameName,
  isFrameType,
  encodeZero,
  pagesHeader,
  parseRequest,
  type MigrationMode,
} from './protocol.js';
import { UnitBitmap } from './stale-set.js';
import type { Backing } from '../../memory/backing.js';
import { encodeSwitchover } from './switchover.js';

/** When precopy stops and post-copy starts. */
export interface SwitchoverPolicy {
  /** Right after the first round. */
  readonly postcopyNow: boolean;
  /** Once precopy has run this long (ms), whatever the dirty set. */
  readonly postcopyAfterMs: number | undefined;
  /** At most this many rounds. */
  readonly maxRounds: number;
  /** As soon as a round would send no more than this many pages. */
  readonly maxStalePages: number;
}

export interface SourceOptions {
  readonly host: string;
  readonly port: number;
  readonly shape: GuestShape;
  readonly mode: MigrationMode;
  readonly policy: SwitchoverPolicy;
  /** Let the guest run this long before migrating (ms). */
  readonly warmupMs: number;
  /** Post-copy background stream limit, bytes/s (0: none). Requested pages are never limited. */
  readonly bandwidth: number;
  /** A peer silent this long (ms) is an error. */
  readonly timeoutMs: number;
  readonly onEvent?: (e: SourceEvent) => void;
}

export type SourceEvent =
  | { phase: 'connected'; host: string; port: number }
  | { phase: 'round'; round: number; pages: number; ms: number }
  | { phase: 'switchover'; stalePages: number }
  | { phase: 'postcopy'; sent: number; of: number }
  | { phase: 'complete' };

export interface RoundFigures {
  readonly round: number;
  readonly pages: number;
  readonly ms: number;
}

export interface SourceReport {
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
  /** The source's part of the downtime: asking the vCPUs to pause → all stopped; stopped → SWITCHOVER written. */
  readonly blackout: { readonly pauseMs: number; readonly stateMs: number };
  /** Start of precopy → COMPLETE. */
  readonly totalMs: number;
  /** Start of precopy → pause. */
  readonly precopyMs: number;
  /** The guest's own progress at the pause. */
  readonly states: readonly MigrateState[];
  readonly tscKhz: number;
}

/**
 * Backing.nextData for offsets that only grow within a round: one SEEK_DATA per hole, not
 * one per run inside it (the kernel scans the whole hole each time). A page that gains
 * data after the answer was written after the round's dirty-log clear: the next round
 * sends it.
 */
class HoleCursor {
  #from = 0;
  #data = 0;
  constructor(private readonly backing: Backing) {}

  nextData(offset: number): number {
    if (offset >= this.#from && offset < this.#data) return this.#data;
    this.#from = offset;
    this.#data = this.backing.nextData(offset);
    return this.#data;
  }
}

/** Frames at most this long in precopy and in the background stream. */
const RUN_BYTES = 256 * 1024;
/** Keep at most this much queued in the socket before waiting for it to drain. */
const HIGH_WATER = 2 ** 20;

const ms = (ns: bigint) => Number(ns) / 1e6;

export async function runSource(kvm: Kvm, o: SourceOptions): Promise<SourceReport> {
  const guest = MigrationGuest.create(kvm, o.shape, { dirtyLog: true });
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
    const session = randomBytes(12).toString('hex');
    const unit = guest.unit;
    const hello: Hello = {
      magic: PROTOCOL_MAGIC,
      version: PROTOCOL_VERSION,
      pageSize: unit,
      memory: { guestAddress: o.shape.guestAddress, size: o.shape.size },
      vcpus: o.shape.vcpus,
      mode: o.mode,
      source: o.shape.source,
      program: { name: MIGRATE_PROGRAM.name, codeBytes: MIGRATE_PROGRAM.code.length },
      session,
    };
    main.send(FrameType.HELLO, 0, encodeJson(hello));
    const answer = await main.next(o.timeoutMs);
    if (answer.type === FrameType.ERROR) throw new PostcopyError('ERR_REFUSED', `the destination refused the migration: ${errorMessage(answer.payload)}`);
    if (answer.type !== FrameType.ACCEPT) throw new MigrationProtocolError(`expected ACCEPT after HELLO, got ${frameName(answer.type)}`);
    urgent = await Channel.connect(o.host, o.port, { ...channelOptions, name: 'destination (urgent)', idleTimeoutMs: 0 });
    urgent.send(FrameType.URGENT, 0, encodeJson({ session }));
    o.onEvent?.({ phase: 'connected', host: o.host, port: o.port });
    return await migrate(guest, main, urgent, o);
  } catch (e) {
    main?.destroy();
    urgent?.destroy();
    if (guest.running) await guest.pause().catch(() => undefined);
    throw e;
  } finally {
    await Promise.all([main?.close(), urgent?.close()]);
    if (!guest.running) guest.close();
  }
}

async function migrate(guest: MigrationGuest, main: Channel, urgent: Channel, o: SourceOptions): Promise<SourceReport> {
  const log = guest.log!;
  const unit = guest.unit;
  const pagesPerUnit = unit / GUEST_PAGE;
  const units = o.shape.size / unit;
  const memory = guest.backing.primary.bytes();
  const unitsPerRun = Math.max(1, RUN_BYTES / unit);
  const base = o.shape.guestAddress;

  // What the destination says, whenever it says it.
  let resumedAtNs: bigint | undefined;
  let acked = 0;
  let onAck: (() => void) | undefined;
  let complete!: () => void;
  let failed!: (e: Error) => void;
  const done = new Promise<void>((resolve, reject) => ((complete = resolve), (failed = reject)));
  done.catch(() => undefined);
  const fromDestination = (f: Frame) => {
    if (f.type === FrameType.ROUND_END) {
      acked = Number(JSON.parse(Buffer.from(f.payload).toString()).round);
      onAck?.();
    } else if (f.type === FrameType.RESUMED) resumedAtNs = BigInt(String(JSON.parse(Buffer.from(f.payload).toString()).resumedAtNs));
    else if (f.type === FrameType.COMPLETE) complete();
    else if (f.type === FrameType.ERROR) failed(new PostcopyError('ERR_PEER', `the destination failed: ${errorMessage(f.payload)}`));
    else failed(new MigrationProtocolError(`unexpected ${frameName(f.type)} frame from the destination`));
  };
  main.onFrame(fromDestination);
  const channelFailed = (c: Channel) => c.closed.then((e) => e && failed(e));
  void channelFailed(main);
  void channelFailed(urgent);
  // Precopy only sends: a destination that goes quiet shows up as a send buffer that does not drain.
  main.setIdleTimeout(0);

  const drain = async (c: Channel) => {
    if (c.writableLength <= HIGH_WATER) return;
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new PostcopyError('ERR_PEER_SILENT', `the destination has not read anything for ${o.timeoutMs} ms`)), o.timeoutMs);
    });
    try {
      await Promise.race([c.drain(), silent, done]);
    } finally {
      clearTimeout(timer);
    }
  };
  const sendRun = (c: Channel, first: number, count: number) => {
    const offset = first * unit;
    c.send(FrameType.PAGES, 0, pagesHeader(base + offset), memory.subarray(offset, offset + count * unit));
  };

  // Precopy.
  const t0 = process.hrtime.bigint();
  const rounds: RoundFigures[] = [];
  let precopyPages = 0;
  let zeroPages = 0;
  let firstRoundBytes = 0;
  let firstRoundNs = 0n;
  // Each round starts once the destination has taken in the last one: the pipe is empty, so
  // the dirty set is as small as it gets, and a SWITCHOVER never waits behind precopy data.
  const roundTaken = async (round: number) => {
    if (acked >= round) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve) => (onAck = () => acked >= round && resolve())),
        done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new PostcopyError('ERR_PEER_SILENT', `the destination did not take in precopy round ${round} within ${o.timeoutMs} ms`)), o.timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      onAck = undefined;
    }
  };
  for (let round = 1; ; round++) {
    await roundTaken(round - 1);
    const dirty = log.fetch();
    const elapsedMs = ms(process.hrtime.bigint() - t0);
    const p = o.policy;
    if (round > 1 && (p.postcopyNow || round > p.maxRounds || dirty <= p.maxStalePages || (p.postcopyAfterMs !== undefined && elapsedMs >= p.postcopyAfterMs))) break;
    const r0 = process.hrtime.bigint();
    log.clear();
    const set = UnitBitmap.fromDirtyLog(log.words, log.pages, pagesPerUnit);
    let sent = 0;
    const holes = new HoleCursor(guest.backing);
    for (const [first, count] of set.runs(unitsPerRun)) {
      // Pages the guest never wrote are holes in shared memory: say so instead of reading
      // them (which would allocate them here) and sending zeros.
      const at = first * unit;
      const end = (first + count) * unit;
      const data = Math.min(end, holes.nextData(at));
      if (data > at) {
        main.send(FrameType.ZERO, 0, encodeZero(base + at, data - at));
        zeroPages += (data - at) / unit;
      }
      if (end > data) sendRun(main, data / unit, (end - data) / unit);
      sent += count;
      await drain(main);
    }
    main.send(FrameType.ROUND_END, 0, encodeJson({ round, pages: sent }));
    await drain(main);
    const roundNs = process.hrtime.bigint() - r0;
    if (round === 1) {
      firstRoundBytes = sent * unit;
      firstRoundNs = roundNs;
    }
    precopyPages += sent;
    rounds.push({ round, pages: sent, ms: ms(roundNs) });
    o.onEvent?.({ phase: 'round', round, pages: sent, ms: ms(roundNs) });
  }

  // Blackout: pause, read the state, the last dirty set, and send them.
  const pausedAtNs = process.hrtime.bigint();
  await guest.pause();
  const stoppedAtNs = process.hrtime.bigint();
  const vcpus = guest.save();
  const states = vcpus.map((v) => migrateState(unpackRegs(v.regs)));
  const { tsc, khz } = guest.tsc();
  log.fetch();
  const stale = UnitBitmap.fromDirtyLog(log.words, log.pages, pagesPerUnit);
  const stalePages = stale.count();
  main.send(FrameType.SWITCHOVER, 0, ...encodeSwitchover({ pausedAtNs, tsc, tscKhz: khz, wallMs: Date.now(), vcpus, stale: stale.bytes.slice(), stalePages }));
  // (A copy: the socket may still hold the parts when post-copy starts clearing bits of `stale`.)
  const sentAtNs = process.hrtime.bigint();
  main.setIdleTimeout(o.timeoutMs);
  o.onEvent?.({ phase: 'switchover', stalePages });

  // Post-copy: requested pages at once on the urgent connection; the background stream
  // goes on from the last requested page, so a vCPU walking its slice finds the pages
  // ahead of it already sent.
  const pending = stale; // still to send
  let remaining = stalePages;
  let cursor = 0;
  let onDemandPages = 0;
  let lateRequests = 0;
  urgent.onFrame((f) => {
    if (f.type === FrameType.ERROR) return failed(new PostcopyError('ERR_PEER', `the destination failed: ${errorMessage(f.payload)}`));
    if (f.type !== FrameType.REQUEST) return failed(new MigrationProtocolError(`unexpected ${frameName(f.type)} frame on the urgent connection`));
    const u = (parseRequest(f.payload, unit, { guestAddress: base, size: o.shape.size }) - base) / unit;
    if (!pending.has(u)) {
      lateRequests++;
      return;
    }
    pending.clear(u);
    remaining--;
    onDemandPages++;
    sendRun(urgent, u, 1);
    cursor = u + 1;
  });
  let backgroundPages = 0;
  const started = performance.now();
  let lastEvent = 0;
  while (remaining > 0) {
    let u = pending.next(cursor);
    if (u < 0) u = pending.next(0);
    if (u < 0) break;
    let n = 0;
    while (n < unitsPerRun && u + n < units && pending.has(u + n)) pending.clear(u + n++);
    remaining -= n;
    backgroundPages += n;
    sendRun(main, u, n);
    cursor = u + n;
    await drain(main);
    if (o.bandwidth > 0) {
      const due = started + ((backgroundPages * unit) / o.bandwidth) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
    }
    // Let requests in between two background frames.
    await new Promise((r) => setImmediate(r));
    if (performance.now() - lastEvent > 100) {
      lastEvent = performance.now();
      o.onEvent?.({ phase: 'postcopy', sent: stalePages - remaining, of: stalePages });
    }
  }
  o.onEvent?.({ phase: 'postcopy', sent: stalePages, of: stalePages });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      done,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PostcopyError('ERR_PEER_SILENT', `the destination did not confirm it has every page within ${o.timeoutMs} ms`)), o.timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
  const endNs = process.hrtime.bigint();
  main.expectClose();
  urgent.expectClose();
  o.onEvent?.({ phase: 'complete' });
  return {
    unit,
    pages: units,
    rounds,
    precopyPages,
    zeroPages,
    stalePages,
    backgroundPages,
    onDemandPages,
    lateRequests,
    streamMBps: firstRoundNs > 0n ? firstRoundBytes / (Number(firstRoundNs) / 1e9) / 1e6 : 0,
    downtimeMs: resumedAtNs !== undefined ? ms(resumedAtNs - pausedAtNs) : NaN,
    blackout: { pauseMs: ms(stoppedAtNs - pausedAtNs), stateMs: ms(sentAtNs - stoppedAtNs) },
    totalMs: ms(endNs - t0),
    precopyMs: ms(pausedAtNs - t0),
    states,
    tscKhz: khz,
  };
}
