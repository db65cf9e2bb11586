import { ExitCode, type Command } from './command.js';

const EXIT_STATUS: readonly (readonly [number, string])[] = [
  [ExitCode.OK, 'success'],
  [ExitCode.FAILURE, 'runtime failure'],
  [ExitCode.USAGE, 'usage error: unknown command or option, bad value'],
  [ExitCode.UNAVAILABLE, 'a capability or privilege is missing (the message says what to do)'],
];

function table(rows: readonly (readonly [string, string])[], indent = '  '): string {
  const width = Math.max(...rows.map(([a]) => a.length));
  return rows.map(([a, b]) => `${indent}${a.padEnd(width)}  ${b}`).join('\n');
}

const FOOTER = [
  'Exit status:',
  table(EXIT_STATUS.map(([code, text]) => [String(code), text])),
  '',
  'Environment:',
  table([['POSTCOPY_DEBUG=1', 'print stack traces with errors']]),
].join('\n');

/** `postcopy --help` */
export function mainHelp(commands: readonly Command[]): string {
  return [
    'Usage: postcopy <command> [options]',
    '',
    'userfaultfd demand paging and post-copy live migration of KVM guest memory.',
    '',
    'Commands:',
    table(commands.map((c) => [c.name, c.summary])),
    '',
    'Options:',
    table([
      ['-h, --help', 'show this help; `postcopy <command> --help` for a command'],
      ['-V, --version', 'print the version'],
    ]),
    '',
    FOOTER,
    '',
  ].join('\n');
}

/** `postcopy <command> --help` */
export function commandHelp(command: Command): string {
  return [
    `Usage: ${command.usage}`,
    '',
    command.description,
    '',
    'Options:',
    table([...command.optionHelp, ['-h, --help', 'show this help']]),
    '',
    FOOTER,
    '',
  ].join('\n');
}
