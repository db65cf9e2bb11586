/**
 * The SWITCHOVER frame: everything the destination needs to run the guest on, sent while
 * the source's vCPUs are paused. Layout: u32 length of a JSON header; the header; each
 * vCPU's state (kvm_regs then kvm_sregs, as KVM gives them); the stale bitmap, one bit
 * per page (LSB first), set for pages written since the last precopy round was read.
 */
import { StructSize } from '../../kvm/constants.js';
import { VCPU_STATE_BYTES, type VcpuState } from './guest.js';
import { FrameType, MigrationProtocolError, decodeJson } from './protocol.js';

export interface Switchover {
  /** process.hrtime.bigint() (CLOCK_MONOTONIC) on the source when it asked the vCPUs to pause. */
  readonly pausedAtNs: bigint;
  /** The guest's TSC when paused, its frequency, and the wall clock then (ms since the epoch). */
  readonly tsc: bigint;
  readonly tscKhz: number;
  readonly wallMs: number;
  readonly vcpus: readonly VcpuState[];
  readonly stale: Uint8Array;
  readonly stalePages: number;
}

export function encodeSwitchover(s: Switchover): Uint8Array[] {
  const header = Buffer.from(
    JSON.stringify({ pausedAtNs: String(s.pausedAtNs), tsc: String(s.tsc), tscKhz: s.tscKhz, wallMs: s.wallMs, vcpus: s.vcpus.length, stalePages: s.stalePages, staleBytes: s.stale.byteLength }),
  );
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32LE(header.length);
  return [length, header, ...s.vcpus.flatMap((v) => [v.regs, v.sregs]), s.stale];
}

/** Decodes and checks a SWITCHOVER payload against what the handshake fixed. */
export function parseSwitchover(payload: Uint8Array, expect: { vcpus: number; pages: number }): Switchover {
  const fail = (why: string) => new MigrationProtocolError(`SWITCHOVER frame: ${why}`);
  if (payload.byteLength < 4) throw fail('shorter than its header length');
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const headerLength = buf.readUInt32LE(0);
  if (4 + headerLength > buf.length) throw fail(`header of ${headerLength} bytes does not fit in ${buf.length}`);
  const h = decodeJson(FrameType.SWITCHOVER, buf.subarray(4, 4 + headerLength));
  const bitmapBytes = Math.ceil(expect.pages / 8);
  if (h.vcpus !== expect.vcpus) throw fail(`state for ${String(h.vcpus)} vCPUs, the handshake agreed on ${expect.vcpus}`);
  if (h.staleBytes !== bitmapBytes) throw fail(`stale bitmap of ${String(h.staleBytes)} bytes for ${expect.pages} pages`);
  if (typeof h.pausedAtNs !== 'string' || !/^\d+$/.test(h.pausedAtNs) || typeof h.tsc !== 'string' || !/^\d+$/.test(h.tsc)) throw fail('pausedAtNs or tsc is not a decimal string');
  if (typeof h.tscKhz !== 'number' || typeof h.wallMs !== 'number' || typeof h.stalePages !== 'number') throw fail('tscKhz, wallMs or stalePages is missing');
  let at = 4 + headerLength;
  if (buf.length !== at + expect.vcpus * VCPU_STATE_BYTES + bitmapBytes) throw fail(`${buf.length} bytes, expected ${at + expect.vcpus * VCPU_STATE_BYTES + bitmapBytes}`);
  const vcpus: VcpuState[] = [];
  for (let i = 0; i < expect.vcpus; i++) {
    const regs = new Uint8Array(buf.subarray(at, at + StructSize.kvm_regs));
    at += StructSize.kvm_regs;
    const sregs = new Uint8Array(buf.subarray(at, at + StructSize.kvm_sregs));
    at += StructSize.kvm_sregs;
    vcpus.push({ regs, sregs });
  }
  const stale = new Uint8Array(buf.subarray(at, at + bitmapBytes));
  return { pausedAtNs: BigInt(h.pausedAtNs), tsc: BigInt(h.tsc), tscKhz: h.tscKhz, wallMs: h.wallMs, vcpus, stale, stalePages: h.stalePages };
}
