import { type Command, ExitCode, type Io, UsageError } from './command.js';
import { parseArgs } from 'node:util';

const NAME = 'postcopy report';

/** `postcopy report RUN.json… -o FILE`: positionals are the run files. */
export function parseReportArgs(args: string[]): { files: string[]; out: string; json: boolean } {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { o: { type: 'string' }, output: { type: 'string' }, json: { type: 'boolean' } }, strict: true, allowPositionals: true });
  } catch (e) {
    const quoted = /'([^']+)'/.exec((e as Error).message)?.[1];
    throw new UsageError((e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? `unknown option '${quoted}' for '${NAME}'` : `${(e as Error).message.replace(/\.$/, '')}, for '${NAME}'`, `${NAME} --help`);
  }
  const out = parsed.values.o ?? parsed.values.output;
  if (parsed.positionals.length === 0) throw new UsageError('give at least one run file (the JSON of `postcopy bench --json` or `postcopy migrate … --json`)', `${NAME} --help`);
  if (out === undefined || out === '') throw new UsageError('-o FILE is required: where to write the HTML report', `${NAME} --help`);
  return { files: parsed.positionals, out, json: parsed.values.json ?? false };
}

export const reportCommand: Command = {
  name: 'report',
  summary: 'one self-contained HTML report (charts) of bench and migrate runs',
  usage: `${NAME} RUN.json… -o report.html [--json]`,
  description: [
    'Reads the JSON that `postcopy bench --json` and `postcopy migrate … --json` print (or the',
    'files their --html writes beside it) and writes one HTML file that needs nothing else: the',
    'chart library (uPlot) is inlined and the page fetches nothing. It shows each run\'s machine',
    'and command, its figures, the paging rate per vCPU over time, the fault-latency histogram',
    '(log scale), and a migration\'s timeline: precopy rounds with their pages, the blackout to',
    'scale, post-copy pages requested vs from the background, the guest\'s stall. Several files',
    'are shown side by side, with charts across them.',
    '',
    'A file that is not a postcopy run is refused with its name (exit 3).',
  ].join('\n'),
  optionHelp: [
    ['-o, --output FILE', 'where to write the HTML'],
    ['--json', 'print what was written as JSON'],
  ],

  async run(args: string[], io: Io): Promise<number> {
    const o = parseReportArgs(args);
    const { reportMain } = await import('../apps/report/main.js');
    const r = reportMain(o.files, o.out);
    if (o.json) io.out(`${JSON.stringify({ output: o.out, bytes: r.bytes, runs: r.runs })}\n`);
    else io.err(`wrote ${o.out}: ${r.runs} run(s), ${(r.bytes / 1024).toFixed(0)} KiB\n`);
    return ExitCode.OK;
  },
};
