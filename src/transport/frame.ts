/**
 * The wire format. Every frame is an 8-byte little-endian header — u32 payload length (not
 * counting the header), u16 type, u16 flags — followed by that many payload bytes. The
 * receiver checks each header before it allocates or waits for anything, so a peer that is
 * not speaking this format is refused at its first 8 bytes.
 */
import { constants } from 'node:buffer';
import { InvalidArgumentError } from '../errors.js';
import { formatSize } from '../util/format.js';
import { ProtocolError } from './errors.js';

export const FRAME_HEADER_SIZE = 8;
/** Large enough for a batch of huge pages, small enough that a corrupt header cannot exhaust memory. */
export const DEFAULT_MAX_PAYLOAD = 16 * 2 ** 20;
const U16 = 0xffff;
const U32 = 0xffffffff;

export interface Frame {
  readonly type: number;
  /** Not interpreted by the transport: passed through as sent. */
  readonly flags: number;
  /**
   * May be a view into the chunk the socket delivered (no copy); it stays valid and
   * unchanged after the handler returns, so it may be kept.
   */
  readonly payload: Buffer;
}

/** The frame types a receiver accepts, as a set or a predicate. */
export type KnownTypes = ReadonlySet<number> | ((type: number) => boolean);

export function knownTypePredicate(known: KnownTypes): (type: number) => boolean {
  return typeof known === 'function' ? known : (type) => known.has(type);
}

/** `0x0003`: frame types appear in hex in every message. */
export function formatType(type: number): string {
  return `0x${type.toString(16).padStart(4, '0')}`;
}

export function encodeHeader(type: number, flags: number, length: number): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > U16) throw new InvalidArgumentError(`frame type ${type} is not a u16`);
  if (!Number.isInteger(flags) || flags < 0 || flags > U16) throw new InvalidArgumentError(`frame flags ${flags} are not a u16`);
  if (!Number.isInteger(length) || length < 0 || length > U32) throw new InvalidArgumentError(`frame length ${length} is not a u32`);
  const header = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  header.writeUInt32LE(length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  return header;
}

/** Validates a maxPayload option; returns the default when absent. */
export function checkMaxPayload(maxPayload: number | undefined): number {
  if (maxPayload === undefined) return DEFAULT_MAX_PAYLOAD;
  const limit = Math.min(U32, constants.MAX_LENGTH);
  if (!Number.isInteger(maxPayload) || maxPayload < 0 || maxPayload > limit) {
    throw new InvalidArgumentError(`maxPayload ${maxPayload} is not an integer in [0, ${limit}]`);
  }
  return maxPayload;
}

function formatLimit(bytes: number): string {
  const size = formatSize(bytes);
  return size.endsWith(' B') ? `${bytes}` : `${bytes} (${size})`;
}

const NOT_OURS = 'the peer is not a postcopy peer of this version, or the stream is corrupt';

/**
 * Refuses a header the receiver cannot accept. The type is checked first: a stream that is
 * not ours (an HTTP request, random bytes) is far more likely to show an unknown type than
 * a meaningful length, and "unknown frame type" says so better.
 */
export function checkHeader(type: number, length: number, isKnownType: (type: number) => boolean, maxPayload: number, context: string): void {
  if (!isKnownType(type)) {
    throw new ProtocolError('ERR_UNKNOWN_FRAME', `${context}unknown frame type ${formatType(type)} (header announces ${length} payload bytes)`, NOT_OURS);
  }
  if (length > maxPayload) {
    throw new ProtocolError(
      'ERR_FRAME_TOO_LARGE',
      `${context}frame of type ${formatType(type)} announces ${length} payload bytes, over the limit of ${formatLimit(maxPayload)}`,
      NOT_OURS,
    );
  }
}
