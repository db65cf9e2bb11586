import { type Command, ExitCode, type Io, parseOptions } from './command.js';
import { optionParsers } from './values.js';

const NAME = 'postcopy serve';
const { usage, duration, size } = optionParsers(NAME);

const OPTIONS = {
  socket: { type: 'string' },
  file: { type: 'string' },
  snapshot: { type: 'string' },
  for: { type: 'string' },
  record: { type: 'string' },
  prefetch: { type: 'string' },
  'page-size': { type: 'string' },
  json: { type: 'boolean' },
} as const;

export function parseServeArgs(args: string[]) {
  const { values: v } = parseOptions(NAME, args, OPTIONS);
  if (!v.socket) throw usage('--socket PATH is required (the path Firecracker is given as mem_backend.backend_path)');
  if (!v.file === !v.snapshot) throw usage('give the memory to serve: --file MEMFILE (a Firecracker snapshot memory file) or --snapshot DIR (a postcopy snapshot)');
  if (v['page-size'] !== undefined && v.snapshot) throw usage('--page-size is for --file: a snapshot has its own unit');
  if (v['page-size'] !== undefined && !v.record && !v.prefetch) throw usage('--page-size is the unit of the working set: give it with --record or --prefetch');
  const pageSize = v['page-size'] === undefined ? undefined : size('--page-size', v['page-size'], 4096);
  if (pageSize !== undefined && (pageSize < 4096 || (pageSize & (pageSize - 1)) !== 0)) throw usage(`--page-size must be a page size (4K, 2M, 1G), got '${v['page-size']}'`);
  return {
    json: v.json ?? false,
    serve: { socketPath: v.socket, memoryFile: v.file, snapshotDir: v.snapshot, untilMs: duration('--for', v.for, 0), recordFile: v.record, prefetchFile: v.prefetch, pageSize },
  };
}

export const serveCommand: Command = {
  name: 'serve',
  summary: "serve guest memory from a file to Firecracker (or any peer) over its UFFD handler protocol",
  usage: `${NAME} --socket PATH (--file MEMFILE | --snapshot DIR) [options]`,
  description: [
    "A page server for Firecracker's snapshot restore with mem_backend { backend_type: \"Uffd\",",
    'backend_path: PATH }: listens on the Unix socket PATH; each message is the JSON array of',
    'GuestRegionUffdMapping {base_host_virt_addr, size, offset, page_size, page_size_kib} with the',
    "peer's userfaultfd in SCM_RIGHTS (several per socket); the peer's pid comes from SO_PEERCRED.",
    'Faults are served with UFFDIO_COPY from the file at the region\'s offset; a range the peer',
    'removed (UFFD_EVENT_REMOVE: madvise(MADV_DONTNEED), the balloon) comes back as zero pages.',
    'EEXIST is done; EAGAIN defers a fault until the pending events are read. A malformed message,',
    'a wrong region list (overlapping, beyond the file), no descriptor: refused with a log line;',
    'the server goes on serving the others. Runs until SIGINT/SIGTERM (or --for).',
    '--record FILE keeps the units each peer first faulted on (offsets in the memory file, in',
    'order; merged into FILE when the peer goes: one run per peer); --prefetch FILE places a',
    "record's units within a userfaultfd's regions as it arrives, in recorded order, one",
    'UFFDIO_COPY per run, then serves the rest on demand. The record\'s layout (the file\'s size',
    'and the unit) must be the served memory\'s, or the server refuses to start.',
  ].join('\n'),
  optionHelp: [
    ['--socket PATH', 'the Unix socket to listen on (must not exist)'],
    ['--file MEMFILE', 'the guest memory file the regions\' offsets point into'],
    ['--snapshot DIR', 'serve a postcopy snapshot\'s memory file (checked first)'],
    ['--record FILE', 'write the units first faulted, in order (merged into FILE if it exists: union, with counts)'],
    ['--prefetch FILE', 'place a recorded working set as each userfaultfd arrives, the rest on demand'],
    ['--page-size SIZE', 'with --file: the unit of the record, the guest\'s page size (default 4K)'],
    ['--for <duration>', 'stop after this long (default: until a signal)'],
    ['--json', 'log lines and the final counters as JSON'],
  ],
  async run(args: string[], io: Io): Promise<number> {
    const parsed = parseServeArgs(args);
    const { serveMain } = await import('../apps/serve/main.js');
    const { SnapshotInvalidError } = await import('../apps/snapshot/errors.js');
    const { InvalidArgumentError } = await import('../errors.js');
    try {
      await serveMain(parsed.serve, io, parsed.json);
      return ExitCode.OK;
    } catch (e) {
      if (e instanceof SnapshotInvalidError || e instanceof InvalidArgumentError) {
        io.err(`postcopy: ${e.message}\n`);
        return ExitCode.UNAVAILABLE;
      }
      throw e;
    }
  },
};
