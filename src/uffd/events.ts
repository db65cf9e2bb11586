import { hva, type HostAddress } from '../address.js';
import { EventCode, MESSAGE_SIZE, PagefaultFlag } from './constants.js';

/** A page fault: the faulting thread sleeps until the range is resolved (or woken). */
export interface PagefaultEvent {
  readonly type: 'pagefault';
  /** The faulting address; page-aligned unless the EXACT_ADDRESS feature was requested. */
  readonly address: HostAddress;
  /** missing: no page in the page cache or anon mapping; minor: the page exists but is not mapped here; wp: write to a write-protected page. */
  readonly kind: 'missing' | 'minor' | 'wp';
  readonly write: boolean;
  /** The faulting thread's id, with the THREAD_ID feature; 0 without it. */
  readonly threadId: number;
}

/** The registered process forked: `uffd` is a new userfaultfd (in this process) for the child's mm. */
export interface ForkEvent {
  readonly type: 'fork';
  readonly uffd: number;
}

/** A registered range moved (mremap). */
export interface RemapEvent {
  readonly type: 'remap';
  readonly from: HostAddress;
  readonly to: HostAddress;
  readonly length: number;
}

/** Pages of a registered range were dropped (MADV_DONTNEED, MADV_REMOVE): [start, end). */
export interface RemoveEvent {
  readonly type: 'remove';
  readonly start: HostAddress;
  readonly end: HostAddress;
}

/** Part of a registered range was unmapped (munmap): [start, end). */
export interface UnmapEvent {
  readonly type: 'unmap';
  readonly start: HostAddress;
  readonly end: HostAddress;
}

/** An event that this library does not know; kept so that nothing is silently dropped. */
export interface UnknownEvent {
  readonly type: 'unknown';
  readonly code: number;
}

export type UffdEvent = PagefaultEvent | ForkEvent | RemapEvent | RemoveEvent | UnmapEvent | UnknownEvent;

const PAGEFAULT_FLAG_WRITE = Number(PagefaultFlag.WRITE);
const PAGEFAULT_FLAG_WP = Number(PagefaultFlag.WP);
const PAGEFAULT_FLAG_MINOR = Number(PagefaultFlag.MINOR);

export type PagefaultKind = PagefaultEvent['kind'];

/**
 * What kind of fault uffd_msg.arg.pagefault.flags describe (Userfaultfd.faultFlags(i)):
 * MINOR set: 'minor'; else WP set: 'wp'; else 'missing'. The one decoding of these bits.
 */
export function pagefaultKind(flags: number): PagefaultKind {
  return flags & PAGEFAULT_FLAG_MINOR ? 'minor' : flags & PAGEFAULT_FLAG_WP ? 'wp' : 'missing';
}

/** Whether the page-fault flags say the access was a write. */
export function pagefaultWrite(flags: number): boolean {
  return (flags & PAGEFAULT_FLAG_WRITE) !== 0;
}

// Reads a u64 that is known to fit a double (addresses, lengths) without a BigInt.
function u64(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * 0x1_0000_0000;
}

/**
 * The faulting address of the uffd_msg at `offset` if it is a page fault, else -1: the
 * allocation-free path for fault readers (decodeEvent builds an object per message).
 */
export function pagefaultAddress(view: DataView, offset = 0): number {
  return view.getUint8(offset) === EventCode.PAGEFAULT ? u64(view, offset + 16) : -1;
}

/** The faulting thread's id of the message at `offset` (with UFFD_FEATURE_THREAD_ID; 0 without). */
export function pagefaultThreadId(view: DataView, offset = 0): number {
  return view.getUint32(offset + 24, true);
}

/** The uffd_msg.arg.pagefault.flags of the message at `offset` (WRITE 1, WP 2, MINOR 4). */
export function pagefaultFlags(view: DataView, offset = 0): number {
  return view.getUint32(offset + 8, true);
}

/**
 * Decodes the uffd_msg at `offset` of `view` (the one place that knows struct uffd_msg):
 *   u8 event; u8 reserved1; u16 reserved2; u32 reserved3; union arg (24 bytes) at +8.
 */
export function decodeEvent(view: DataView, offset = 0): UffdEvent {
  const code = view.getUint8(offset);
  const arg = offset + 8;
  switch (code) {
    case EventCode.PAGEFAULT: {
      // arg.pagefault: u64 flags; u64 address; u32 ptid
      const flags = view.getUint32(arg, true);
      return {
        type: 'pagefault',
        address: hva(u64(view, arg + 8)),
        kind: pagefaultKind(flags),
        write: pagefaultWrite(flags),
        threadId: view.getUint32(arg + 16, true),
      };
    }
    case EventCode.FORK:
      return { type: 'fork', uffd: view.getUint32(arg, true) };
    case EventCode.REMAP:
      return { type: 'remap', from: hva(u64(view, arg)), to: hva(u64(view, arg + 8)), length: u64(view, arg + 16) };
    case EventCode.REMOVE:
      return { type: 'remove', start: hva(u64(view, arg)), end: hva(u64(view, arg + 8)) };
    case EventCode.UNMAP:
      return { type: 'unmap', start: hva(u64(view, arg)), end: hva(u64(view, arg + 8)) };
    default:
      return { type: 'unknown', code };
  }
}

export { MESSAGE_SIZE };
