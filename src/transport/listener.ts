/**
 * Accepts connections and hands them out one by one. The listener never reads from a
 * connection: what a peer sends, garbage or not, is for whoever accepts it to judge, so no
 * peer can bring the listener down. Connections nobody has accepted yet wait in a bounded queue.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { DEFAULT_HIGH_WATER_MARK } from './channel.js';
import { ListenError, errnoOf } from './errors.js';
import { formatHostPort } from './host-port.js';
import { PLAIN, serverTlsOptions, type Security } from './security.js';
import { tlsFailureReason } from './tls-failure.js';

export interface ListenOptions {
  /** Connections held until accept() takes them; more are closed at once. Default 16. */
  maxPending?: number;
  /** The kernel's queue of connections not yet taken by Node. Default Node's (511). */
  backlog?: number;
  /** Bytes an accepted socket buffers each way before a write returns false. Default 1 MiB, as Channel.connect. */
  highWaterMark?: number;
  /** Plain TCP (default) or TLS 1.3: with TLS only connections whose handshake succeeded are handed out. */
  security?: Security;
  /** A connection refused before it was handed out (a failed TLS handshake): who, and why. The listener goes on. */
  onRefused?: (peer: string, reason: string) => void;
  /**
   * With certificates: a peer whose certificate did not verify (the channel is encrypted
   * and this side is authenticated, the peer is not). Lets the layer above tell it why in
   * its own protocol; the socket is destroyed after. Default: destroy at once.
   */
  tellUnauthorized?: (socket: net.Socket, reason: string) => void;
}

const DEFAULT_MAX_PENDING = 16;

function remedyFor(errno: string | undefined, host: string, port: number): string | undefined {
  switch (errno) {
    case 'EADDRINUSE':
      return `Another process listens on port ${port}: choose another port, or stop that process`;
    case 'EACCES':
      return 'Ports below 1024 need root: choose a port above 1023, or run as root';
    case 'EADDRNOTAVAIL':
      return `${host} is not an address of this machine: listen on one of its addresses, or on 0.0.0.0`;
    case 'ENOTFOUND':
      return `Check the host name ${host}`;
    default:
      return undefined;
  }
}

// Keeps a socket's error (ECONNRESET while it waits, or before its new owner listens) from
// becoming an uncaught exception; the error still destroys the socket, which its owner sees.
const ignore = (): void => {};

export class Listener {
  static async listen(host: string, port: number, options: ListenOptions = {}): Promise<Listener> {
    const maxPending = options.maxPending ?? DEFAULT_MAX_PENDING;
    if (!Number.isInteger(maxPending) || maxPending < 1) throw new InvalidArgumentError(`maxPending ${maxPending} is not a whole number >= 1`);
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new InvalidArgumentError(`port ${port} is not in [0, 65535]`);
    return await new Promise((resolve, reject) => {
      const hwm = { highWaterMark: options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK };
      const tlsOptions = serverTlsOptions(options.security ?? PLAIN);
      const server: net.Server = tlsOptions ? tls.createServer({ ...tlsOptions, ...hwm } as tls.TlsOptions) : net.createServer(hwm);
      const onError = (e: Error): void => {
        const errno = errnoOf(e);
        server.close();
        reject(new ListenError(`cannot listen on ${formatHostPort(host, port)}: ${e.message}`, remedyFor(errno, host, port), errno, e));
      };
      server.once('error', onError);
      server.listen({ host, port, backlog: options.backlog }, () => {
        server.off('error', onError);
        resolve(new Listener(server, maxPending, options, tlsOptions !== undefined));
      });
    });
  }

  readonly address: { readonly host: string; readonly port: number };
  /** Whether connections are TLS (authenticated in the handshake). */
  readonly secure: boolean;
  readonly #server: net.Server;
  readonly #maxPending: number;
  readonly #pending: net.Socket[] = [];
  readonly #waiters: { resolve(socket: net.Socket): void; reject(error: Error): void }[] = [];
  #closing: Promise<void> | undefined;

  private constructor(server: net.Server, maxPending: number, options: ListenOptions, secure: boolean) {
    const onRefused = options.onRefused;
    const bound = server.address() as net.AddressInfo;
    this.address = { host: bound.address, port: bound.port };
    this.secure = secure;
    this.#server = server;
    this.#maxPending = maxPending;
    if (secure) {
      // The TCP peer, named before TLS starts: a failed handshake has no address left to ask.
      const peers = new WeakMap<net.Socket, string>();
      server.on('connection', (raw: net.Socket) => peers.set(raw, formatHostPort(raw.remoteAddress ?? '?', raw.remotePort ?? 0)));
      const peerOf = (s: tls.TLSSocket) => peers.get((s as unknown as { _parent?: net.Socket })._parent ?? s) ?? formatHostPort(s.remoteAddress ?? '?', s.remotePort ?? 0);
      const certificates = options.security?.kind === 'certificate';
      server.on('secureConnection', (socket: tls.TLSSocket) => {
        if (certificates && !socket.authorized) {
          const reason = `its certificate was refused: ${tlsFailureReason({ code: socket.authorizationError })}`;
          socket.on('error', ignore);
          onRefused?.(peerOf(socket), reason);
          if (options.tellUnauthorized) options.tellUnauthorized(socket, reason);
          else socket.destroy();
          return;
        }
        this.#onConnection(socket);
      });
      // A peer that fails the handshake never becomes a connection: it is refused here, and the listener goes on.
      server.on('tlsClientError', (e: Error, socket: tls.TLSSocket) => {
        socket.destroy();
        onRefused?.(peerOf(socket), tlsFailureReason(e));
      });
    } else {
      server.on('connection', this.#onConnection);
    }
    server.on('error', this.#onServerError);
  }

  /** Connections accepted by the kernel and not yet taken by accept(). */
  get pending(): number {
    return this.#pending.length;
  }

  /**
   * The next connection, in arrival order (one that already closed while queued is skipped).
   * The socket is the caller's: give it to Channel.fromSocket, or destroy it.
   */
  accept(): Promise<net.Socket> {
    if (this.#closing) return Promise.reject(new ClosedError(this.#what(), 'accept'));
    let socket: net.Socket | undefined;
    while ((socket = this.#pending.shift())) {
      if (!socket.destroyed) return Promise.resolve(socket);
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /**
   * Stops listening (the port is free when this resolves), closes connections never accepted
   * and rejects pending accept() with ClosedError. Accepted sockets are the caller's and stay open. Safe twice.
   */
  close(): Promise<void> {
    if (!this.#closing) {
      for (const socket of this.#pending.splice(0)) socket.destroy();
      for (const w of this.#waiters.splice(0)) w.reject(new ClosedError(this.#what(), 'accept'));
      // server.close()'s callback waits for every accepted connection to end; the port
      // itself is released at once, which is all this promises.
      this.#server.close();
      this.#closing = new Promise((resolve) => setImmediate(resolve));
    }
    return this.#closing;
  }

  #what(): string {
    return `listener on ${formatHostPort(this.address.host, this.address.port)}`;
  }

  #onConnection = (socket: net.Socket): void => {
    socket.on('error', ignore);
    if (this.#closing) return void socket.destroy();
    const waiter = this.#waiters.shift();
    if (waiter) return waiter.resolve(socket);
    if (this.#pending.length >= this.#maxPending) this.#prune();
    if (this.#pending.length >= this.#maxPending) return void socket.destroy();
    this.#pending.push(socket);
  };

  /** Drops queued connections that closed while waiting. */
  #prune(): void {
    const open = this.#pending.filter((s) => !s.destroyed);
    this.#pending.splice(0, this.#pending.length, ...open);
  }

  /** accept(2) failed (EMFILE...): those waiting hear of it; the listener goes on. */
  #onServerError = (e: Error): void => {
    const errno = errnoOf(e);
    const error = new ListenError(`${this.#what()}: accepting a connection failed: ${e.message}`, errno === 'EMFILE' ? 'raise the limit of open files (ulimit -n)' : undefined, errno, e);
    for (const w of this.#waiters.splice(0)) w.reject(error);
  };
}
