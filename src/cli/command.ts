import { parseArgs, type ParseArgsConfig } from 'node:util';
import { PostcopyError } from '../errors.js';

/** What the exit status of `postcopy` means; --help lists these. */
export const ExitCode = {
  OK: 0,
  /** Something failed while running. */
  FAILURE: 1,
  /** The command line is wrong: unknown command or option, bad value. */
  USAGE: 2,
  /** A capability or privilege the command needs is missing; the message says what to do. */
  UNAVAILABLE: 3,
} as const;

/** Where a command writes. Commands never touch process.stdout directly, so they can be run in-process. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** One subcommand: `postcopy <name> ...`. Each lives in its own file and is listed in commands.ts. */
export interface Command {
  readonly name: string;
  /** One line, for the command list in `postcopy --help`. */
  readonly summary: string;
  /** `postcopy <name> [options]` */
  readonly usage: string;
  /** Paragraphs after the usage line. */
  readonly description: string;
  /** [flags, explanation] pairs, for `postcopy <name> --help`. */
  readonly optionHelp: readonly (readonly [string, string])[];
  /** Runs with the arguments after the command name; returns the exit code. */
  run(args: string[], io: Io): number | Promise<number>;
}

/** A wrong command line. Printed as one line that points to --help; exit code 2. */
export class UsageError extends PostcopyError {
  override name = 'UsageError';
  constructor(message: string, helpCommand = 'postcopy --help') {
    super('ERR_USAGE', `${message} (see \`${helpCommand}\`)`);
  }
}

/** util.parseArgs's own error codes, for what the user typed wrong. */
function usageMessage(e: Error & { code?: string }, command: string): string | undefined {
  const quoted = /'([^']+)'/.exec(e.message)?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option '${quoted ?? e.message}' for '${command}'`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument '${quoted ?? e.message}' for '${command}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const option = quoted?.split(' ')[0];
      if (option && /argument missing/.test(e.message)) return `option '${option}' needs a value, for '${command}'`;
      return `${e.message.charAt(0).toLowerCase()}${e.message.slice(1).replace(/\.$/, '')}, for '${command}'`;
    }
    default:
      return undefined;
  }
}

/**
 * util.parseArgs, strict, with its errors turned into UsageErrors that name the command.
 * `--help`/`-h` are handled before a command runs, so commands need not declare them.
 */
export function parseOptions<const O extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: O,
): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    const message = e instanceof Error ? usageMessage(e, command) : undefined;
    if (message) throw new UsageError(message, `${command} --help`);
    throw e;
  }
}
