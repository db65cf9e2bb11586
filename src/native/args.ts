/**
 * Argument checks at the JavaScript boundary, as better-sqlite3 does them: every public
 * function of the library layers (uffd, memory, pager) checks what it is handed, with a
 * message that names the function, the argument and the valid values, before anything
 * reaches the addon (which converts exactly or refuses, but owns no message a person
 * should read). Callers from plain JavaScript get an ArgumentError, never a TypeError from
 * deep inside (`Cannot mix BigInt and other types`).
 */
import { ArgumentError } from '../errors.js';

/** A short rendering of what was passed, for messages: 'BOGUS', 12, -1n, undefined, an array. */
export function describe(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    case 'bigint':
      return `${value}n`;
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    default:
      if (value === null) return 'null';
      if (Array.isArray(value)) return 'an array';
      if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
      return `an object`;
  }
}

function fail(where: string, argument: string, expected: string, value: unknown, valid?: readonly string[]): never {
  throw new ArgumentError(argument, `${where}: ${argument} must be ${expected}, got ${describe(value)}`, valid);
}

export interface IntegerRule {
  readonly min?: number;
  readonly max?: number;
  /** The value must be a multiple of this (page alignment). */
  readonly multipleOf?: number;
  /** How to say multipleOf in a message ('the page size (4096)'). */
  readonly unit?: string;
}

/** A safe integer within the rule; returns it. */
export function integer(where: string, argument: string, value: unknown, rule: IntegerRule = {}): number {
  const min = rule.min ?? Number.MIN_SAFE_INTEGER;
  const max = rule.max ?? Number.MAX_SAFE_INTEGER;
  const range = rule.min === undefined && rule.max === undefined ? 'an integer' : rule.max === undefined ? (min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer ≥ ${min}`) : `an integer in [${min}, ${max}]`;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) fail(where, argument, range, value);
  if (rule.multipleOf !== undefined && value % rule.multipleOf !== 0) {
    fail(where, argument, `a multiple of ${rule.unit ?? rule.multipleOf}`, value);
  }
  return value;
}

/** A non-negative finite number (a delay, a timeout in ms); returns it. */
export function nonNegative(where: string, argument: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(where, argument, 'a non-negative number', value);
  return value;
}

/** A boolean, or undefined (an omitted flag). */
export function optionalBoolean(where: string, argument: string, value: unknown): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') fail(where, argument, 'true, false or omitted', value);
  return value;
}

/** One of `valid`; returns it typed. */
export function oneOf<T extends string>(where: string, argument: string, value: unknown, valid: readonly T[]): T {
  if (typeof value !== 'string' || !(valid as readonly string[]).includes(value)) {
    fail(where, argument, `one of ${valid.join(', ')}`, value, valid);
  }
  return value as T;
}

/** An options object, or undefined (then {}). */
export function options<T extends object>(where: string, argument: string, value: unknown): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(where, argument, 'an options object or omitted', value);
  return value as Partial<T>;
}

/**
 * A set of named bits: an array of names from `table`, or (`allowMask`) a mask of its bits
 * (a bigint for a table of bigints, a number for a table of numbers) with no other bit set.
 * Returns the mask as a bigint.
 */
export function flagBits(where: string, argument: string, value: unknown, table: Readonly<Record<string, number | bigint>>, allowMask: boolean): bigint {
  const names = Object.keys(table);
  const kind = typeof table[names[0]!] === 'bigint' ? 'bigint' : 'number';
  const all = names.reduce((m, k) => m | BigInt(table[k]!), 0n);
  if (allowMask && typeof value === kind) {
    const ok = kind === 'bigint' ? (value as bigint) >= 0n : Number.isSafeInteger(value) && (value as number) >= 0;
    const mask = ok ? BigInt(value as number | bigint) : -1n;
    if (mask < 0n || (mask & ~all) !== 0n) {
      fail(where, argument, `a mask of ${names.join(', ')} (${kind === 'bigint' ? `${all}n` : Number(all)} at most)`, value, names);
    }
    return mask;
  }
  if (!Array.isArray(value)) {
    fail(where, argument, allowMask ? `an array of names (${names.join(', ')}) or a ${kind} mask of them` : `an array of names (${names.join(', ')})`, value, names);
  }
  let bits = 0n;
  value.forEach((name: unknown, i) => {
    if (typeof name !== 'string' || !Object.prototype.hasOwnProperty.call(table, name)) {
      fail(where, `${argument}[${i}]`, `one of ${names.join(', ')}`, name, names);
    }
    bits |= BigInt(table[name]!);
  });
  return bits;
}
