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
      return Number(text);
    },
    /** A size such as 256M or 1G. */
    size(flag: string, text: string | undefined, fallback: number): number {
      if (text === undefined) return fallback;
      const b = parseSize(text);
      if (b === undefined || b <= 0) throw usage(`${flag} takes a size such as 256M or 1G, got '${text}'`);
      return b;
    },
    /** A duration such as 500ms or 2s, in ms. */
    duration(flag: string, text: string | undefined, fallback: number): number {
      if (text === undefined) return fallback;
      const ms = parseDuration(text);
      if (ms === undefined) throw usage(`${flag} takes a duration such as 500ms or 2s, got '${text}'`);
      return ms;
    },
    /** -s: a backing source name. */
    backing(text: string): BackingSourceName {
      if (!isBackingSource(text)) throw usage(`-s: unknown backing source '${text}'; one of ${BACKING_SOURCES.join(', ')}`);
      return text;
    },
    /** -u: MISSING or MINOR, any case. */
    faultMode(text: string): 'MISSING' | 'MINOR' {
      const u = text.toUpperCase();
      if (u !== 'MISSING' && u !== 'MINOR') throw usage(`-u takes MISSING or MINOR, got '${text}'`);
      return u;
    },
  };
}
