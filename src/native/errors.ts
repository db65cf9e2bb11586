import { constants } from 'node:os';
import { formatRange } from '../util/format.js';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  // Several names can share a number (EAGAIN/EWOULDBLOCK): keep the first, canonical one.
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** The symbolic name of an errno value, e.g. 17 -> 'EEXIST'. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/**
 * A failed kernel call, thrown by the addon. Carries what a person needs to act on it:
 * the call (`ioctl(UFFDIO_CONTINUE)`), the errno and its name (`code`), and the address
 * range the call was about, as a half-open interval.
 */
export class SystemError extends Error {
  override name = 'SystemError';
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  readonly start: number | undefined;
  readonly length: number | undefined;
  /** What the errno means for this call, where the library could tell (see explain()). */
  readonly reason: string | undefined;
  /** What to do about it, with the reason. */
  readonly remedy: string | undefined;

  constructor(syscall: string, errno: number, start?: number, length?: number, reason?: string, remedy?: string) {
    const code = errnoName(errno);
    const where = length !== undefined && start !== undefined ? ` ${formatRange(start, length)}` : '';
    super(`${syscall}${where}: ${code}${reason ? `: ${reason}` : ''}${remedy ? `. ${remedy}` : ''}`);
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    this.start = start;
    this.length = length;
    this.reason = reason;
    this.remedy = remedy;
  }

  /**
   * The same failure (same class, code, errno, call and range: callers testing
   * `isSystemError(e, 'EINVAL')` still match) with the reason the library found:
   * `ioctl(UFFDIO_REGISTER) [0x7f…, 0x7f…): EINVAL: MINOR faults need a page cache …`.
   */
  explain(reason: string, remedy?: string): SystemError {
    const e = new SystemError(this.syscall, this.errno, this.start, this.length, reason, remedy);
    e.cause = this;
    return e;
  }
}

/** True when `e` is a SystemError with one of the given codes. */
export function isSystemError(e: unknown, ...codes: string[]): e is SystemError {
  return e instanceof SystemError && (codes.length === 0 || codes.includes(e.code));
}
