import { type Command, ExitCode, type Io, parseOptions } from './command.js';
import { optionParsers } from './values.js';

const NAME = 'postcopy serve';
const { usage, duration } = optionParsers(NAME);

const OPTIONS = {
  socket: { type: 'string' },
  file: { type: 'string' },
  snapshot: { type: 'string' },
  for: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export function parseServeArgs(args: string[]) {
  const { values: v } = parseOptions(NAME, args, OPTIONS);
  if (!v.socket) throw usage('--socket PATH is required (the path Firecracker is given as mem_backend.backend_path)');
  if (!v.file === !v.snapshot) throw usage('give the memory to serve: --file MEMFILE (a Firecracker snapshot memory file) or --snapshot DIR (a postcopy snapshot)');
  return { json: v.json ?? false, serve: { socketPath: v.socket, memoryFile: v.file, snapshotDir: v.snapshot, untilMs: duration('--for', v.for, 0) } };
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
  ].join('\n'),
  optionHelp: [
    ['--socket PATH', 'the Unix socket to listen on (must not exist)'],
    ['--file MEMFILE', 'the guest memory file the regions\' offsets point into'],
    ['--snapshot DIR', 'serve a postcopy snapshot\'s memory file (checked first)'],
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
