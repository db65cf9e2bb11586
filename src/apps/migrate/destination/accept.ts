/**
 * The destination's handshake: accepts connections until one sends a HELLO it can build
 * (refusing the others with an ERROR frame that says why, and going on listening), builds
 * the guest, then waits for the source's urgent connection naming the same session.
 */
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { PostcopyError } from '../../../errors.js';
import type { GuestBackendName, MigratableGuest } from '../../../guest/guest.js';
import { createGuest, kvmAvailability, programOf } from '../../../guest/open.js';
import { checkShape } from '../../../guest/shape.js';
import { BACKING_INFO, isBackingSource, type BackingSourceName } from '../../../memory/backing.js';
import { uffdFeaturesFor } from '../../../memory/uffd-features.js';
import { Channel } from '../../../transport/channel.js';
import { encodeHeader } from '../../../transport/frame.js';
import type { Listener } from '../../../transport/listener.js';
import { Userfaultfd } from '../../../uffd/userfaultfd.js';
import { FrameType, type Hello, MAX_PAYLOAD, MigrationProtocolError, type MigrationMode, encodeJson, frameName, isFrameType, parseHello, parseUrgent } from '../protocol.js';

export interface AcceptOptions {
  readonly listener: Listener;
  /** Refuse a source that proposes another mode, backing or guest than these (undefined: accept any this host can run). */
  readonly mode?: MigrationMode;
  readonly source?: BackingSourceName;
  readonly guest?: GuestBackendName;
  /** Refuse guests larger than this. */
  readonly maxMemory: number;
  readonly timeoutMs: number;
  readonly onRefused?: (peer: string, reason: string) => void;
}

export interface Accepted {
  readonly main: Channel;
  readonly hello: Hello;
  readonly uffd: Userfaultfd;
  readonly guest: MigratableGuest;
  readonly populated: boolean;
  readonly prepareMs: number;
}

/** Why this destination cannot take `hello`, or undefined. */
export function refusal(hello: Hello, o: Pick<AcceptOptions, 'mode' | 'source' | 'guest' | 'maxMemory'>, kvm: () => { usable: boolean; reason?: string } = kvmAvailability): string | undefined {
  if (o.guest && hello.guest !== o.guest) return `the source runs a ${hello.guest} guest, this destination was started with --guest ${o.guest}`;
  const program = programOf(hello.guest);
  if (hello.program.name !== program.name || hello.program.codeBytes !== program.codeBytes) {
    return `the source runs guest program '${hello.program.name}' (${hello.program.codeBytes} bytes), this side '${program.name}' (${program.codeBytes}): run the same postcopy version on both sides`;
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
  if (hello.guest === 'kvm') {
    const k = kvm();
    if (!k.usable) return `the source runs a kvm guest and this destination cannot (${k.reason}); start the source with --guest threads`;
  }
  return undefined;
}

const peerOf = (s: Socket) => `${s.remoteAddress}:${s.remotePort}`;
export const channelOptions = (name: string, idleTimeoutMs: number) => ({ isKnownType: isFrameType, maxPayload: MAX_PAYLOAD, name, idleTimeoutMs });

/**
 * Tells a peer that was refused before it became a channel (a TLS source whose certificate
 * did not verify) why, in an ERROR frame, and closes: nothing it sent is read.
 */
export function tellRefused(socket: Socket, reason: string): void {
  const payload = encodeJson({ message: `the source's ${reason.replace(/^its /, '')}` });
  socket.end(Buffer.concat([encodeHeader(FrameType.ERROR, 0, payload.length), payload]));
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Refuses a peer with an ERROR frame (best effort) and closes. */
export async function refuse(ch: Channel, reason: string): Promise<void> {
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
export async function acceptSource(o: AcceptOptions): Promise<Accepted> {
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
      o.onRefused?.(peer, reason);
      await refuse(ch, reason);
      continue;
    }
    // What the kernel must offer is checked now, so the source hears why before it sends a page.
    let uffd: Userfaultfd | undefined;
    let guest: MigratableGuest | undefined;
    try {
      uffd = Userfaultfd.open({ features: uffdFeaturesFor(hello.source as BackingSourceName, hello.mode === 'minor' ? 'MINOR' : 'MISSING', ['THREAD_ID']), nonBlocking: true });
      guest = createGuest(hello.guest, { source: hello.source as BackingSourceName, size: hello.memory.size, vcpus: hello.vcpus, guestAddress: hello.memory.guestAddress });
      if (guest.stateBytes !== hello.stateBytes) throw new MigrationProtocolError(`the source's ${hello.guest} guest saves ${hello.stateBytes} bytes of state per worker, this side's ${guest.stateBytes}: run the same postcopy version on both sides`);
      const t0 = process.hrtime.bigint();
      const populated = guest.populate();
      const prepareMs = Number(process.hrtime.bigint() - t0) / 1e6;
      return { main: ch, hello, uffd, guest, populated, prepareMs };
    } catch (e) {
      guest?.close();
      uffd?.close();
      const reason = `this destination cannot build the guest: ${(e as Error).message}`;
      o.onRefused?.(peer, reason);
      await refuse(ch, reason);
    }
  }
}

/** The source's second connection, which must name the session; other peers are refused meanwhile. */
export async function acceptUrgent(o: AcceptOptions, session: string): Promise<Channel> {
  const deadline = Date.now() + o.timeoutMs;
  const silent = () => new PostcopyError('ERR_PEER_SILENT', `the source did not open its urgent connection within ${o.timeoutMs} ms`);
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw silent();
    let timer: NodeJS.Timeout | undefined;
    const socket = await Promise.race([
      o.listener.accept(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(silent()), left);
      }),
    ]).finally(() => clearTimeout(timer));
    const ch = Channel.fromSocket(socket, channelOptions('source (urgent)', 0));
    try {
      const f = await ch.next(left);
      if (f.type !== FrameType.URGENT) throw new MigrationProtocolError(`expected URGENT, got ${frameName(f.type)}`);
      if (parseUrgent(f.payload).session !== session) throw new MigrationProtocolError('URGENT for another session');
      return ch;
    } catch (e) {
      const reason = (e as Error).message;
      o.onRefused?.(peerOf(socket), reason);
      await refuse(ch, reason);
    }
  }
}
