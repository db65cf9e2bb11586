/**
 * Descriptors over a Unix socket (SCM_RIGHTS) and the peer's credentials (SO_PEERCRED),
 * checked here and passed to the addon's recvmsg/sendmsg/getsockopt. The socket itself is
 * Node's (net.Server with pauseOnConnect, so libuv never reads what carries descriptors);
 * its descriptor is what these take.
 */
import type { Socket } from 'node:net';
import { ArgumentError } from '../errors.js';
import { describe, integer } from '../native/args.js';
import { native } from '../native/binding.js';

export interface Received {
  /** Bytes read into the buffer; 0: the peer closed its end. */
  readonly bytes: number;
  /** Descriptors that came with them (close-on-exec), now this process's. */
  readonly fds: readonly number[];
  /** The peer sent more descriptors than asked for: the kernel dropped the rest. */
  readonly truncated: boolean;
}

/** recvmsg(2) on a non-blocking socket: undefined when nothing is there (EAGAIN). */
export function receiveWithFds(fd: number, into: Uint8Array, maxFds: number): Received | undefined {
  integer('receiveWithFds', 'fd', fd, { min: 0, max: 0x7fff_ffff });
  if (!(into instanceof Uint8Array) || into.byteLength === 0) throw new ArgumentError('into', `receiveWithFds: into must be a non-empty Uint8Array, got ${describe(into)}`);
  integer('receiveWithFds', 'maxFds', maxFds, { min: 1, max: 253 });
  const r = native.recvmsg(fd, into, maxFds);
  if (r === -1) return undefined;
  const [bytes, ...rest] = r;
  const truncated = rest[rest.length - 1] === -1;
  return { bytes: bytes!, fds: truncated ? rest.slice(0, -1) : rest, truncated };
}

/** sendmsg(2) of `bytes` with `fds` in one SCM_RIGHTS message; the bytes sent, or -1 on EAGAIN. */
export function sendWithFds(fd: number, bytes: Uint8Array, fds: readonly number[]): number {
  integer('sendWithFds', 'fd', fd, { min: 0, max: 0x7fff_ffff });
  if (!(bytes instanceof Uint8Array) || bytes.byteLength === 0) throw new ArgumentError('bytes', `sendWithFds: bytes must be a non-empty Uint8Array, got ${describe(bytes)}`);
  if (!Array.isArray(fds) || fds.length > 253) throw new ArgumentError('fds', `sendWithFds: fds must be an array of at most 253 descriptors, got ${describe(fds)}`);
  fds.forEach((f, i) => integer('sendWithFds', `fds[${i}]`, f, { min: 0, max: 0x7fff_ffff }));
  return native.sendmsg(fd, bytes, Int32Array.from(fds));
}

export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  integer('peerCredentials', 'fd', fd, { min: 0, max: 0x7fff_ffff });
  const [pid, uid, gid] = native.peerCredentials(fd);
  return { pid, uid, gid };
}

/** The descriptor under a connected net.Socket (libuv's; valid while the socket is open). */
export function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new ArgumentError('socket', 'socketFd: the socket has no descriptor (not connected, or not a Unix or TCP socket)');
  return fd;
}
