/**
 * `postcopy serve`: listens until SIGINT or SIGTERM (or `untilMs`), one log line per
 * event on stderr (JSON lines with --json), the counters at the end on stdout.
 */
import { join } from 'node:path';
import type { Io } from '../../cli/command.js';
import { openSnapshot } from '../snapshot/open.js';
import { PageServerSocket, type ServerStats } from './server.js';

export interface ServeMainOptions {
  readonly socketPath: string;
  readonly memoryFile: string | undefined;
  readonly snapshotDir: string | undefined;
  /** Stop after this long (0: until a signal). */
  readonly untilMs: number;
}

export async function serveMain(o: ServeMainOptions, io: Io, json: boolean): Promise<ServerStats> {
  let memoryFile = o.memoryFile;
  if (o.snapshotDir) {
    // A postcopy snapshot: checked as a restore checks it, then its memory file is served.
    const s = openSnapshot(o.snapshotDir);
    memoryFile = join(o.snapshotDir, s.manifest.memory.file);
    s.close();
  }
  const server = await PageServerSocket.listen({
    socketPath: o.socketPath,
    memoryFile: memoryFile!,
    onLog: (l) => io.err(json ? `${JSON.stringify(l)}\n` : `${l.level} connection ${l.connection} (pid ${l.pid}): ${l.message}\n`),
  });
  io.err(json ? `${JSON.stringify({ type: 'listening', socket: o.socketPath, memoryFile })}\n` : `serving ${memoryFile} on ${o.socketPath} (Firecracker UFFD handler protocol); Ctrl-C to stop\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (o.untilMs > 0) setTimeout(stop, o.untilMs).unref();
  });
  const stats = server.stats();
  await server.close();
  if (json) io.out(`${JSON.stringify(stats, null, 2)}\n`);
  else io.out(`served ${stats.uffds} userfaultfd(s) over ${stats.connections} connection(s), ${stats.refused} refused: ${stats.faults} fault(s), ${stats.copied} page(s) copied from the file (${stats.bytesRead} bytes), ${stats.zeroed} zero page(s) for removed ranges (${stats.removes} REMOVE event(s)), ${stats.exists} already there, ${stats.deferred} deferred on EAGAIN\n`);
  return stats;
}
