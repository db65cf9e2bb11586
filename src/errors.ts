/**
 * The project's own error classes. Kernel failures are SystemError (src/native/errors.ts);
 * these are the failures that TypeScript detects before or instead of a kernel call.
 * Every one says what to do about it where something can be done.
 */
export class PostcopyError extends Error {
  override name = 'PostcopyError';
  readonly code: string;
  /** What went wrong, without the remedy. */
  readonly detail: string;
  /** What a person can do about it, when there is something to do. */
  readonly remedy: string | undefined;

  constructor(code: string, detail: string, remedy?: string) {
    super(remedy ? `${detail}. ${remedy}` : detail);
    this.code = code;
    this.detail = detail;
    this.remedy = remedy;
  }
}

/** A method was called on an object after close(). */
export class ClosedError extends PostcopyError {
  override name = 'ClosedError';
  constructor(what: string, operation: string) {
    super('ERR_CLOSED', `${operation}: ${what} is closed`);
  }
}

/** The kernel, the machine or the configuration lacks something the caller asked for. */
export class UnsupportedError extends PostcopyError {
  override name = 'UnsupportedError';
  constructor(message: string, remedy?: string) {
    super('ERR_UNSUPPORTED', message, remedy);
  }
}

/** The process lacks a privilege (root, device access, a sysctl). */
export class PermissionError extends PostcopyError {
  override name = 'PermissionError';
  constructor(message: string, remedy: string) {
    super('ERR_PERMISSION', message, remedy);
  }
}

/** An argument that cannot be right: misaligned, out of range, overlapping. */
export class InvalidArgumentError extends PostcopyError {
  override name = 'InvalidArgumentError';
  constructor(message: string, remedy?: string) {
    super('ERR_INVALID_ARG', message, remedy);
  }
}

/**
 * A public function was handed an argument of the wrong type, or a value outside the ones
 * it takes (as plain JavaScript can): names the function, the argument as the caller wrote
 * it (`options.features[0]`), what it got and, where they are few, the valid values.
 */
export class ArgumentError extends InvalidArgumentError {
  override name = 'ArgumentError';
  /** The argument, as the caller wrote it: `size`, `options.features[1]`. */
  readonly argument: string;
  /** The values it takes, when they can be listed. */
  readonly valid: readonly string[] | undefined;

  constructor(argument: string, message: string, valid?: readonly string[]) {
    super(message);
    this.argument = argument;
    this.valid = valid;
  }
}
