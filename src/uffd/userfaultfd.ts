import type { HostAddress } from '../address.js';
import { ArgumentError, ClosedError, InvalidArgumentError, PermissionError, UnsupportedError } from '../errors.js';
import { native } from '../native/binding.js';
import { describe, flagBits, integer, oneOf, optionalBoolean, options as optionsArg } from '../native/args.js';
import { isSystemError, SystemError } from '../native/errors.js';
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
import { MAX_POLL_FDS, POLLERR, POLLNVAL } from './poll.js';
import { explainRegisterError } from './register-errors.js';

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
const VIA = ['auto', 'syscall', 'device'] as const;

/**
 * What lets an unprivileged user have a userfaultfd, best first. `userModeOnly` is left
 * out when it was already asked for.
 */
function permissionRemedy(userModeOnly: boolean): string {
  return (
    (userModeOnly
      ? ''
      : 'Pass `userModeOnly: true` to Userfaultfd.open (userfaultfd(2) with UFFD_USER_MODE_ONLY is allowed without privilege; ' +
        'it handles faults of user-space accesses only, not those of a KVM guest or of a system call such as read(2) into the range), or ') +
    'give this user access to /dev/userfaultfd (e.g. `chmod 0666 /dev/userfaultfd` or an ACL), ' +
    'or allow unprivileged use with `sysctl vm.unprivileged_userfaultfd=1`, or run as root'
  );
}

/** Checks a page-aligned range [start, start+length) handed to `op`. */
function checkRange(op: string, start: unknown, length: unknown, names: readonly [string, string] = ['start', 'length']): void {
  integer(op, names[0], start, { min: 0 });
  integer(op, names[1], length, { min: 1 });
  if ((start as number) % PAGE !== 0 || (length as number) % PAGE !== 0) {
    throw new InvalidArgumentError(`${op} ${formatRange(start as number, length as number)}: ${names[0]} and ${names[1]} must be multiples of the page size (${PAGE})`);
  }
}

/**
 * A source address: MOVE takes whole pages (the kernel refuses an unaligned src with
 * EINVAL); COPY reads bytes with copy_from_user and takes any address (received pages sit
 * at any offset of a socket buffer).
 */
function checkSource(op: string, src: unknown, aligned: boolean): void {
  if (aligned) integer(op, 'src', src, { min: 0, multipleOf: PAGE, unit: `the page size (${PAGE})` });
  else integer(op, 'src', src, { min: 0 });
}

/** A u64 mask given as a bigint. */
function integerMask(where: string, argument: string, value: bigint): bigint {
  if (value < 0n || value >= 1n << 64n) throw new ArgumentError(argument, `${where}: ${argument} must be a u64 mask (0n to 2n ** 64n - 1n), got ${value}n`);
  return value;
}

/** The mode bits from names or a number; at least one mode. */
function modeBits(modes: unknown): number {
  const bits = Number(flagBits('register', 'modes', modes, RegisterMode, true));
  if (bits === 0) throw new InvalidArgumentError('register: give at least one mode (MISSING, MINOR, WP)');
  return bits;
}

/** Boolean flags of a fill's options object (each true, false or omitted), as a mode mask. */
function fillMode(op: string, value: unknown, flags: Readonly<Record<string, number>>): number {
  const o = optionsArg<Record<string, unknown>>(op, 'options', value);
  let mode = 0;
  for (const [key, bit] of Object.entries(flags)) if (optionalBoolean(op, `options.${key}`, o[key])) mode |= bit;
  return mode;
}

/** Linux versions that added what a kernel may lack, for UnsupportedError messages. */
const ADDED_IN = {
  MINOR: 'MINOR faults (UFFD_FEATURE_MINOR_HUGETLBFS, Linux 5.13; MINOR_SHMEM, 5.14)',
  WP: 'write-protect faults (UFFD_FEATURE_PAGEFAULT_FLAG_WP, Linux 5.7)',
  POISON: 'UFFDIO_POISON (UFFD_FEATURE_POISON, Linux 6.6)',
  MOVE: 'UFFDIO_MOVE (UFFD_FEATURE_MOVE, Linux 6.8)',
} as const;

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
  /**
   * Everything this kernel's UFFDIO_API offered (a superset of `features`), which says
   * what the kernel has (MINOR, POISON, MOVE, WP); undefined for a borrowed descriptor.
   */
  readonly kernelFeatures: bigint | undefined;
  #closed = false;
  #count = 0;
  readonly #owned: boolean;
  readonly #messages = new Uint8Array(MESSAGE_SIZE * 64);
  readonly #messageView = new DataView(this.#messages.buffer);

  private constructor(fd: number, features: bigint, ioctls: bigint, via: Userfaultfd['via'], nonBlocking: boolean, kernelFeatures?: bigint) {
    this.fd = fd;
    this.kernelFeatures = kernelFeatures;
    this.features = features;
    this.ioctls = ioctls;
    this.via = via;
    this.nonBlocking = nonBlocking;
    this.#owned = via !== 'borrowed';
  }

  /** Opens a raw descriptor, before UFFDIO_API. Exposed for probing; prefer open(). */
  static rawOpen(flags: number, via: OpenOptions['via'] = 'auto'): { fd: number; via: 'syscall' | 'device' } {
    integer('Userfaultfd.rawOpen', 'flags', flags, { min: 0, max: 0xffff_ffff });
    if ((flags & ~(OpenFlag.USER_MODE_ONLY | OpenFlag.NONBLOCK | OpenFlag.CLOEXEC)) !== 0) {
      throw new InvalidArgumentError(`Userfaultfd.rawOpen: flags 0x${flags.toString(16)} has bits other than USER_MODE_ONLY, NONBLOCK and CLOEXEC (OpenFlag)`);
    }
    const how = oneOf('Userfaultfd.rawOpen', 'via', via, VIA);
    const userModeOnly = (flags & OpenFlag.USER_MODE_ONLY) !== 0;
    const refused = (detail: string) => new PermissionError(`userfaultfd: not permitted (${detail})`, permissionRemedy(userModeOnly));
    const bySyscall = () => native.userfaultfd(flags);
    const byDevice = () => native.userfaultfdDevice(DEVICE, flags);
    if (how === 'syscall') {
      try {
        return { fd: bySyscall(), via: how };
      } catch (e) {
        if (isSystemError(e, 'EPERM')) throw refused(e.message);
        throw e;
      }
    }
    if (how === 'device') {
      try {
        return { fd: byDevice(), via: how };
      } catch (e) {
        if (isSystemError(e, 'EACCES', 'EPERM', 'ENOENT')) throw refused(e.message);
        throw e;
      }
    }
    try {
      return { fd: bySyscall(), via: 'syscall' };
    } catch (e) {
      // userfaultfd(2) answers EPERM to unprivileged callers when vm.unprivileged_userfaultfd
      // is 0 (unless UFFD_USER_MODE_ONLY); /dev/userfaultfd (Linux 6.1+) is the sanctioned
      // way around that, by permission on the device node. ENOSYS means a kernel built
      // without the system call.
      if (!isSystemError(e, 'EPERM', 'ENOSYS')) throw e;
      try {
        return { fd: byDevice(), via: 'device' };
      } catch (e2) {
        if (isSystemError(e2, 'EACCES', 'EPERM', 'ENOENT')) throw refused(`userfaultfd(2): ${e.message}; ${(e2 as Error).message}`);
        throw e2;
      }
    }
  }

  /**
   * What this kernel's UFFDIO_API offers, asked on a scratch descriptor (UFFDIO_API can be
   * called once per descriptor, and it reports everything the kernel supports).
   */
  static query(via: OpenOptions['via'] = 'auto', options: { userModeOnly?: boolean } = {}): ApiInfo {
    const o = optionsArg<{ userModeOnly: boolean }>('Userfaultfd.query', 'options', options);
    const userModeOnly = optionalBoolean('Userfaultfd.query', 'options.userModeOnly', o.userModeOnly);
    const flags = OpenFlag.CLOEXEC | (userModeOnly ? OpenFlag.USER_MODE_ONLY : 0);
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
    const where = 'Userfaultfd.open';
    const o = optionsArg<OpenOptions>(where, 'options', options);
    // Names must be known; a mask may hold bits newer than this library (refused below, by
    // the kernel's answer, if this kernel lacks them).
    const wanted =
      o.features === undefined ? 0n
      : typeof o.features === 'bigint' ? integerMask(where, 'options.features', o.features)
      : flagBits(where, 'options.features', o.features, Feature, false);
    const nonBlocking = optionalBoolean(where, 'options.nonBlocking', o.nonBlocking) ?? false;
    const userModeOnly = optionalBoolean(where, 'options.userModeOnly', o.userModeOnly) ?? false;
    const via = oneOf(where, 'options.via', o.via ?? 'auto', VIA);
    const available = Userfaultfd.query(via, { userModeOnly });
    const missing = wanted & ~available.features;
    if (missing !== 0n) {
      throw new UnsupportedError(
        `userfaultfd: this kernel does not grant feature(s) ${namesOf(Feature, missing).join(', ')} ` +
          `(granted: ${namesOf(Feature, available.features).join(', ') || 'none'})`,
        'Use a newer kernel, or a backing source and mode that this kernel supports (see `postcopy probe`)',
      );
    }
    let flags = OpenFlag.CLOEXEC;
    if (nonBlocking) flags |= OpenFlag.NONBLOCK;
    if (userModeOnly) flags |= OpenFlag.USER_MODE_ONLY;
    const raw = Userfaultfd.rawOpen(flags, via);
    try {
      const [features, ioctls] = native.uffdApi(raw.fd, wanted);
      // The kernel writes back everything it supports; what this descriptor has is what we asked for.
      return new Userfaultfd(raw.fd, wanted & features, ioctls, raw.via, nonBlocking, features);
    } catch (e) {
      native.close(raw.fd);
      throw e;
    }
  }

  /**
   * Wraps a descriptor owned elsewhere, e.g. in a worker thread that resolves faults on a
   * userfaultfd the main thread opened. close() on a borrowed handle does not close the fd.
   */
  static borrow(fd: number, features: bigint, ioctls: bigint, nonBlocking: boolean): Userfaultfd {
    integer('Userfaultfd.borrow', 'fd', fd, { min: 0, max: 0x7fff_ffff });
    if (typeof features !== 'bigint') throw new ArgumentError('features', `Userfaultfd.borrow: features must be a bigint mask (Userfaultfd.features), got ${describe(features)}`);
    integerMask('Userfaultfd.borrow', 'features', features);
    if (typeof ioctls !== 'bigint') throw new ArgumentError('ioctls', `Userfaultfd.borrow: ioctls must be a bigint mask (Userfaultfd.ioctls), got ${describe(ioctls)}`);
    integerMask('Userfaultfd.borrow', 'ioctls', ioctls);
    if (typeof nonBlocking !== 'boolean') throw new ArgumentError('nonBlocking', `Userfaultfd.borrow: nonBlocking must be true or false (Userfaultfd.nonBlocking), got ${describe(nonBlocking)}`);
    return new Userfaultfd(fd, features, ioctls, 'borrowed', nonBlocking);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether `feature` was negotiated on this descriptor. */
  has(feature: FeatureName): boolean {
    return (this.features & flagBits('has', 'feature', [feature], Feature, false)) !== 0n;
  }

  /**
   * Refuses, as UnsupportedError, what this kernel lacks (known from UFFDIO_API at open();
   * not checked on a borrowed descriptor): an old kernel answers an unknown ioctl or mode
   * with EINVAL, which would read as a wrong argument.
   */
  #need(op: string, what: keyof typeof ADDED_IN, bits: bigint): void {
    if (this.kernelFeatures === undefined || (this.kernelFeatures & bits) !== 0n) return;
    throw new UnsupportedError(`${op}: this kernel's userfaultfd has no ${ADDED_IN[what]}`, 'Use a newer kernel (see `postcopy probe`)');
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError(`userfaultfd ${this.fd}`, op);
  }

  /**
   * UFFDIO_REGISTER: watch [start, start+length) for the given fault modes. When the kernel
   * refuses (EINVAL, EBUSY, ENOMEM), the SystemError says why where the mapping shows it
   * (`MINOR faults need a page cache …`), keeping its code.
   */
  register(start: HostAddress, length: number, modes: readonly RegisterModeName[] | number): Registration {
    this.#check('register');
    checkRange('register', start, length);
    const bits = modeBits(modes);
    if (bits & RegisterMode.MINOR) this.#need('register', 'MINOR', Feature.MINOR_HUGETLBFS | Feature.MINOR_SHMEM);
    if (bits & RegisterMode.WP) this.#need('register', 'WP', Feature.PAGEFAULT_FLAG_WP);
    let ioctls: bigint;
    try {
      ioctls = native.uffdRegister(this.fd, start, length, bits);
    } catch (e) {
      throw e instanceof SystemError ? explainRegisterError(e, start, length, bits) : e;
    }
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
    checkRange('copy', dst, length, ['dst', 'length']);
    checkSource('copy', src, false);
    const mode = options === undefined ? 0 : fillMode('copy', options, { dontWake: CopyMode.DONTWAKE, writeProtect: CopyMode.WP });
    return filled(native.uffdCopy(this.fd, dst, src, length, mode), length);
  }

  /** UFFDIO_ZEROPAGE: map zero pages at [start, start+length) (missing faults, not hugetlb). */
  zeropage(start: HostAddress, length: number, options?: { dontWake?: boolean }): FillResult {
    this.#check('zeropage');
    checkRange('zeropage', start, length);
    const mode = options === undefined ? 0 : fillMode('zeropage', options, { dontWake: ZeropageMode.DONTWAKE });
    return filled(native.uffdZeropage(this.fd, start, length, mode), length);
  }

  /** UFFDIO_CONTINUE: map the existing page-cache pages at [start, start+length) (minor faults). */
  continue(start: HostAddress, length: number, options?: { dontWake?: boolean; writeProtect?: boolean }): FillResult {
    this.#check('continue');
    checkRange('continue', start, length);
    this.#need('continue', 'MINOR', Feature.MINOR_HUGETLBFS | Feature.MINOR_SHMEM);
    const mode = options === undefined ? 0 : fillMode('continue', options, { dontWake: ContinueMode.DONTWAKE, writeProtect: ContinueMode.WP });
    return filled(native.uffdContinue(this.fd, start, length, mode), length);
  }

  /** UFFDIO_POISON: mark [start, start+length) poisoned; a touch gets SIGBUS. */
  poison(start: HostAddress, length: number, options: { dontWake?: boolean } = {}): FillResult {
    this.#check('poison');
    checkRange('poison', start, length);
    this.#need('poison', 'POISON', Feature.POISON);
    const mode = fillMode('poison', options, { dontWake: PoisonMode.DONTWAKE });
    return filled(native.uffdPoison(this.fd, start, length, mode), length);
  }

  /** UFFDIO_MOVE: move pages from `src` to `dst` (anonymous memory) without copying. */
  move(dst: HostAddress, src: HostAddress, length: number, options: { dontWake?: boolean; allowSrcHoles?: boolean } = {}): FillResult {
    this.#check('move');
    checkRange('move', dst, length, ['dst', 'length']);
    checkSource('move', src, true);
    this.#need('move', 'MOVE', Feature.MOVE);
    const mode = fillMode('move', options, { dontWake: MoveMode.DONTWAKE, allowSrcHoles: MoveMode.ALLOW_SRC_HOLES });
    return filled(native.uffdMove(this.fd, dst, src, length, mode), length);
  }

  /** UFFDIO_WAKE: wake threads waiting on faults in [start, start+length). */
  wake(start: HostAddress, length: number): void {
    this.#check('wake');
    checkRange('wake', start, length);
    native.uffdWake(this.fd, start, length);
  }

  /** UFFDIO_WRITEPROTECT: set (protect true) or clear write protection on a WP-registered range. */
  writeProtect(start: HostAddress, length: number, protect: boolean, options: { dontWake?: boolean } = {}): void {
    this.#check('writeProtect');
    checkRange('writeProtect', start, length);
    if (typeof protect !== 'boolean') throw new ArgumentError('protect', `writeProtect: protect must be true or false, got ${describe(protect)}`);
    this.#need('writeProtect', 'WP', Feature.PAGEFAULT_FLAG_WP);
    const mode = (protect ? WriteProtectMode.WP : 0) | fillMode('writeProtect', options, { dontWake: WriteProtectMode.DONTWAKE });
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
    return (this.#count = n < 0 ? 0 : n / MESSAGE_SIZE);
  }

  /**
   * Checks a poll set for poll()/pollRead(): an Int32Array of at most 16 [fd, events,
   * revents] triples that includes this descriptor, on a non-blocking userfaultfd.
   */
  #checkPoll(op: string, fds: unknown, timeoutMs: unknown): asserts fds is Int32Array {
    if (!this.nonBlocking) {
      throw new InvalidArgumentError(
        `${op}: userfaultfd ${this.fd} is blocking, and the kernel answers poll on a blocking userfaultfd with POLLERR at once, for ever (a busy loop that reads nothing)`,
        'Open it with `nonBlocking: true` (or read() on a thread of its own, which sleeps in the kernel)',
      );
    }
    if (!(fds instanceof Int32Array) || fds.length === 0 || fds.length % 3 !== 0 || fds.length > 3 * MAX_POLL_FDS) {
      throw new InvalidArgumentError(`${op}: fds must be an Int32Array of 1 to ${MAX_POLL_FDS} [fd, events, revents] triples (see pollFds), got ${fds instanceof Int32Array ? `${fds.length} elements` : String(fds)}`);
    }
    integer(op, 'timeoutMs', timeoutMs, { min: -1, max: 0x7fff_ffff });
    for (let i = 0; i < fds.length; i += 3) if (fds[i] === this.fd) return;
    throw new InvalidArgumentError(`${op}: fds does not include this userfaultfd (${this.fd}); add [${this.fd}, POLLIN]`);
  }

  /** After poll: POLLERR/POLLNVAL on this descriptor means it cannot be waited on at all. */
  #checkRevents(op: string, fds: Int32Array): void {
    for (let i = 0; i < fds.length; i += 3) {
      if (fds[i] !== this.fd) continue;
      const re = fds[i + 2]!;
      if (re & POLLNVAL) throw new InvalidArgumentError(`${op}: userfaultfd ${this.fd} is not an open descriptor (POLLNVAL)`);
      if (re & POLLERR) {
        throw new InvalidArgumentError(
          `${op}: poll answered POLLERR on userfaultfd ${this.fd}: it is blocking (O_NONBLOCK not set) or UFFDIO_API was never done on it`,
          'Use a descriptor from Userfaultfd.open({ nonBlocking: true })',
        );
      }
    }
  }

  /**
   * poll(2) on `fds` (see pollFds; it must include this descriptor, with POLLIN to wait
   * for messages): the number of descriptors ready, 0 on timeout (timeoutMs, -1 for ever).
   * revents are written back. Needs a non-blocking descriptor.
   */
  poll(fds: Int32Array, timeoutMs = -1): number {
    this.#check('poll');
    this.#checkPoll('poll', fds, timeoutMs);
    const n = native.poll(fds, timeoutMs);
    this.#checkRevents('poll', fds);
    return n;
  }

  /**
   * Waits in poll(2) on `fds` (Int32Array [fd, events, revents] triples, see pollFds, which
   * must include this descriptor, with POLLIN), then reads this descriptor's messages if it
   * is readable: the number read (0 when it was not readable or another reader took them).
   * revents are written back, so the caller sees its other descriptors (a stop eventfd).
   * Needs a non-blocking descriptor: a blocking one is refused (the kernel would answer
   * POLLERR for ever).
   */
  pollRead(fds: Int32Array, timeoutMs = -1): number {
    this.#check('pollRead');
    this.#checkPoll('pollRead', fds, timeoutMs);
    const n = native.pollRead(fds, timeoutMs, this.fd, this.#messages);
    if (n < 0) this.#checkRevents('pollRead', fds);
    return (this.#count = n < 0 ? 0 : n / MESSAGE_SIZE);
  }

  #index(op: string, i: number): number {
    if (!(Number.isInteger(i) && i >= 0 && i < this.#count)) {
      throw new InvalidArgumentError(`${op}: message ${String(i)} does not exist; the last read returned ${this.#count}`);
    }
    return i * MESSAGE_SIZE;
  }

  /** The i-th message of the last read(). */
  event(i: number): UffdEvent {
    return decodeEvent(this.#messageView, this.#index('event', i));
  }

  /** The faulting address of the i-th message of the last read() if it is a page fault, else -1 (no allocation). */
  faultAddress(i: number): number {
    return pagefaultAddress(this.#messageView, this.#index('faultAddress', i));
  }

  /** The page-fault flags of the i-th message of the last read() (PagefaultFlag bits: WRITE, WP, MINOR; see pagefaultKind). */
  faultFlags(i: number): number {
    return pagefaultFlags(this.#messageView, this.#index('faultFlags', i));
  }

  /** The faulting thread of the i-th message of the last read() (needs feature THREAD_ID). */
  faultThreadId(i: number): number {
    return pagefaultThreadId(this.#messageView, this.#index('faultThreadId', i));
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
