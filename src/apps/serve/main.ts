/**
 * `postcopy serve`: listens until SIGINT or SIGTERM (or `untilMs`), one log line per
 * event on stderr (JSON lines with --json), the counters at the end on stdout. The
 * working-set records (--record, --prefetch) are read and checked against the memory's
 * layout before anything listens, as `snapshot restore` reads them before building.
 */
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Io } from '../../cli/command.js';
import { InvalidArgumentError } from '../../errors.js';
import { openSnapshot } from '../snapshot/open.js';
import { type RecordLayout, readWorkingSet } from '../snapshot/working-set.js';
import { PageServerSocket, type ServerStats, type ServeWorkingSet } from './server.js';

export interface ServeMainOptions {
  readonly socketPath: string;
  readonly memoryFile: string | undefined;
  readonly snapshotDir: string | undefined;
  /** Stop after this long (0: until a signal). */
  readonly untilMs: number;
  readonly recordFile?: string | undefined;
  readonly prefetchFile?: string | undefined;
  /** The unit of a --file's record (the guest's page size); a snapshot has its own. Default 4096. */
  readonly pageSize?: number | undefined;
}

function workingSet(o: ServeMainOptions, memoryFile: string, snapshotLayout: RecordLayout | undefined): ServeWorkingSet | undefined {
  if (!o.recordFile && !o.prefetchFile) return undefined;
  // A bare memory file (Firecracker's) has no manifest: its size and the page size are its
  // layout, and its path names it in the record.
  if (!existsSync(memoryFile)) throw new InvalidArgumentError(`the memory file ${memoryFile} does not exist`);
  const layout = snapshotLayout ?? { memory: { size: statSync(memoryFile).size, unit: o.pageSize ?? 4096 }, checksum: `file:${resolve(memoryFile)}` };
  const prefetch = o.prefetchFile ? readWorkingSet(o.prefetchFile, layout) : undefined;
  const previous = o.recordFile && existsSync(o.recordFile) ? readWorkingSet(o.recordFile, layout) : undefined;
  return {
    layout,
    ...(prefetch ? { prefetch } : {}),
    ...(o.recordFile ? { record: { path: o.recordFile, ...(previous ? { previous } : {}) } } : {}),
  };
}

export async function serveMain(o: ServeMainOptions, io: Io, json: boolean): Promise<ServerStats> {
  let memoryFile = o.memoryFile!;
  let snapshotLayout: RecordLayout | undefined;
  if (o.snapshotDir) {
    // A postcopy snapshot: checked as a restore checks it, then its memory file is served.
    const s = openSnapshot(o.snapshotDir);
    memoryFile = join(o.snapshotDir, s.manifest.memory.file);
    snapshotLayout = { memory: { size: s.manifest.memory.size, unit: s.manifest.memory.unit }, checksum: s.manifest.checksum };
    s.close();
  }
  const ws = workingSet(o, memoryFile, snapshotLayout);
  const server = await PageServerSocket.listen({
    socketPath: o.socketPath,
    memoryFile,
    ...(ws ? { workingSet: ws } : {}),
    onLog: (l) => io.err(json ? `${JSON.stringify(l)}\n` : `${l.level} connection ${l.connection} (pid ${l.pid}): ${l.message}\n`),
  });
  const prefetchUnits = ws?.prefetch?.units.length ?? 0;
  io.err(
    json
      ? `${JSON.stringify({ type: 'listening', socket: o.socketPath, memoryFile, ...(ws ? { unit: ws.layout.memory.unit, prefetchUnits, record: ws.record?.path ?? null } : {}) })}\n`
      : `serving ${memoryFile} on ${o.socketPath} (Firecracker UFFD handler protocol)${ws?.prefetch ? `, prefetching ${prefetchUnits} recorded unit(s)` : ''}${ws?.record ? `, recording into ${ws.record.path}` : ''}; Ctrl-C to stop\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (o.untilMs > 0) setTimeout(stop, o.untilMs).unref();
  });
  // After the close: the serving thread has published its last counters (and merged the
  // peers still connected into the record); read before, they can miss the last events.
  await server.close();
  const stats = server.stats();
  if (json) io.out(`${JSON.stringify(stats, null, 2)}\n`);
  else io.out(`served ${stats.uffds} userfaultfd(s) over ${stats.connections} connection(s), ${stats.refused} refused: ${stats.faults} fault(s), ${stats.copied} page(s) copied from the file (${stats.bytesRead} bytes), ${stats.zeroed} zero page(s) for removed ranges (${stats.removes} REMOVE event(s)), ${stats.exists} already there, ${stats.deferred} deferred on EAGAIN${ws?.prefetch ? `; prefetch: ${stats.prefetched} unit(s) in ${stats.prefetchIoctls} UFFDIO_COPY(s)` : ''}${ws?.record ? `; record: ${stats.recordedUnits} unit(s) from ${stats.recordedRuns} peer(s) merged into ${ws.record.path}` : ''}\n`);
  return stats;
}
