/**
 * Option values shared by the commands: each parser turns text into a value or throws a
 * UsageError that names the flag, shows what was given, and points to the command's --help.
 */
import { BACKING_SOURCES, type BackingSourceName, isBackingSource } from '../memory/backing.js';
import { parseDuration, parseSize } from '../util/format.js';
import { UsageError } from './command.js';

export function optionParsers(command: string) {
  const usage = (message: string) => new UsageError(message, `${command} --help`);
  return {
    usage,
    /** An integer ≥ min; `fallback` when the flag is absent. */
    integer(flag: string, text: string | undefined, fallback: number, min = 1): number {
      if (text === undefined) return fallback;
      if (!/^\d+$/.test(text) || Number(text) < min) throw usage(`${flag} needs an integer ≥ ${min}, got '${text}'`);
      if (!Number.isSafeInteger(Number(text))) throw usage(`${flag}: ${text} is too large`);
      return Number(text);
    },
    /** A size such as 256M or 1G. */
    size(flag: string, text: string | undefined, fallback: number): number {
      if (text === undefined) return fallback;
      const b = parseSize(text);
      if (b === undefined) throw usage(`${flag} takes a size such as 256M or 1G, got '${text}'`);
      if (b <= 0) throw usage(`${flag} must be a positive size such as 256M or 1G, got '${text}'`);
      // 2^53: past it a byte count is no longer exact, and no machine has that much memory.
      if (!Number.isSafeInteger(b)) throw usage(`${flag} ${text} is larger than any memory (at most ${2 ** 53} bytes)`);
      return b;
    },
    /** A duration such as 500ms or 2s, in ms. */
    duration(flag: string, text: string | undefined, fallback: number): number {
      if (text === undefined) return fallback;
      const ms = parseDuration(text);
      if (ms === undefined) throw usage(`${flag} takes a duration such as 500ms or 2s, got '${text}'`);
      // A timer takes at most 2^31 - 1 ms (~24.8 days); beyond, Node fires it at once.
      if (ms > 2 ** 31 - 1) throw usage(`${flag} ${text} is longer than a timer can wait (at most ${2 ** 31 - 1} ms, about 24 days)`);
      return ms;
    },
    /**
     * -s: a backing source name, one of `valid` (all of them by default; a command that
     * supports fewer, as migrate does, passes its own list so the message lists only those).
     */
    backing<const S extends BackingSourceName = BackingSourceName>(text: string, valid: readonly S[] = BACKING_SOURCES as readonly BackingSourceName[] as readonly S[]): S {
      if (!isBackingSource(text) || !(valid as readonly string[]).includes(text)) {
        const known = isBackingSource(text) ? `'${text}' is not supported here` : `unknown backing source '${text}'`;
        throw usage(`-s: ${known}; one of ${valid.join(', ')}`);
      }
      return text as S;
    },
    /** -u: MISSING or MINOR, any case. */
    faultMode(text: string): 'MISSING' | 'MINOR' {
      const u = text.toUpperCase();
      if (u !== 'MISSING' && u !== 'MINOR') throw usage(`-u takes MISSING or MINOR, got '${text}'`);
      return u;
    },
  };
}
