import { PermissionError, PostcopyError, UnsupportedError } from '../errors.js';
import { SystemError } from '../native/errors.js';
import { ExitCode, type Io, UsageError, parseOptions } from './command.js';
import { COMMANDS, findCommand } from './commands.js';
import { commandHelp, mainHelp } from './help.js';
import { packageVersion } from './version.js';

/** Whether the arguments ask for help (before a `--`, after which everything is an operand). */
function wantsHelp(args: string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

async function dispatch(argv: string[], io: Io): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    io.err(mainHelp(COMMANDS));
    return ExitCode.USAGE;
  }
  if (first.startsWith('-')) {
    const { values } = parseOptions('postcopy', argv, {
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'V' },
    });
    if (values.version) io.out(`${packageVersion()}\n`);
    else io.out(mainHelp(COMMANDS));
    return ExitCode.OK;
  }
  if (first === 'help') {
    const topic = rest[0];
    if (topic === undefined) {
      io.out(mainHelp(COMMANDS));
      return ExitCode.OK;
    }
    const command = findCommand(topic);
    if (!command) throw new UsageError(`no help for unknown command '${topic}'`);
    io.out(commandHelp(command));
    return ExitCode.OK;
  }
  const command = findCommand(first);
  if (!command) throw new UsageError(`unknown command '${first}'`);
  if (wantsHelp(rest)) {
    io.out(commandHelp(command));
    return ExitCode.OK;
  }
  return command.run(rest, io);
}

/** A message as printed after our own `postcopy: `: a prefix the message already carries (a child's stderr wrapped into an error) is dropped. */
function oneLine(message: string): string {
  return message.replace(/^(postcopy: )+/, '').replace(/\n(postcopy: )?/g, '; ').trim();
}

/**
 * How a failure is shown and what it exits with: always one line with one `postcopy:`
 * prefix. The project's own errors and the kernel's are expected outcomes. Anything else is
 * a bug: its message still comes as one line, and POSTCOPY_DEBUG=1 adds the stack.
 */
function fail(e: unknown, io: Io): number {
  const debug = process.env.POSTCOPY_DEBUG === '1';
  const stack = debug && e instanceof Error && e.stack ? `${e.stack}\n` : '';
  const message = oneLine(e instanceof Error ? e.message : String(e));
  if (e instanceof UsageError) {
    io.err(`postcopy: ${message}\n${stack}`);
    return ExitCode.USAGE;
  }
  if (e instanceof PermissionError || e instanceof UnsupportedError) {
    io.err(`postcopy: ${message}\n${stack}`);
    return ExitCode.UNAVAILABLE;
  }
  if (e instanceof PostcopyError || e instanceof SystemError) {
    io.err(`postcopy: ${message}\n${stack}`);
    return ExitCode.FAILURE;
  }
  const name = e instanceof Error && e.name !== 'Error' ? `${e.name}: ` : '';
  io.err(`postcopy: ${name}${message}${debug ? '' : ' (a bug: POSTCOPY_DEBUG=1 shows where)'}\n${stack}`);
  return ExitCode.FAILURE;
}

/** Runs the command line `argv` (without node and the script) and returns the exit code. */
export async function main(argv: string[], io: Io): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (e) {
    return fail(e, io);
  }
}
