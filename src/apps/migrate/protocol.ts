/**
 * The migration protocol: which frames exist, what each carries, and the handshake both
 * sides must agree on before any page moves. The wire format (8-byte header, length,
 * type, flags) is src/transport's; this file gives the payloads meaning.
 *
 * Two TCP connections from the source to the destination's listener:
 *   main    HELLO → ACCEPT | ERROR, then PAGES… ZERO… ROUND_END… (precopy), SWITCHOVER,
 *           PAGES… (post-copy background stream); back: ROUND_END (the round is in),
 *           RESUMED, COMPLETE, ERROR.
 *   urgent  URGENT (joins the session), then REQUEST from the destination for a page a
 *           vCPU is waiting on, answered by PAGES at once: never queued behind the
 *           background stream.
 * Control payloads are JSON, checked field by field; page payloads are binary.
 */
import { PostcopyError } from '../../errors.js';
import { type GuestBackendName, GUEST_BACKENDS } from '../../guest/guest.js';

/** 2: HELLO names the guest backend; SWITCHOVER carries backend-defined state blobs. 3: KEEPALIVE, RESUME, RESUME_ACK (post-copy recovery). */
export const PROTOCOL_VERSION = 3;
/** HELLO.magic: a peer that is not a postcopy migration is refused by name. */
export const PROTOCOL_MAGIC = 'postcopy-migrate';

export const FrameType = {
  HELLO: 1,
  ACCEPT: 2,
  /** Either side: this peer gives up; payload { message }. */
  ERROR: 3,
  /** u64 guest address of the first page, then whole pages (a run). */
  PAGES: 4,
  ROUND_END: 5,
  /** u32 length of a JSON header, the header, the vCPUs' state blobs, the stale-page bitmap. */
  SWITCHOVER: 6,
  RESUMED: 7,
  /** u64 guest address of a page a vCPU waits for. */
  REQUEST: 8,
  COMPLETE: 9,
  /** First frame on the urgent connection: { session }. */
  URGENT: 10,
  /** Precopy only: u64 guest address, u64 length: pages the source never wrote (zeros), sent without their bytes. */
  ZERO: 11,
  /** Post-copy recovery, first frame of a new main connection: { session, attempt }. */
  RESUME: 12,
  /** The destination's answer: u32 length of a JSON header { needed }, the header, then the bitmap of pages it still needs. */
  RESUME_ACK: 13,
  /** Urgent connection, idle in precopy: the source's clock { t0 } (ns, decimal). */
  CLOCK_PROBE: 14,
  /** The destination's answer { t0, t1, t2 }: when it received the probe and replied, on its clock. */
  CLOCK_REPLY: 15,
} as const;
export type FrameTypeName = keyof typeof FrameType;

const NAMES = new Map<number, FrameTypeName>(Object.entries(FrameType).map(([k, v]) => [v, k as FrameTypeName]));
export const isFrameType = (t: number): boolean => NAMES.has(t);
export const frameName = (t: number): string => NAMES.get(t) ?? `0x${t.toString(16)}`;

/** Largest frame payload either side accepts: a SWITCHOVER of a large guest, or a run of 2 MiB pages. */
export const MAX_PAYLOAD = 64 * 2 ** 20;

export type MigrationMode = 'minor' | 'missing';

/** What the source proposes; the destination builds the same guest or refuses. */
export interface Hello {
  readonly magic: string;
  readonly version: number;
  /** The unit pages move in: the backing's page size. */
  readonly pageSize: number;
  /** The guest's memory: one slot of test memory. */
  readonly memory: { readonly guestAddress: number; readonly size: number };
  readonly vcpus: number;
  readonly mode: MigrationMode;
  readonly source: string;
  /** What runs the guest: vCPUs in KVM, or threads in the process. Both sides must run the same. */
  readonly guest: GuestBackendName;
  /** The guest program's name and the length of its code: both sides must run the same one. */
  readonly program: { readonly name: string; readonly codeBytes: number };
  /** Bytes of one worker's saved state in SWITCHOVER. */
  readonly stateBytes: number;
  /** Joins the urgent connection to this session. */
  readonly session: string;
}

/** The protocol was not followed: a frame's content is wrong for where it came. */
export class MigrationProtocolError extends PostcopyError {
  override name = 'MigrationProtocolError';
  constructor(detail: string, remedy?: string) {
    super('ERR_MIGRATION_PROTOCOL', detail, remedy);
  }
}

/** A JSON control payload, or a protocol error saying which frame was bad. */
export function decodeJson(type: number, payload: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    throw new MigrationProtocolError(`${frameName(type)} frame: payload is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new MigrationProtocolError(`${frameName(type)} frame: payload is not a JSON object`);
  return value as Record<string, unknown>;
}

export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

const isInt = (v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;

/**
 * Checks a HELLO field by field. Returns the Hello, or throws saying which field is wrong
 * and, for a version mismatch, which versions each side speaks.
 */
export function parseHello(payload: Uint8Array): Hello {
  const h = decodeJson(FrameType.HELLO, payload);
  if (h.magic !== PROTOCOL_MAGIC) throw new MigrationProtocolError(`HELLO: not a postcopy migration (magic ${JSON.stringify(h.magic)})`);
  if (h.version !== PROTOCOL_VERSION) {
    throw new MigrationProtocolError(
      `HELLO: protocol version ${JSON.stringify(h.version)}, this side speaks ${PROTOCOL_VERSION}`,
      'Run the same postcopy version on both sides',
    );
  }
  if (!isInt(h.pageSize, 4096) || (h.pageSize & (h.pageSize - 1)) !== 0) throw new MigrationProtocolError(`HELLO: page size ${JSON.stringify(h.pageSize)} is not a power of two ≥ 4096`);
  const m = h.memory as Record<string, unknown> | undefined;
  if (typeof m !== 'object' || m === null || !isInt(m.guestAddress) || !isInt(m.size, h.pageSize) || m.size % h.pageSize !== 0 || m.guestAddress % h.pageSize !== 0) {
    throw new MigrationProtocolError(`HELLO: memory ${JSON.stringify(m)} is not a page-aligned { guestAddress, size }`);
  }
  if (!isInt(h.vcpus, 1, 256)) throw new MigrationProtocolError(`HELLO: vcpus ${JSON.stringify(h.vcpus)} is not in 1..256`);
  if (h.mode !== 'minor' && h.mode !== 'missing') throw new MigrationProtocolError(`HELLO: mode ${JSON.stringify(h.mode)} is not 'minor' or 'missing'`);
  if (typeof h.source !== 'string') throw new MigrationProtocolError('HELLO: source is missing');
  const p = h.program as Record<string, unknown> | undefined;
  if (typeof p !== 'object' || p === null || typeof p.name !== 'string' || !isInt(p.codeBytes)) throw new MigrationProtocolError('HELLO: program is missing');
  if (typeof h.session !== 'string' || h.session.length === 0 || h.session.length > 64) throw new MigrationProtocolError('HELLO: session is missing');
  if (!(GUEST_BACKENDS as readonly unknown[]).includes(h.guest)) throw new MigrationProtocolError(`HELLO: guest ${JSON.stringify(h.guest)} is not one of ${GUEST_BACKENDS.join(', ')}`);
  if (!isInt(h.stateBytes, 1, 1 << 20)) throw new MigrationProtocolError(`HELLO: stateBytes ${JSON.stringify(h.stateBytes)} is not in 1..${1 << 20}`);
  return {
    magic: h.magic,
    version: h.version,
    pageSize: h.pageSize,
    memory: { guestAddress: m.guestAddress, size: m.size },
    vcpus: h.vcpus,
    mode: h.mode,
    source: h.source,
    guest: h.guest as GuestBackendName,
    program: { name: p.name, codeBytes: p.codeBytes },
    stateBytes: h.stateBytes,
    session: h.session,
  };
}

/*
 * The control payloads after HELLO, each checked field by field: a peer's bytes are never
 * cast to a type. A frame that does not hold what its type says is a MigrationProtocolError
 * naming the frame and the field.
 */

const field = (type: number, name: string, value: unknown, what: string) =>
  new MigrationProtocolError(`${frameName(type)} frame: ${name} ${JSON.stringify(value)?.slice(0, 80) ?? 'undefined'} is not ${what}`);

/** ACCEPT (destination → source): the version it speaks. */
export function parseAccept(payload: Uint8Array): { version: number } {
  const v = decodeJson(FrameType.ACCEPT, payload);
  if (v.version !== PROTOCOL_VERSION) throw field(FrameType.ACCEPT, 'version', v.version, `${PROTOCOL_VERSION}`);
  return { version: v.version };
}

/** ROUND_END from the source: the round that ended and how many pages it sent. */
export function parseRoundEnd(payload: Uint8Array): { round: number; pages: number } {
  const v = decodeJson(FrameType.ROUND_END, payload);
  if (!isInt(v.round, 1)) throw field(FrameType.ROUND_END, 'round', v.round, 'a round number ≥ 1');
  if (!isInt(v.pages)) throw field(FrameType.ROUND_END, 'pages', v.pages, 'a page count');
  return { round: v.round, pages: v.pages };
}

/** ROUND_END from the destination: the round it has taken in. */
export function parseRoundAck(payload: Uint8Array): { round: number } {
  const v = decodeJson(FrameType.ROUND_END, payload);
  if (!isInt(v.round, 1)) throw field(FrameType.ROUND_END, 'round', v.round, 'a round number ≥ 1');
  return { round: v.round };
}

/** RESUMED: when the destination's guest ran again (its CLOCK_MONOTONIC, ns, as a decimal string). */
export function parseResumed(payload: Uint8Array): { resumedAtNs: bigint } {
  const v = decodeJson(FrameType.RESUMED, payload);
  if (typeof v.resumedAtNs !== 'string' || !/^\d{1,20}$/.test(v.resumedAtNs)) throw field(FrameType.RESUMED, 'resumedAtNs', v.resumedAtNs, 'a decimal string');
  return { resumedAtNs: BigInt(v.resumedAtNs) };
}

/** COMPLETE: the destination has every page. */
export function parseComplete(payload: Uint8Array, pages: number): { pages: number } {
  const v = decodeJson(FrameType.COMPLETE, payload);
  if (v.pages !== pages) throw field(FrameType.COMPLETE, 'pages', v.pages, `the guest's ${pages} pages`);
  return { pages };
}

/** RESUME: the session a new connection resumes, and which attempt of this source's this is. */
export function parseResume(payload: Uint8Array): { session: string; attempt: number } {
  const v = decodeJson(FrameType.RESUME, payload);
  if (typeof v.session !== 'string' || v.session.length === 0 || v.session.length > 64) throw field(FrameType.RESUME, 'session', v.session, 'a session id');
  if (!isInt(v.attempt, 1)) throw field(FrameType.RESUME, 'attempt', v.attempt, 'an attempt number ≥ 1');
  return { session: v.session, attempt: v.attempt };
}

/** RESUME_ACK: the pages the destination still needs, as a bitmap of `units` bits (LSB first). */
export function encodeResumeAck(needed: number, bitmap: Uint8Array): Uint8Array[] {
  const json = encodeJson({ needed });
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32LE(json.length);
  return [head, json, bitmap];
}

export function parseResumeAck(payload: Uint8Array, units: number): { needed: number; bitmap: Uint8Array } {
  const bytes = Math.ceil(units / 8);
  if (payload.byteLength < 4) throw new MigrationProtocolError(`RESUME_ACK frame of ${payload.byteLength} bytes is too short`);
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const len = b.readUInt32LE(0);
  if (4 + len + bytes !== b.length) throw new MigrationProtocolError(`RESUME_ACK frame of ${b.length} bytes does not hold a ${len}-byte header and a bitmap of ${units} pages`);
  const v = decodeJson(FrameType.RESUME_ACK, b.subarray(4, 4 + len));
  if (!isInt(v.needed, 0, units)) throw field(FrameType.RESUME_ACK, 'needed', v.needed, `a page count ≤ ${units}`);
  return { needed: v.needed, bitmap: new Uint8Array(b.subarray(4 + len)) };
}

const ns = (type: number, v: Record<string, unknown>, name: string): bigint => {
  const x = v[name];
  if (typeof x !== 'string' || !/^\d{1,20}$/.test(x)) throw field(type, name, x, 'a time in ns as a decimal string');
  return BigInt(x);
};

export function parseClockProbe(payload: Uint8Array): { t0: bigint } {
  return { t0: ns(FrameType.CLOCK_PROBE, decodeJson(FrameType.CLOCK_PROBE, payload), 't0') };
}

export function parseClockReply(payload: Uint8Array): { t0: bigint; t1: bigint; t2: bigint } {
  const v = decodeJson(FrameType.CLOCK_REPLY, payload);
  return { t0: ns(FrameType.CLOCK_REPLY, v, 't0'), t1: ns(FrameType.CLOCK_REPLY, v, 't1'), t2: ns(FrameType.CLOCK_REPLY, v, 't2') };
}

/** URGENT: the session this connection joins. */
export function parseUrgent(payload: Uint8Array): { session: string } {
  const v = decodeJson(FrameType.URGENT, payload);
  if (typeof v.session !== 'string' || v.session.length === 0 || v.session.length > 64) throw field(FrameType.URGENT, 'session', v.session, 'a session id');
  return { session: v.session };
}

/** PAGES payload: u64 first guest address, then the pages. */
export function pagesHeader(guestAddress: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64LE(BigInt(guestAddress));
  return b;
}

/** A PAGES payload's run: its first guest address and page bytes, checked against the memory. */
export function parsePages(payload: Uint8Array, pageSize: number, memory: { guestAddress: number; size: number }): { guestAddress: number; data: Uint8Array } {
  if (payload.byteLength < 8 + pageSize || (payload.byteLength - 8) % pageSize !== 0) {
    throw new MigrationProtocolError(`PAGES frame of ${payload.byteLength} bytes is not a guest address and whole ${pageSize}-byte pages`);
  }
  const guestAddress = Number(Buffer.from(payload.buffer, payload.byteOffset, 8).readBigUInt64LE());
  const length = payload.byteLength - 8;
  if (guestAddress % pageSize !== 0 || guestAddress < memory.guestAddress || guestAddress + length > memory.guestAddress + memory.size) {
    throw new MigrationProtocolError(`PAGES frame for [0x${guestAddress.toString(16)}, 0x${(guestAddress + length).toString(16)}) is outside the guest's memory or misaligned`);
  }
  return { guestAddress, data: payload.subarray(8) };
}

/** ZERO payload: a run of pages that hold zeros. */
export function encodeZero(guestAddress: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeBigUInt64LE(BigInt(guestAddress), 0);
  b.writeBigUInt64LE(BigInt(length), 8);
  return b;
}

export function parseZero(payload: Uint8Array, pageSize: number, memory: { guestAddress: number; size: number }): { guestAddress: number; length: number } {
  if (payload.byteLength !== 16) throw new MigrationProtocolError(`ZERO frame of ${payload.byteLength} bytes, not 16`);
  const b = Buffer.from(payload.buffer, payload.byteOffset, 16);
  const guestAddress = Number(b.readBigUInt64LE(0));
  const length = Number(b.readBigUInt64LE(8));
  if (guestAddress % pageSize !== 0 || length % pageSize !== 0 || length === 0 || guestAddress < memory.guestAddress || guestAddress + length > memory.guestAddress + memory.size) {
    throw new MigrationProtocolError(`ZERO frame for [0x${guestAddress.toString(16)}, 0x${(guestAddress + length).toString(16)}) is outside the guest's memory or misaligned`);
  }
  return { guestAddress, length };
}

/** REQUEST payload: the u64 guest address of one page. */
export function encodeRequest(guestAddress: number): Buffer {
  return pagesHeader(guestAddress);
}

export function parseRequest(payload: Uint8Array, pageSize: number, memory: { guestAddress: number; size: number }): number {
  if (payload.byteLength !== 8) throw new MigrationProtocolError(`REQUEST frame of ${payload.byteLength} bytes, not 8`);
  const a = Number(Buffer.from(payload.buffer, payload.byteOffset, 8).readBigUInt64LE());
  if (a % pageSize !== 0 || a < memory.guestAddress || a >= memory.guestAddress + memory.size) {
    throw new MigrationProtocolError(`REQUEST for 0x${a.toString(16)}: not a page of the guest's memory`);
  }
  return a;
}

/** ERROR payload's message, whatever the peer sent. */
export function errorMessage(payload: Uint8Array): string {
  try {
    const m = decodeJson(FrameType.ERROR, payload).message;
    return typeof m === 'string' ? m.slice(0, 500) : 'no message';
  } catch {
    return 'an unreadable ERROR frame';
  }
}
