import type { HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError, PermissionError, UnsupportedError } from '../errors.js';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';
import { formatRange } from '../util/format.js';
import {
  ContinueMode,
  CopyMode,
  Feature,
  type FeatureName,
  IoctlBit,
  type IoctlName,
  MESSAGE_SIZE,
  MoveMode,
  OpenFlag,
  PoisonMode,
  RegisterMode,
  type RegisterModeName,
  WriteProtectMode,
  ZeropageMode,
  ioctlNames,
  namesOf,
} from './constants.js';
import { decodeEvent, pagefaultAddress, pagefaultFlags, pagefaultThreadId, type UffdEvent } from './events.js';

export interface OpenOptions {
  /** Features to request, by name or as a mask. Missing ones are refused up front, by name. */
  features?: readonly FeatureName[] | bigint;
  /**
   * O_NONBLOCK: reads return no events instead of sleeping. Default false. Needed to wait
   * with poll/epoll: the kernel answers poll() on a blocking userfaultfd with POLLERR.
   */
  nonBlocking?: boolean;
  /** UFFD_USER_MODE_ONLY: only user-mode faults (enough for most uses; allowed unprivileged). */
  userModeOnly?: boolean;
  /** How to obtain the descriptor. 'auto' tries userfaultfd(2), then /dev/userfaultfd. */
  via?: 'auto' | 'syscall' | 'device';
}

/** What UFFDIO_API says this kernel offers. */
export interface ApiInfo {
  readonly features: bigint;
  readonly ioctls: bigint;
}

/**
 * Result of COPY, ZEROPAGE, CONTINUE, POISON and MOVE. `complete` is false when the
 * kernel answered EAGAIN (the mm changed under it, e.g. a concurrent mremap or
 * MADV_DONTNEED): `bytes` were done and the rest should be retried after reading events.
 */
export interface FillResult {
  readonly bytes: number;
  readonly complete: boolean;
}

/** A range registered with UFFDIO_REGISTER, and the ioctls the kernel allows on it. */
export interface Registration {
  readonly start: HostAddress;
  readonly length: number;
  readonly modes: number;
  readonly ioctls: bigint;
  /** Whether `ioctl` may be used on this range (e.g. CONTINUE only on MINOR ranges). */
  allows(ioctl: IoctlName): boolean;
}

const PAGE = 4096;
const DEVICE = '/dev/userfaultfd';

const PERMISSION_REMEDY =
  'Run as root, or give this user access to /dev/userfaultfd (e.g. `chmod 0666 /dev/userfaultfd` or an ACL), ' +
  'or allow unprivileged use with `sysctl vm.unprivileged_userfaultfd=1`';

function checkRange(op: string, start: number, length: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length <= 0) {
    throw new InvalidArgumentError(`${op}: a range needs a non-negative start and a positive length, got start ${start}, length ${length}`);
  }
  if (start % PAGE !== 0 || length % PAGE !== 0) {
    throw new InvalidArgumentError(`${op} ${formatRange(start, length)}: start and length must be multiples of the page size (${PAGE})`);
  }
}

function modeBits(modes: readonly RegisterModeName[] | number): number {
  if (typeof modes === 'number') return modes;
  if (modes.length === 0) throw new InvalidArgumentError('register: give at least one mode (MISSING, MINOR, WP)');
  return modes.reduce((m, name) => m | RegisterMode[name], 0);
}

function featureBits(features: OpenOptions['features']): bigint {
  if (features === undefined) return 0n;
  if (typeof features === 'bigint') return features;
  return features.reduce((m, name) => m | Feature[name], 0n);
}

/**
 * A userfaultfd: the typed face of userfaultfd(2) and the UFFDIO ioctls, named as the
 * kernel names them. It knows nothing of KVM or of where memory came from.
 */
export class Userfaultfd {
  readonly fd: number;
  /** The features negotiated with UFFDIO_API (what was requested and granted). */
  readonly features: bigint;
  /** The ioctls UFFDIO_API allows on this descriptor. */
  readonly ioctls: bigint;
  /** How the descriptor was obtained. */
  readonly via: 'syscall' | 'device' | 'borrowed';
  readonly nonBlocking: boolean;
  #closed = false;
  readonly #owned: boolean;
  readonly #messages = new Uint8Array(MESSAGE_SIZE * 64);
  readonly #messageView = new DataView(this.#messages.buffer);

  private constructor(fd: number, features: bigint, ioctls: bigint, via: Userfaultfd['via'], nonBlocking: boolean) {
    this.fd = fd;
    this.features = features;
    this.ioctls = ioctls;
    this.via = via;
    this.nonBlocking = nonBlocking;
    this.#owned = via !== 'borrowed';
  }

  /** Opens a raw descriptor, before UFFDIO_API. Exposed for probing; prefer open(). */
  static rawOpen(flags: number, via: OpenOptions['via'] = 'auto'): { fd: number; via: 'syscall' | 'device' } {
    if (via === 'syscall') return { fd: native.userfaultfd(flags), via };
    if (via === 'device') return { fd: native.userfaultfdDevice(DEVICE, flags), via };
    try {
      return { fd: native.userfaultfd(flags), via: 'syscall' };
    } catch (e) {
      // userfaultfd(2) answers EPERM to unprivileged callers when vm.unprivileged_userfaultfd
      // is 0; /dev/userfaultfd (Linux 6.1+) is the sanctioned way around that, by permission
      // on the device node. ENOSYS means a kernel built without the system call.
      if (!isSystemError(e, 'EPERM', 'ENOSYS')) throw e;
      try {
        return { fd: native.userfaultfdDevice(DEVICE, flags), via: 'device' };
      } catch (e2) {
        if (isSystemError(e2, 'EACCES', 'EPERM', 'ENOENT')) {
          throw new PermissionError(`userfaultfd: not permitted (userfaultfd(2): ${(e as Error).message}; ${(e2 as Error).message})`, PERMISSION_REMEDY);
        }
        throw e2;
      }
    }
  }

  /**
   * What this kernel's UFFDIO_API offers, asked on a scratch descriptor (UFFDIO_API can be
   * called once per descriptor, and it reports everything the kernel supports).
   */
  static query(via: OpenOptions['via'] = 'auto', options: { userModeOnly?: boolean } = {}): ApiInfo {
    const flags = OpenFlag.CLOEXEC | (options.userModeOnly ? OpenFlag.USER_MODE_ONLY : 0);
    const { fd } = Userfaultfd.rawOpen(flags, via);
    try {
      const [features, ioctls] = native.uffdApi(fd, 0n);
      return { features, ioctls };
    } finally {
      native.close(fd);
    }
  }

  /**
   * Opens a userfaultfd with the requested features. Features the kernel does not grant are
   * refused by name before anything is opened for use.
   */
  static open(options: OpenOptions = {}): Userfaultfd {
    const wanted = featureBits(options.features);
    const available = Userfaultfd.query(options.via, { userModeOnly: options.userModeOnly });
    const missing = wanted & ~available.features;
    if (missing !== 0n) {
      throw new UnsupportedError(
        `userfaultfd: this kernel does not grant feature(s) ${namesOf(Feature, missing).join(', ')} ` +
          `(granted: ${namesOf(Feature, available.features).join(', ') || 'none'})`,
        'Use a newer kernel, or a backing source and mode that this kernel supports (see `postcopy probe`)',
      );
    }
    let flags = OpenFlag.CLOEXEC;
    if (options.nonBlocking) flags |= OpenFlag.NONBLOCK;
    if (options.userModeOnly) flags |= OpenFlag.USER_MODE_ONLY;
    const { fd, via } = Userfaultfd.rawOpen(flags, options.via);
    try {
      const [features, ioctls] = native.uffdApi(fd, wanted);
      // The kernel writes back everything it supports; what this descriptor has is what we asked for.
      return new Userfaultfd(fd, wanted & features, ioctls, via, options.nonBlocking ?? false);
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  /**
   * Wraps a descriptor owned elsewhere, e.g. in a worker thread that resolves faults on a
   * userfaultfd the main thread opened. close() on a borrowed handle does not close the fd.
   */
  static borrow(fd: number, features: bigint, ioctls: bigint, nonBlocking: boolean): Userfaultfd {
    return new Userfaultfd(fd, features, ioctls, 'borrowed', nonBlocking);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether `feature` was negotiated on this descriptor. */
  has(feature: FeatureName): boolean {
    return (this.features & Feature[feature]) !== 0n;
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError(`userfaultfd ${this.fd}`, op);
  }

  /** UFFDIO_REGISTER: watch [start, start+length) for the given fault modes. */
  register(start: HostAddress, length: number, modes: readonly RegisterModeName[] | number): Registration {
    this.#check('register');
    checkRange('register', start, length);
    const bits = modeBits(modes);
    const ioctls = native.uffdRegister(this.fd, start, length, bits);
    return {
      start,
      length,
      modes: bits,
      ioctls,
      allows: (name: IoctlName) => ((ioctls >> IoctlBit[name]) & 1n) === 1n,
    };
  }

  /** UFFDIO_UNREGISTER */
  unregister(start: HostAddress, length: number): void {
    this.#check('unregister');
    checkRange('unregister', start, length);
    native.uffdUnregister(this.fd, start, length);
  }

  /** UFFDIO_COPY: atomically fill [dst, dst+length) with bytes from `src` (missing faults). */
  copy(dst: HostAddress, src: HostAddress, length: number, options?: { dontWake?: boolean; writeProtect?: boolean }): FillResult {
    this.#check('copy');
    const mode = options === undefined ? 0 : (options.dontWake ? CopyMode.DONTWAKE : 0) | (options.writeProtect ? CopyMode.WP : 0);
    return filled(native.uffdCopy(this.fd, dst, src, length, mode), length);
  }

  /** UFFDIO_ZEROPAGE: map zero pages at [start, start+length) (missing faults, not hugetlb). */
  zeropage(start: HostAddress, length: number, options?: { dontWake?: boolean }): FillResult {
    this.#check('zeropage');
    return filled(native.uffdZeropage(this.fd, start, length, options?.dontWake ? ZeropageMode.DONTWAKE : 0), length);
  }

  /** UFFDIO_CONTINUE: map the existing page-cache pages at [start, start+length) (minor faults). */
  continue(start: HostAddress, length: number, options?: { dontWake?: boolean; writeProtect?: boolean }): FillResult {
    this.#check('continue');
    const mode = options === undefined ? 0 : (options.dontWake ? ContinueMode.DONTWAKE : 0) | (options.writeProtect ? ContinueMode.WP : 0);
    return filled(native.uffdContinue(this.fd, start, length, mode), length);
  }

  /** UFFDIO_POISON: mark [start, start+length) poisoned; a touch gets SIGBUS. */
  poison(start: HostAddress, length: number, options: { dontWake?: boolean } = {}): FillResult {
    this.#check('poison');
    return filled(native.uffdPoison(this.fd, start, length, options.dontWake ? PoisonMode.DONTWAKE : 0), length);
  }

  /** UFFDIO_MOVE: move pages from `src` to `dst` (anonymous memory) without copying. */
  move(dst: HostAddress, src: HostAddress, length: number, options: { dontWake?: boolean; allowSrcHoles?: boolean } = {}): FillResult {
    this.#check('move');
    const mode = (options.dontWake ? MoveMode.DONTWAKE : 0) | (options.allowSrcHoles ? MoveMode.ALLOW_SRC_HOLES : 0);
    return filled(native.uffdMove(this.fd, dst, src, length, mode), length);
  }

  /** UFFDIO_WAKE: wake threads waiting on faults in [start, start+length). */
  wake(start: HostAddress, length: number): void {
    this.#check('wake');
    native.uffdWake(this.fd, start, length);
  }

  /** UFFDIO_WRITEPROTECT: set (protect true) or clear write protection on a WP-registered range. */
  writeProtect(start: HostAddress, length: number, protect: boolean, options: { dontWake?: boolean } = {}): void {
    this.#check('writeProtect');
    const mode = (protect ? WriteProtectMode.WP : 0) | (options.dontWake ? WriteProtectMode.DONTWAKE : 0);
    native.uffdWriteProtect(this.fd, start, length, mode);
  }

  /**
   * Reads the pending messages into this handle's buffer and returns how many there are
   * (up to 64); decode them with event(i). Returns 0 when a non-blocking descriptor has
   * none. This is the allocation-free path for fault readers.
   */
  read(): number {
    this.#check('read');
    const n = native.read(this.fd, this.#messages);
    return n < 0 ? 0 : n / MESSAGE_SIZE;
  }

  /**
   * Waits in poll(2) on `fds` (Int32Array [fd, events, revents] triples, which should
   * include this descriptor with POLLIN), then reads this descriptor's messages if it is
   * readable: the number read (0 when it was not readable or another reader took them).
   * revents are written back, so the caller sees its other descriptors (a stop eventfd).
   * Needs a non-blocking descriptor.
   */
  pollRead(fds: Int32Array, timeoutMs = -1): number {
    this.#check('pollRead');
    const n = native.pollRead(fds, timeoutMs, this.fd, this.#messages);
    return n < 0 ? 0 : n / MESSAGE_SIZE;
  }

  /** The i-th message of the last read(). */
  event(i: number): UffdEvent {
    return decodeEvent(this.#messageView, i * MESSAGE_SIZE);
  }

  /** The faulting address of the i-th message of the last read() if it is a page fault, else -1 (no allocation). */
  faultAddress(i: number): number {
    return pagefaultAddress(this.#messageView, i * MESSAGE_SIZE);
  }

  /** The page-fault flags of the i-th message of the last read() (PagefaultFlag bits: WRITE, WP, MINOR). */
  faultFlags(i: number): number {
    return pagefaultFlags(this.#messageView, i * MESSAGE_SIZE);
  }

  /** The faulting thread of the i-th message of the last read() (needs feature THREAD_ID). */
  faultThreadId(i: number): number {
    return pagefaultThreadId(this.#messageView, i * MESSAGE_SIZE);
  }

  /** Reads and decodes the pending events (blocks on a blocking descriptor). */
  readEvents(): UffdEvent[] {
    const n = this.read();
    const events: UffdEvent[] = [];
    for (let i = 0; i < n; i++) events.push(this.event(i));
    return events;
  }

  /**
   * Closes the descriptor (safe twice). The kernel wakes any thread still waiting on a
   * fault, and the range behaves as if it had never been registered.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) native.close(this.fd);
  }

  /** Names of the negotiated features, for reports. */
  featureNames(): FeatureName[] {
    return namesOf(Feature, this.features);
  }

  /** Names of the ioctls allowed on this descriptor, for reports. */
  ioctlNames(): IoctlName[] {
    return ioctlNames(this.ioctls);
  }
}

function filled(bytes: number, length: number): FillResult {
  return { bytes, complete: bytes === length };
}
