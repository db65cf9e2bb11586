/**
 * A framed, bounded, typed conversation over one TCP socket. Frames arrive either through
 * an onFrame handler (the page stream: synchronous, in order, no promise per frame) or
 * through next() (handshakes): use one or the other at a time. Every way the conversation
 * can break — a bad frame, the peer closing or resetting, the peer going silent, a handler
 * throwing — ends in one place: the socket is destroyed, pending next()/drain() reject, onError
 * is called and `closed` resolves with the error.
 */
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { ConnectError, ProtocolError, errnoOf } from './errors.js';
import { FrameDecoder } from './frame-decoder.js';
import { checkMaxPayload, encodeHeader, formatType, knownTypePredicate, type Frame, type KnownTypes } from './frame.js';
import { formatHostPort } from './host-port.js';
import { clientTlsOptions, PLAIN, type Security } from './security.js';
import { TLS_REMEDY, tlsFailureReason } from './tls-failure.js';

export interface ChannelOptions {
  /** The frame types this end accepts; any other fails the channel with ERR_UNKNOWN_FRAME. */
  isKnownType: KnownTypes;
  /** Largest payload received or sent. Both ends must agree. Default 16 MiB. */
  maxPayload?: number;
  /** Fail with ERR_PEER_SILENT when nothing is received for this long. Default 10000; 0 = never. */
  idleTimeoutMs?: number;
  /** Names the channel in messages: 'source', 'urgent channel'. Default 'channel'. */
  name?: string;
  /**
   * Send an empty KEEPALIVE frame when nothing was sent for this long (0: never, the
   * default), so that a peer with an idle timeout tells a quiet link from a lost one.
   * KEEPALIVE frames are taken by the channel and never delivered. Both ends must be of
   * this version.
   */
  keepaliveMs?: number;
}

/** Frame type 0 is the transport's own: a keepalive, never delivered to the layer above. */
export const KEEPALIVE = 0;

export interface ConnectOptions extends ChannelOptions {
  /** Give up connecting after this long. Default 10000; 0 = the kernel's own timeout. */
  connectTimeoutMs?: number;
  /** What to tell a person when the peer cannot be reached, e.g. "is `... --listen HOST:PORT` running?". */
  connectRemedy?: string;
  /**
   * Bytes the socket buffers (each way) before send() returns false. Default 1 MiB: Node's
   * 16 KiB makes a page sender wait for a drain every 4 pages, at about half the throughput.
   */
  highWaterMark?: number;
  /** Plain TCP (default) or TLS 1.3 (certificates or a pre-shared key): the connection is authenticated before this resolves. */
  security?: Security;
}

export const DEFAULT_HIGH_WATER_MARK = 2 ** 20;

export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const PEER_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);
const CONNECT_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out',
};
const PEER_CLOSED_REMEDY = 'The peer exited or lost the connection; see its output';
const PEER_SILENT_REMEDY = 'The peer is hung or the network is down; if it is only slow, allow it more time';

interface Waiter {
  resolve(frame: Frame): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout | undefined;
}

function checkTimeout(what: string, ms: number): number {
  if (!Number.isInteger(ms) || ms < 0) throw new InvalidArgumentError(`${what} ${ms} is not a whole number of milliseconds >= 0`);
  return ms;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(`non-Error thrown: ${String(e)}`);
}

export class Channel {
  /** Connects to a listening peer; refusal, unreachability and timeout become a ConnectError naming host:port. */
  static async connect(host: string, port: number, options: ConnectOptions): Promise<Channel> {
    checkMaxPayload(options.maxPayload);
    const timeoutMs = checkTimeout('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    const where = formatHostPort(host, port);
    const name = options.name ?? 'channel';
    return await new Promise((resolve, reject) => {
      const security = options.security ?? PLAIN;
      const tlsOptions = clientTlsOptions(security, host);
      // Sockets take Duplex options (highWaterMark) at run time; @types/node does not list them.
      const hwm = { highWaterMark: options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK };
      const socket: net.Socket = tlsOptions ? tls.connect({ host, port, ...tlsOptions, ...hwm } as tls.ConnectionOptions) : net.connect({ host, port, ...hwm } as net.NetConnectOpts);
      let reached = false;
      const fail = (what: string, errno: string | undefined, cause?: unknown, remedy = options.connectRemedy): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ConnectError(`${name}: cannot connect to ${where}: ${what}`, remedy, errno, cause));
      };
      const onError = (e: Error): void => {
        const errno = errnoOf(e);
        // Reached over TCP, failed in the handshake: the peer is there and the security differs.
        if (tlsOptions && reached) return fail(tlsFailureReason(e), errno, e, TLS_REMEDY);
        fail(errno ? `${CONNECT_ERRORS[errno] ?? e.message} (${errno})` : e.message, errno, e);
      };
      const timer = timeoutMs > 0 ? setTimeout(() => fail(`no answer within ${timeoutMs} ms${reached ? ' (TCP connected; the TLS handshake did not finish)' : ''}`, 'ETIMEDOUT'), timeoutMs) : undefined;
      socket.once('error', onError);
      socket.once('connect', () => (reached = true));
      socket.once(tlsOptions ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        try {
          resolve(Channel.fromSocket(socket, options));
        } catch (e) {
          socket.destroy();
          reject(e);
        }
      });
    });
  }

  /** Takes over a connected socket (from Listener.accept() or net.connect). */
  static fromSocket(socket: net.Socket, options: ChannelOptions): Channel {
    return new Channel(socket, options);
  }

  readonly name: string;
  /** The peer as host:port, for messages. */
  readonly peer: string;
  /** Resolves (never rejects) once the socket is closed: undefined if the close was clean, else why. */
  readonly closed: Promise<Error | undefined>;

  readonly #socket: net.Socket;
  readonly #decoder: FrameDecoder;
  readonly #maxPayload: number;
  readonly #label: string;
  /** Reused for every chunk: the decoder appends to it, delivery reads it. */
  readonly #decoded: Frame[] = [];
  /** Frames received while nobody asked for them; the socket is paused while this is not empty. */
  readonly #queue: Frame[] = [];
  readonly #waiters: Waiter[] = [];
  readonly #drainers: { resolve(): void; reject(error: Error): void }[] = [];
  #handler: ((frame: Frame) => void) | undefined;
  #errorHandler: ((error: Error) => void) | undefined;
  #error: Error | undefined;
  #finished = false;
  #closing: Promise<void> | undefined;
  #closeRequested = false;
  #corked = false;
  #expectClose = false;
  #idleMs: number;
  #idleTimer: NodeJS.Timeout | undefined;
  #closeTimer: NodeJS.Timeout | undefined;
  #lastReceive = performance.now();
  #resolveClosed!: (error: Error | undefined) => void;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #sentSinceKeepalive = false;
  #bytesSent = 0;
  #bytesReceived = 0;
  #framesSent = 0;
  #framesReceived = 0;

  private constructor(socket: net.Socket, options: ChannelOptions) {
    this.name = options.name ?? 'channel';
    this.peer = formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
    this.#label = `${this.name} with ${this.peer}`;
    this.#maxPayload = checkMaxPayload(options.maxPayload);
    const known = knownTypePredicate(options.isKnownType);
    this.#decoder = new FrameDecoder({ maxPayload: this.#maxPayload, isKnownType: (t) => t === KEEPALIVE || known(t), name: this.#label });
    this.setKeepalive(options.keepaliveMs ?? 0);
    this.#idleMs = checkTimeout('idleTimeoutMs', options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    this.#socket = socket;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    if (socket.destroyed) {
      this.#error = new ProtocolError('ERR_PEER_CLOSED', `${this.#label}: the connection was already closed`, PEER_CLOSED_REMEDY);
      this.#finish();
      return;
    }
    // Frames are often small and someone waits on each (a request, its answer): no Nagle delay.
    socket.setNoDelay(true);
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onSocketError);
    socket.on('drain', this.#onDrain);
    socket.on('finish', this.#onDrain);
    socket.on('close', this.#finish);
    socket.resume();
    this.#armIdle(this.#idleMs);
  }

  get bytesSent(): number {
    return this.#bytesSent;
  }
  get bytesReceived(): number {
    return this.#bytesReceived;
  }
  get framesSent(): number {
    return this.#framesSent;
  }
  get framesReceived(): number {
    return this.#framesReceived;
  }
  /** Bytes handed to send() and not yet taken by the kernel. */
  get writableLength(): number {
    return this.#socket.writableLength;
  }

  /**
   * Sends one frame whose payload is the parts, in order. Returns false when the socket's
   * buffer is over its high-water mark: await drain() before sending more.
   *
   * The parts are written as given, not copied (a page can be a view of guest memory), and
   * not before the end of the current tick: each must stay mapped and unchanged until the
   * kernel has it — until writableLength is 0, or close() has resolved.
   */
  send(type: number, flags: number, ...parts: Uint8Array[]): boolean {
    this.#checkUsable('send');
    let length = 0;
    for (const part of parts) length += part.byteLength;
    if (length > this.#maxPayload) {
      throw new ProtocolError(
        'ERR_FRAME_TOO_LARGE',
        `${this.#label}: a frame of type ${formatType(type)} with ${length} payload bytes is over the limit of ${this.#maxPayload}`,
        'split it into several frames',
      );
    }
    const header = encodeHeader(type, flags, length);
    const socket = this.#socket;
    // Corked until the end of this tick: every frame sent in it (headers and parts) leaves
    // in one writev — one syscall per batch, not per frame, and no concatenation.
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(this.#uncork);
    }
    let ok = socket.write(header);
    for (const part of parts) if (part.byteLength > 0) ok = socket.write(part);
    this.#bytesSent += header.length + length;
    this.#framesSent++;
    this.#sentSinceKeepalive = true;
    return ok;
  }

  /** Starts (ms > 0) or stops (0) keepalives; see ChannelOptions.keepaliveMs. */
  setKeepalive(ms: number): void {
    checkTimeout('keepaliveMs', ms);
    clearInterval(this.#keepaliveTimer);
    this.#keepaliveTimer = undefined;
    if (ms === 0 || this.#error || this.#finished) return;
    this.#keepaliveTimer = setInterval(() => {
      if (this.#sentSinceKeepalive) this.#sentSinceKeepalive = false;
      else if (!this.#error && !this.#closeRequested && !this.#finished && this.#socket.writable && this.#socket.writableLength === 0) {
        this.send(KEEPALIVE, 0);
        this.#sentSinceKeepalive = false;
      }
    }, ms);
    this.#keepaliveTimer.unref();
  }

  /** Resolves when the socket no longer asks for a drain (at once if it does not); rejects if the channel fails first. */
  drain(): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (!this.#socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainers.push({ resolve, reject }));
  }

  /**
   * Delivers every frame from now on to `handler`, synchronously and in order (frames that
   * were already received are delivered first, in a microtask). A handler that throws fails
   * the channel with what it threw. `undefined` removes the handler, so that next() can be
   * used again.
   */
  onFrame(handler: ((frame: Frame) => void) | undefined): void {
    if (handler && this.#waiters.length > 0) throw new InvalidArgumentError(`${this.#label}: onFrame() while next() is waiting`, 'use one or the other at a time');
    this.#handler = handler;
    if (handler && this.#queue.length > 0) queueMicrotask(this.#flushQueue);
  }

  /** Called once, synchronously, with the error when the channel fails. It must not throw. */
  onError(handler: ((error: Error) => void) | undefined): void {
    this.#errorHandler = handler;
  }

  /**
   * The next frame, for handshakes. Rejects with ERR_PEER_CLOSED if the peer closes first and,
   * when `timeoutMs` is given, fails the whole channel with ERR_PEER_SILENT if no frame comes
   * in time (the conversation cannot go on after a step was skipped). Not while onFrame is set.
   */
  next(timeoutMs?: number): Promise<Frame> {
    if (this.#handler) return Promise.reject(new InvalidArgumentError(`${this.#label}: next() while an onFrame handler is set`, 'use one or the other at a time'));
    const queued = this.#queue.shift();
    if (queued) {
      if (this.#queue.length === 0) this.#socket.resume();
      return Promise.resolve(queued);
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#finished || this.#socket.readableEnded) return Promise.reject(this.#peerClosed());
    const ms = timeoutMs === undefined ? 0 : checkTimeout('timeoutMs', timeoutMs);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (ms > 0) {
        waiter.timer = setTimeout(() => this.#fail(new ProtocolError('ERR_PEER_SILENT', `${this.#label}: no frame from the peer within ${ms} ms`, PEER_SILENT_REMEDY)), ms);
      }
      this.#waiters.push(waiter);
    });
  }

  /** The peer may close from now on (e.g. after its final frame) without that being an error. */
  expectClose(): void {
    this.#expectClose = true;
  }

  /** Changes the idle timeout (0 disables it), e.g. off on a channel that only sends; the clock restarts now. */
  setIdleTimeout(ms: number): void {
    this.#idleMs = checkTimeout('idleTimeoutMs', ms);
    this.#lastReceive = performance.now();
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    if (!this.#finished && !this.#error) this.#armIdle(ms);
  }

  /**
   * Ends gracefully: what was sent is flushed, the peer is told (FIN), and this resolves when
   * the peer has closed its side too — or after the idle timeout (10 s if it is 0), which then
   * shows in `closed`. Never rejects; `closed` says whether the end was clean. Safe twice.
   */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closeRequested = true;
      this.#expectClose = true;
      if (!this.#finished) {
        this.#socket.end();
        // Frames still arriving must be read, or the peer's FIN is never seen.
        this.#socket.resume();
        const ms = this.#idleMs || DEFAULT_IDLE_TIMEOUT_MS;
        this.#closeTimer = setTimeout(() => this.#fail(new ProtocolError('ERR_PEER_SILENT', `${this.#label}: the peer did not close the connection within ${ms} ms`, PEER_SILENT_REMEDY)), ms);
        this.#closeTimer.unref();
      }
      this.#closing = this.closed.then(() => undefined);
    }
    return this.#closing;
  }

  /** Ends at once. With an error, the channel fails with it; without, it counts as a clean close. */
  destroy(error?: Error): void {
    if (error) return this.#fail(error);
    this.#closeRequested = true;
    this.#expectClose = true;
    this.#socket.destroy();
  }

  #checkUsable(operation: string): void {
    if (this.#error) throw this.#error;
    if (this.#closeRequested) throw new ClosedError(this.#label, operation);
    if (this.#finished || !this.#socket.writable) throw new ClosedError(`${this.#label} (closed by the peer)`, operation);
  }

  #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };

  #onData = (chunk: Buffer): void => {
    if (this.#error || this.#finished) return;
    this.#bytesReceived += chunk.length;
    this.#lastReceive = performance.now();
    const frames = this.#decoded;
    frames.length = 0;
    let decodeError: unknown;
    try {
      this.#decoder.push(chunk, frames);
    } catch (e) {
      decodeError = e;
    }
    // Frames before a bad one are good and are delivered: a final frame may precede garbage.
    this.#framesReceived += frames.length;
    for (let i = 0; i < frames.length && !this.#error && !this.#finished; i++) this.#deliver(frames[i]!);
    frames.length = 0;
    if (decodeError !== undefined) this.#fail(asError(decodeError));
  };

  #deliver(frame: Frame): void {
    if (frame.type === KEEPALIVE) return;
    if (this.#handler && this.#queue.length === 0) {
      try {
        this.#handler(frame);
      } catch (e) {
        this.#fail(asError(e));
      }
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(frame);
      return;
    }
    // Nobody is reading: hold what came and stop reading, so TCP flow control bounds the rest.
    this.#queue.push(frame);
    if (!this.#closeRequested) this.#socket.pause();
  }

  #flushQueue = (): void => {
    while (this.#handler && this.#queue.length > 0 && !this.#error) {
      const frame = this.#queue.shift()!;
      try {
        this.#handler(frame);
      } catch (e) {
        this.#fail(asError(e));
      }
    }
    if (this.#queue.length === 0 && !this.#error) this.#socket.resume();
  };

  #onEnd = (): void => {
    try {
      this.#decoder.end();
    } catch (e) {
      return this.#fail(asError(e));
    }
    if (!this.#expectClose) return this.#fail(this.#peerClosed());
    // An expected close: whoever still waits for a frame will not get one.
    this.#rejectWaiters(this.#peerClosed());
  };

  #onSocketError = (e: Error): void => {
    const errno = errnoOf(e);
    if (errno && PEER_GONE.has(errno)) {
      this.#fail(new ProtocolError('ERR_PEER_CLOSED', `${this.#label}: the peer closed the connection (${errno})`, PEER_CLOSED_REMEDY, e));
    } else if (errno?.startsWith('ERR_SSL')) {
      // TLS 1.3: a server rejects the client's certificate after the client thinks the handshake done.
      this.#fail(new ProtocolError('ERR_CONNECTION', `${this.#label}: ${tlsFailureReason(e)}`, TLS_REMEDY, e));
    } else {
      this.#fail(new ProtocolError('ERR_CONNECTION', `${this.#label}: the connection failed: ${e.message}`, undefined, e));
    }
  };

  #onDrain = (): void => {
    for (const d of this.#drainers.splice(0)) d.resolve();
  };

  #peerClosed(): ProtocolError {
    return new ProtocolError('ERR_PEER_CLOSED', `${this.#label}: the peer closed the connection`, PEER_CLOSED_REMEDY);
  }

  /** Idle means nothing received; the check is a deadline, so receiving costs one clock read, not a timer reset. */
  #armIdle(delay: number): void {
    if (this.#idleMs === 0) return;
    this.#idleTimer = setTimeout(this.#onIdleTimer, delay);
    this.#idleTimer.unref();
  }

  #onIdleTimer = (): void => {
    this.#idleTimer = undefined;
    if (this.#finished || this.#error || this.#idleMs === 0) return;
    const now = performance.now();
    // Paused because nobody reads what came: the silence is ours, not the peer's.
    if (this.#socket.isPaused()) this.#lastReceive = now;
    const silent = now - this.#lastReceive;
    if (silent >= this.#idleMs) {
      this.#fail(new ProtocolError('ERR_PEER_SILENT', `${this.#label}: no data from the peer for ${this.#idleMs} ms`, PEER_SILENT_REMEDY));
    } else {
      this.#armIdle(this.#idleMs - silent);
    }
  };

  #rejectWaiters(error: Error): void {
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(error);
    }
  }

  /** The one way a channel fails: record the first error, stop everything, tell whoever waits. */
  #fail(error: Error): void {
    if (this.#error || this.#finished) return;
    this.#error = error;
    this.#queue.length = 0;
    this.#socket.destroy();
    this.#stopTimers();
    this.#rejectWaiters(error);
    for (const d of this.#drainers.splice(0)) d.reject(error);
    this.#errorHandler?.(error);
  }

  #stopTimers(): void {
    clearInterval(this.#keepaliveTimer);
    this.#keepaliveTimer = undefined;
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#closeTimer);
    this.#idleTimer = this.#closeTimer = undefined;
  }

  /** The socket has closed. A close nobody asked for and nobody expected is the peer's doing. */
  #finish = (): void => {
    if (this.#finished) return;
    if (!this.#error && !this.#expectClose) this.#fail(this.#peerClosed());
    this.#finished = true;
    this.#stopTimers();
    const after = this.#error ?? this.#peerClosed();
    this.#rejectWaiters(after);
    for (const d of this.#drainers.splice(0)) (this.#error ? d.reject(this.#error) : d.resolve());
    this.#resolveClosed(this.#error);
  };
}
