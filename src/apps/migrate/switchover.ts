/**
 * The SWITCHOVER frame: everything the destination needs to run the guest on, sent while
 * the source's guest is paused. Layout: u32 length of a JSON header; the header; each
 * worker's saved state (the guest backend's blob, `stateBytes` each: kvm_regs + kvm_sregs
 * for KVM, the program's fields for threads); the stale bitmap, one bit per page (LSB
 * first), set for pages written since the last precopy round was read.
 */
import { FrameType, MigrationProtocolError, decodeJson } from './protocol.js';

export interface Switchover {
  /** process.hrtime.bigint() (CLOCK_MONOTONIC) on the source when it asked the guest to pause. */
  readonly pausedAtNs: bigint;
  /** The guest's clock when paused (TSC ticks, or ns for threads), its rate, and the wall clock then (ms since the epoch). */
  readonly clock: bigint;
  readonly ticksPerMs: number;
  readonly wallMs: number;
  readonly states: readonly Uint8Array[];
  readonly stale: Uint8Array;
  readonly stalePages: number;
}

export function encodeSwitchover(s: Switchover): Uint8Array[] {
  const header = Buffer.from(
    JSON.stringify({ pausedAtNs: String(s.pausedAtNs), clock: String(s.clock), ticksPerMs: s.ticksPerMs, wallMs: s.wallMs, workers: s.states.length, stalePages: s.stalePages, staleBytes: s.stale.byteLength }),
  );
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32LE(header.length);
  return [length, header, ...s.states, s.stale];
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isDecimal = (v: unknown): v is string => typeof v === 'string' && /^\d{1,20}$/.test(v);

/** Decodes and checks a SWITCHOVER payload against what the handshake fixed. */
export function parseSwitchover(payload: Uint8Array, expect: { workers: number; stateBytes: number; pages: number }): Switchover {
  const fail = (why: string) => new MigrationProtocolError(`SWITCHOVER frame: ${why}`);
  if (payload.byteLength < 4) throw fail('shorter than its header length');
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const headerLength = buf.readUInt32LE(0);
  if (4 + headerLength > buf.length) throw fail(`header of ${headerLength} bytes does not fit in ${buf.length}`);
  const h = decodeJson(FrameType.SWITCHOVER, buf.subarray(4, 4 + headerLength));
  const bitmapBytes = Math.ceil(expect.pages / 8);
  if (h.workers !== expect.workers) throw fail(`state for ${String(h.workers)} workers, the handshake agreed on ${expect.workers}`);
  if (h.staleBytes !== bitmapBytes) throw fail(`stale bitmap of ${String(h.staleBytes)} bytes for ${expect.pages} pages`);
  if (!isDecimal(h.pausedAtNs) || !isDecimal(h.clock)) throw fail('pausedAtNs or clock is not a decimal string');
  if (typeof h.ticksPerMs !== 'number' || !(h.ticksPerMs > 0) || !isCount(h.wallMs)) throw fail('ticksPerMs or wallMs is missing');
  if (!isCount(h.stalePages) || h.stalePages > expect.pages) throw fail(`stalePages ${String(h.stalePages)} is not a count of at most ${expect.pages}`);
  let at = 4 + headerLength;
  const expected = at + expect.workers * expect.stateBytes + bitmapBytes;
  if (buf.length !== expected) throw fail(`${buf.length} bytes, expected ${expected}`);
  const states: Uint8Array[] = [];
  for (let i = 0; i < expect.workers; i++) {
    states.push(new Uint8Array(buf.subarray(at, at + expect.stateBytes)));
    at += expect.stateBytes;
  }
  const stale = new Uint8Array(buf.subarray(at, at + bitmapBytes));
  return { pausedAtNs: BigInt(h.pausedAtNs), clock: BigInt(h.clock), ticksPerMs: h.ticksPerMs, wallMs: h.wallMs, states, stale, stalePages: h.stalePages };
}
