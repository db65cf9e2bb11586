/**
 * Why KVM_RUN returned: struct kvm_run's exit_reason and the union member it selects
 * (include/uapi/linux/kvm.h), decoded into a discriminated union. Only this file knows
 * the kvm_run offsets.
 */
import { hex } from '../util/format.js';
import { KVM_EXIT_IO_OUT, KvmExitReason, KvmInternalError, exitReasonName } from './constants.js';

/**
 * struct kvm_run offsets (x86_64). Fixed header: request_interrupt_window u8 @0,
 * immediate_exit u8 @1, padding1[6], exit_reason u32 @8, ready_for_interrupt_injection u8
 * @12, if_flag u8 @13, flags u16 @14, cr8 u64 @16, apic_base u64 @24, then the exit union @32.
 */
export const KvmRunOffset = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  /** The union of per-exit structs. */
  exit: 32,
} as const;

/** A value no KVM_EXIT_* has: written before KVM_RUN so that an error return can tell a fresh exit_reason from a stale one. */
export const EXIT_REASON_NONE = 0xffff_ffff;

/** KVM_EXIT_IO: the guest executed IN or OUT (or INS/OUTS, `count` > 1). */
export interface IoExit {
  reason: 'io';
  port: number;
  direction: 'in' | 'out';
  /** Bytes per access: 1, 2 or 4. */
  size: number;
  /** Accesses (REP INS/OUTS); 1 for IN/OUT. */
  count: number;
  /** Where in the kvm_run mapping the data is (OUT: what the guest wrote; IN: where to put the answer). */
  dataOffset: number;
  /** OUT: the first value written, little-endian, `size` bytes. IN: 0. */
  value: number;
}

/**
 * KVM_EXIT_MEMORY_FAULT (KVM_CAP_MEMORY_FAULT_INFO): KVM could not resolve a guest access
 * to [gpa, gpa+size) and hands it to userspace; KVM_RUN returned -1 with `errno` (EFAULT,
 * or EHWPOISON for a poisoned page).
 */
export interface MemoryFaultExit {
  reason: 'memory_fault';
  gpa: number;
  size: number;
  /** KVM_MEMORY_EXIT_FLAG_*: bit 3 PRIVATE (a guest_memfd access). */
  flags: number;
  /** The errno name KVM_RUN failed with. */
  errno: string;
}

/** KVM_EXIT_MMIO: an access to guest-physical memory that no slot backs. */
export interface MmioExit {
  reason: 'mmio';
  physAddr: number;
  /** The bytes written (is_write) or to be filled by the VMM (a read), `len` of them. */
  data: Uint8Array;
  len: number;
  isWrite: boolean;
}

/** KVM_EXIT_FAIL_ENTRY: the hardware (or PVM) refused to enter the guest: invalid guest state. */
export interface FailEntryExit {
  reason: 'fail_entry';
  hardwareEntryFailureReason: bigint;
  cpu: number;
}

/** KVM_EXIT_INTERNAL_ERROR: KVM could not go on (emulation failure, event delivery problem). */
export interface InternalErrorExit {
  reason: 'internal_error';
  suberror: number;
  /** KVM_INTERNAL_ERROR_* name of `suberror`. */
  suberrorName: string;
  /** internal.data[ndata]: for emulation failures, the instruction bytes and exit information. */
  data: bigint[];
}

/** KVM_EXIT_SHUTDOWN: a triple fault (an exception the guest could not deliver). */
export interface ShutdownExit {
  reason: 'shutdown';
}

/** KVM_EXIT_HLT: the guest halted and no in-kernel LAPIC would wake it. */
export interface HltExit {
  reason: 'hlt';
}

/**
 * KVM_RUN returned EINTR (a signal arrived, or kvm_run.immediate_exit was set) or EAGAIN:
 * nothing happened in the guest; run again.
 */
export interface IntrExit {
  reason: 'intr';
  errno: 'EINTR' | 'EAGAIN';
}

/** KVM_EXIT_SYSTEM_EVENT: shutdown/reset/crash requested through a paravirtual interface. */
export interface SystemEventExit {
  reason: 'system_event';
  type: number;
  data: bigint[];
}

/** Any other exit, with its number and name; KVM_EXIT_UNKNOWN also carries the hardware's reason. */
export interface UnknownExit {
  reason: 'unknown';
  code: number;
  name: string;
  /** KVM_EXIT_UNKNOWN only: hw.hardware_exit_reason. */
  hardwareExitReason?: bigint;
}

export type VcpuExit =
  | IoExit
  | MemoryFaultExit
  | MmioExit
  | FailEntryExit
  | InternalErrorExit
  | ShutdownExit
  | HltExit
  | IntrExit
  | SystemEventExit
  | UnknownExit;

export type VcpuExitReason = VcpuExit['reason'];

const INTERNAL_NAMES = new Map<number, string>(Object.entries(KvmInternalError).map(([k, v]) => [v, k]));

/**
 * Decodes the exit `run` (a view of the vCPU's kvm_run mapping) describes, after KVM_RUN
 * returned 0. `errno` is for KVM_EXIT_MEMORY_FAULT, which comes with a failing KVM_RUN.
 */
export function decodeExit(run: DataView, errno = 'EFAULT'): VcpuExit {
  const code = run.getUint32(KvmRunOffset.exit_reason, true);
  const at = KvmRunOffset.exit;
  switch (code) {
    case KvmExitReason.KVM_EXIT_IO: {
      // struct { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; }
      const direction = run.getUint8(at) === KVM_EXIT_IO_OUT ? 'out' : 'in';
      const size = run.getUint8(at + 1);
      const dataOffset = Number(run.getBigUint64(at + 8, true));
      let value = 0;
      if (direction === 'out') {
        value = size === 1 ? run.getUint8(dataOffset) : size === 2 ? run.getUint16(dataOffset, true) : run.getUint32(dataOffset, true);
      }
      return { reason: 'io', port: run.getUint16(at + 2, true), direction, size, count: run.getUint32(at + 4, true), dataOffset, value };
    }
    case KvmExitReason.KVM_EXIT_MEMORY_FAULT:
      // struct { __u64 flags; __u64 gpa; __u64 size; }
      return {
        reason: 'memory_fault',
        flags: Number(run.getBigUint64(at, true)),
        gpa: Number(run.getBigUint64(at + 8, true)),
        size: Number(run.getBigUint64(at + 16, true)),
        errno,
      };
    case KvmExitReason.KVM_EXIT_MMIO: {
      // struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; }
      const len = run.getUint32(at + 16, true);
      const data = new Uint8Array(8);
      for (let i = 0; i < 8; i++) data[i] = run.getUint8(at + 8 + i);
      return { reason: 'mmio', physAddr: Number(run.getBigUint64(at, true)), data: data.subarray(0, Math.min(len, 8)), len, isWrite: run.getUint8(at + 20) !== 0 };
    }
    case KvmExitReason.KVM_EXIT_FAIL_ENTRY:
      // struct { __u64 hardware_entry_failure_reason; __u32 cpu; }
      return { reason: 'fail_entry', hardwareEntryFailureReason: run.getBigUint64(at, true), cpu: run.getUint32(at + 8, true) };
    case KvmExitReason.KVM_EXIT_INTERNAL_ERROR: {
      // struct { __u32 suberror; __u32 ndata; __u64 data[16]; }
      const suberror = run.getUint32(at, true);
      const ndata = Math.min(run.getUint32(at + 4, true), 16);
      const data: bigint[] = [];
      for (let i = 0; i < ndata; i++) data.push(run.getBigUint64(at + 8 + i * 8, true));
      return { reason: 'internal_error', suberror, suberrorName: INTERNAL_NAMES.get(suberror) ?? `suberror ${suberror}`, data };
    }
    case KvmExitReason.KVM_EXIT_SHUTDOWN:
      return { reason: 'shutdown' };
    case KvmExitReason.KVM_EXIT_HLT:
      return { reason: 'hlt' };
    case KvmExitReason.KVM_EXIT_INTR:
      return { reason: 'intr', errno: 'EINTR' };
    case KvmExitReason.KVM_EXIT_SYSTEM_EVENT: {
      // struct { __u32 type; __u32 ndata; union { __u64 flags; __u64 data[16]; }; }
      const ndata = Math.min(run.getUint32(at + 4, true), 16);
      const data: bigint[] = [];
      for (let i = 0; i < ndata; i++) data.push(run.getBigUint64(at + 8 + i * 8, true));
      return { reason: 'system_event', type: run.getUint32(at, true), data };
    }
    case KvmExitReason.KVM_EXIT_UNKNOWN:
      // struct { __u64 hardware_exit_reason; }
      return { reason: 'unknown', code, name: exitReasonName(code), hardwareExitReason: run.getBigUint64(at, true) };
    default:
      return { reason: 'unknown', code, name: exitReasonName(code) };
  }
}

/** One line for a log or an error message: `io out port 0x10 size 4 value 0x0`. */
export function describeExit(exit: VcpuExit): string {
  switch (exit.reason) {
    case 'io':
      return `io ${exit.direction} port ${hex(exit.port)} size ${exit.size} count ${exit.count}${exit.direction === 'out' ? ` value ${hex(exit.value)}` : ''}`;
    case 'memory_fault':
      return `memory_fault gpa ${hex(exit.gpa)} size ${hex(exit.size)} flags ${hex(exit.flags)} (${exit.errno})`;
    case 'mmio':
      return `mmio ${exit.isWrite ? 'write' : 'read'} ${hex(exit.physAddr)} len ${exit.len}`;
    case 'fail_entry':
      return `fail_entry hardware_entry_failure_reason ${hex(exit.hardwareEntryFailureReason)} on cpu ${exit.cpu}`;
    case 'internal_error':
      return `internal_error ${exit.suberrorName} data [${exit.data.map((d) => hex(d)).join(' ')}]`;
    case 'intr':
      return `intr (${exit.errno})`;
    case 'system_event':
      return `system_event type ${exit.type} data [${exit.data.map((d) => hex(d)).join(' ')}]`;
    case 'unknown':
      return `${exit.name}${exit.hardwareExitReason !== undefined ? ` hardware_exit_reason ${hex(exit.hardwareExitReason)}` : ''}`;
    default:
      return exit.reason;
  }
}
