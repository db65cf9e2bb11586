/**
 * Failures of the transport: the peer spoke something that is not our framing, stopped
 * mid-frame, went away or went silent (ProtocolError); a connection or listening socket
 * could not be set up (ConnectError, ListenError).
 */
import { PostcopyError } from '../errors.js';

export type ProtocolErrorCode =
  /** A header announces more payload than the receiver accepts. */
  | 'ERR_FRAME_TOO_LARGE'
  /** A header carries a frame type the receiver does not know. */
  | 'ERR_UNKNOWN_FRAME'
  /** The stream ended inside a frame. */
  | 'ERR_TRUNCATED'
  /** The peer closed or reset the connection when no close was expected. */
  | 'ERR_PEER_CLOSED'
  /** Nothing received for longer than the idle timeout. */
  | 'ERR_PEER_SILENT'
  /** The socket failed for another reason (ETIMEDOUT, EHOSTUNREACH...). */
  | 'ERR_CONNECTION'
  /** One side speaks TLS, the other plain TCP. */
  | 'ERR_TLS_MISMATCH'
  /** For the layers above: a handshake's magic or version does not match. */
  | 'ERR_BAD_MAGIC'
  /** For the layers above: a well-formed frame arrived where the protocol allows no such frame. */
  | 'ERR_UNEXPECTED_FRAME'
  | 'ERR_PROTOCOL';

/** The conversation with the peer broke: the channel that saw it cannot be used further. */
export class ProtocolError extends PostcopyError {
  override name = 'ProtocolError';
  declare readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, detail: string, remedy?: string, cause?: unknown) {
    super(code, detail, remedy);
    if (cause !== undefined) this.cause = cause;
  }
}

/** A connection to a peer could not be made; `errno` is the socket's code ('ECONNREFUSED'). */
export class ConnectError extends PostcopyError {
  override name = 'ConnectError';
  readonly errno: string | undefined;
  constructor(detail: string, remedy: string | undefined, errno?: string, cause?: unknown) {
    super('ERR_CONNECT', detail, remedy);
    this.errno = errno;
    if (cause !== undefined) this.cause = cause;
  }
}

/** A port could not be listened on, or accepting on it failed; `errno` as for ConnectError. */
export class ListenError extends PostcopyError {
  override name = 'ListenError';
  readonly errno: string | undefined;
  constructor(detail: string, remedy: string | undefined, errno?: string, cause?: unknown) {
    super('ERR_LISTEN', detail, remedy);
    this.errno = errno;
    if (cause !== undefined) this.cause = cause;
  }
}

/** The errno-style code of a Node socket error, if it has one. */
export function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
