/**
 * `postcopy serve`: a page server speaking Firecracker's UFFD handler protocol on a Unix
 * socket, for Firecracker's `PUT /snapshot/load` with
 * `mem_backend: { backend_type: "Uffd", backend_path: SOCKET }`, or any peer that does
 * what it does. The main thread listens (Node's net.Server, connections accepted paused so
 * libuv never reads the bytes that carry descriptors), learns each peer's pid from
 * SO_PEERCRED and hands the connection to the serving thread (server.worker.ts), which
 * does the rest. The memory file is mapped read-only, private. With a working set
 * (--record, --prefetch) the record's layout must be the file's: checked here, before
 * anything listens.
 */
import { closeSync, existsSync, fstatSync, openSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { InvalidArgumentError } from '../../errors.js';
import { MapFlag, Prot } from '../../memory/constants.js';
import { Mapping } from '../../memory/mapping.js';
import { native } from '../../native/binding.js';
import { peerCredentials, socketFd } from '../../socket/scm-rights.js';
import { SnapshotInvalidError } from '../snapshot/errors.js';
import { prefetchRuns, type RecordLayout, type WorkingSet } from '../snapshot/working-set.js';

export interface ServerWorkerConfig {
  port: MessagePort;
  wakeFd: number;
  fileStart: number;
  fileSize: number;
  /** Float64 counters, in the order of ServerStats' keys. */
  stats: SharedArrayBuffer;
  /** Record and prefetch, if asked for: units of the memory file. */
  workingSet?: {
    unit: number;
    layout: RecordLayout;
    /** [first, count] runs of file units, in recorded order. */
    prefetch: [number, number][];
    record?: { path: string; previous?: WorkingSet };
  };
}

export type ServerControl = { type: 'connection'; connection: number; fd: number; pid: number } | { type: 'stop' };

export interface ServerLog {
  readonly type: 'log';
  readonly level: 'info' | 'warn' | 'refused';
  readonly connection: number;
  readonly pid: number;
  readonly message: string;
}

export interface ServerStats {
  connections: number;
  refused: number;
  uffds: number;
  faults: number;
  copied: number;
  zeroed: number;
  exists: number;
  deferred: number;
  removes: number;
  removedBytes: number;
  bytesRead: number;
  /** Units placed by --prefetch (also counted in copied), and the UFFDIO_COPYs that placed them. */
  prefetched: number;
  prefetchIoctls: number;
  /** Runs (peers) merged into the --record file, and the first-faulted units they held. */
  recordedRuns: number;
  recordedUnits: number;
}
const STAT_KEYS: (keyof ServerStats)[] = ['connections', 'refused', 'uffds', 'faults', 'copied', 'zeroed', 'exists', 'deferred', 'removes', 'removedBytes', 'bytesRead', 'prefetched', 'prefetchIoctls', 'recordedRuns', 'recordedUnits'];

/** --record and --prefetch, read and checked by the caller against `layout` (readWorkingSet). */
export interface ServeWorkingSet {
  /** What the record is bound to: the memory file's size and the unit (the regions' page size must be it). */
  readonly layout: RecordLayout;
  readonly prefetch?: WorkingSet;
  readonly record?: { readonly path: string; readonly previous?: WorkingSet };
}

export interface ServeOptions {
  readonly socketPath: string;
  /** The guest memory file the regions' offsets are into (Firecracker's snapshot memory file, or a snapshot's DIR/memory). */
  readonly memoryFile: string;
  readonly onLog?: (line: ServerLog) => void;
  readonly workingSet?: ServeWorkingSet;
}

function checkLayout(w: ServeWorkingSet, fileSize: number): void {
  const { size, unit } = w.layout.memory;
  if (size !== fileSize) throw new SnapshotInvalidError('ERR_RECORD', `the working set is of ${size} bytes of memory, the memory file holds ${fileSize}`);
  if (unit < 4096 || (unit & (unit - 1)) !== 0 || size % unit !== 0) throw new SnapshotInvalidError('ERR_RECORD', `the memory file (${size} bytes) is not a whole number of ${unit}-byte units`, 'Give --page-size the guest\'s page size (4K, 2M or 1G)');
  for (const ws of [w.prefetch, w.record?.previous]) {
    if (ws && (ws.size !== size || ws.unit !== unit)) throw new SnapshotInvalidError('ERR_RECORD', `a working-set record of ${ws.size} bytes in ${ws.unit}-byte units cannot be used with ${size} bytes in ${unit}-byte units`);
  }
}

export class PageServerSocket {
  readonly #server: Server;
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #wakeFd: number;
  readonly #file: Mapping;
  readonly #fd: number;
  readonly #stats: Float64Array;
  readonly #sockets = new Map<number, Socket>();
  readonly #stopped: Promise<void>;
  readonly socketPath: string;
  #next = 1;
  #closing: Promise<void> | undefined;

  private constructor(server: Server, worker: Worker, port: MessagePort, wakeFd: number, file: Mapping, fd: number, stats: Float64Array, stopped: Promise<void>, socketPath: string) {
    this.#server = server;
    this.#worker = worker;
    this.#port = port;
    this.#wakeFd = wakeFd;
    this.#file = file;
    this.#fd = fd;
    this.#stats = stats;
    this.#stopped = stopped;
    this.socketPath = socketPath;
  }

  static async listen(o: ServeOptions): Promise<PageServerSocket> {
    if (!existsSync(o.memoryFile)) throw new InvalidArgumentError(`the memory file ${o.memoryFile} does not exist`);
    if (existsSync(o.socketPath)) throw new InvalidArgumentError(`${o.socketPath} exists`, 'Remove it, or give another --socket path');
    const fd = openSync(o.memoryFile, 'r');
    const size = fstatSync(fd).size;
    if (size === 0) {
      closeSync(fd);
      throw new InvalidArgumentError(`the memory file ${o.memoryFile} is empty`);
    }
    try {
      if (o.workingSet) checkLayout(o.workingSet, size);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    const file = Mapping.map(size, { prot: Prot.READ, flags: MapFlag.PRIVATE, fd });
    const wakeFd = native.eventfd(0, 0o2000000 | 0o4000 /* EFD_CLOEXEC | EFD_NONBLOCK */);
    const stats = new Float64Array(new SharedArrayBuffer(STAT_KEYS.length * 8));
    const { port1, port2 } = new MessageChannel();
    const w = o.workingSet;
    const config: ServerWorkerConfig = {
      port: port2,
      wakeFd,
      fileStart: file.address,
      fileSize: size,
      stats: stats.buffer as SharedArrayBuffer,
      ...(w ? { workingSet: { unit: w.layout.memory.unit, layout: { memory: { size: w.layout.memory.size, unit: w.layout.memory.unit }, checksum: w.layout.checksum }, prefetch: w.prefetch ? prefetchRuns(w.prefetch) : [], ...(w.record ? { record: { path: w.record.path, ...(w.record.previous ? { previous: w.record.previous } : {}) } } : {}) } } : {}),
    };
    const worker = new Worker(new URL('./server.worker.js', import.meta.url), { workerData: config, transferList: [port2] });
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    let self: PageServerSocket | undefined;
    const stopped = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: { type: string; connection?: number }) => {
        if (m.type === 'ready') ready();
        else if (m.type === 'log') o.onLog?.(m as unknown as ServerLog);
        else if (m.type === 'closed' && self) self.#closed(m.connection!);
        else if (m.type === 'stopped') resolve();
      });
      worker.on('error', reject);
      worker.on('exit', () => resolve());
    });
    stopped.catch(() => undefined);
    await Promise.race([isReady, stopped]);
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true });
    self = new PageServerSocket(server, worker, port1, wakeFd, file, fd, stats, stopped, o.socketPath);
    const s = self;
    server.on('connection', (socket) => s.#accept(socket, o));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.socketPath, () => resolve());
    });
    return self;
  }

  #accept(socket: Socket, o: ServeOptions): void {
    const id = this.#next++;
    let fd: number;
    let pid: number;
    try {
      fd = socketFd(socket);
      pid = peerCredentials(fd).pid;
    } catch (e) {
      o.onLog?.({ type: 'log', level: 'refused', connection: id, pid: 0, message: (e as Error).message });
      socket.destroy();
      return;
    }
    // The socket stays Node's (paused: never read); the serving thread reads its descriptor.
    socket.on('error', () => undefined);
    this.#sockets.set(id, socket);
    o.onLog?.({ type: 'log', level: 'info', connection: id, pid, message: 'connected' });
    this.#post({ type: 'connection', connection: id, fd, pid });
  }

  #post(m: ServerControl): void {
    this.#port.postMessage(m);
    const one = new Uint8Array(8);
    one[0] = 1;
    native.write(this.#wakeFd, one);
  }

  #closed(id: number): void {
    const socket = this.#sockets.get(id);
    this.#sockets.delete(id);
    socket?.destroy();
  }

  stats(): ServerStats {
    return Object.fromEntries(STAT_KEYS.map((k, i) => [k, this.#stats[i]!])) as unknown as ServerStats;
  }

  /** Stops serving: the thread closes every connection's userfaultfds, then the sockets and the file. Safe twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // net.Server's close waits for its connections to end: stop listening, end them, then wait.
      const listening = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      this.#post({ type: 'stop' });
      await this.#stopped;
      await this.#worker.terminate();
      for (const s of this.#sockets.values()) s.destroy();
      this.#sockets.clear();
      await listening;
      this.#port.close();
      native.close(this.#wakeFd);
      this.#file.unmap();
      closeSync(this.#fd);
      if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
    })();
    return this.#closing;
  }
}
