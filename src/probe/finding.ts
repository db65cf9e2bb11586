import { PostcopyError } from '../errors.js';

/**
 * The answer to one question the probe asked the machine.
 * - ok: it was tried and worked.
 * - missing: it was tried and the machine said no (or lacks what it needs).
 * - skipped: it was not tried, and `detail` says why (e.g. no hugepages to try it on).
 * Anything not ok carries a remedy: what a person can do about it.
 */
export interface Finding {
  readonly status: 'ok' | 'missing' | 'skipped';
  /** What was found, or the kernel's answer (`ioctl(UFFDIO_REGISTER) [...]: EINVAL`), or why not tried. */
  readonly detail: string;
  readonly remedy?: string;
}

export function ok(detail: string): Finding {
  return { status: 'ok', detail };
}

export function missing(detail: string, remedy: string): Finding {
  return { status: 'missing', detail, remedy };
}

export function skipped(detail: string, remedy: string): Finding {
  return { status: 'skipped', detail, remedy };
}

/**
 * A finding from a failure: the error's own message, and its remedy when it is one of ours
 * (a PostcopyError says what to do), else `fallback`.
 */
export function failed(e: unknown, fallback: string): Finding {
  if (e instanceof PostcopyError) return missing(e.detail, e.remedy ?? fallback);
  return missing(e instanceof Error ? e.message : String(e), fallback);
}

function isFinding(value: unknown): value is Finding {
  return typeof value === 'object' && value !== null && 'status' in value && 'detail' in value;
}

/**
 * Every finding in a report, with its path (`backings.3.register.MINOR`), depth first. Reports
 * are plain data, so this walks any of them; it is how "every failure has a remedy" is checked.
 */
export function* walkFindings(value: unknown, path = ''): Generator<[path: string, finding: Finding]> {
  if (typeof value !== 'object' || value === null) return;
  if (isFinding(value)) yield [path, value];
  for (const [key, child] of Object.entries(value)) yield* walkFindings(child, path ? `${path}.${key}` : key);
}
