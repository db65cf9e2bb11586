/**
 * Cuts a byte stream into frames. Built for the page stream (about 1 GiB of 4 KiB pages per
 * migration at more than 1 GB/s): a frame that lies inside one chunk is returned as a view
 * of that chunk, without a copy; a frame that spans chunks gets its payload allocated once,
 * when its header is complete, and each chunk's share copied into it as it arrives.
 */
import { ClosedError } from '../errors.js';
import { ProtocolError } from './errors.js';
import { looksLikeTls, TLS_REMEDY } from './tls-failure.js';
import { FRAME_HEADER_SIZE, checkHeader, checkMaxPayload, formatType, knownTypePredicate, type Frame, type KnownTypes } from './frame.js';

export interface FrameDecoderOptions {
  /** Largest payload accepted; a header announcing more is ERR_FRAME_TOO_LARGE. Default 16 MiB. */
  maxPayload?: number;
  /** The frame types accepted; any other is ERR_UNKNOWN_FRAME. */
  isKnownType: KnownTypes;
  /** Prefixes messages, e.g. 'source with 10.0.0.2:4000'. */
  name?: string;
}

const EMPTY = Buffer.alloc(0);

export class FrameDecoder {
  readonly #maxPayload: number;
  readonly #isKnownType: (type: number) => boolean;
  readonly #context: string;
  /** A header split across chunks collects here. */
  readonly #header = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  #headerHave = 0;
  /** The frame whose payload spans chunks, while it fills. */
  #body: Buffer | undefined;
  #bodyHave = 0;
  #type = 0;
  #flags = 0;
  /** Once set, the decoder refuses everything with it: the stream cannot be resynchronised. */
  #error: Error | undefined;
  #ended = false;
  #started = false;

  constructor(options: FrameDecoderOptions) {
    this.#maxPayload = checkMaxPayload(options.maxPayload);
    this.#isKnownType = knownTypePredicate(options.isKnownType);
    this.#context = options.name ? `${options.name}: ` : '';
  }

  /** Bytes of a frame received so far and not yet returned (0 between frames). */
  get buffered(): number {
    return this.#body ? FRAME_HEADER_SIZE + this.#bodyHave : this.#headerHave;
  }

  /**
   * Decodes a chunk; appends the frames it completes to `out` and returns `out`. On an error
   * it throws, and the frames before the bad one are in `out` (pass your own array to get them).
   */
  push(chunk: Buffer, out: Frame[] = []): Frame[] {
    if (this.#error) throw this.#error;
    if (this.#ended) throw new ClosedError('frame decoder', 'push');
    try {
      if (!this.#started && chunk.length > 0) {
        this.#started = true;
        // A TLS ClientHello would otherwise read as an unknown frame type: say what it is.
        if (looksLikeTls(chunk)) throw new ProtocolError('ERR_TLS_MISMATCH', `${this.#context}the peer speaks TLS and this side does not`, TLS_REMEDY);
      }
      this.#decode(chunk, out);
    } catch (e) {
      this.#error = e as Error;
      throw e;
    }
    return out;
  }

  /** The stream has ended: throws ERR_TRUNCATED if it ended inside a frame. Safe twice. */
  end(): void {
    if (this.#error) throw this.#error;
    this.#ended = true;
    let detail: string | undefined;
    if (this.#body) {
      const missing = this.#body.length - this.#bodyHave;
      detail = `stream ended inside a frame of type ${formatType(this.#type)}: ${missing} of its ${this.#body.length} payload bytes missing`;
    } else if (this.#headerHave > 0) {
      detail = `stream ended inside a frame header: ${FRAME_HEADER_SIZE - this.#headerHave} of its ${FRAME_HEADER_SIZE} bytes missing`;
    }
    if (detail === undefined) return;
    this.#error = new ProtocolError('ERR_TRUNCATED', this.#context + detail, 'the peer stopped mid-frame: it exited or lost the connection; see its log');
    throw this.#error;
  }

  #decode(chunk: Buffer, out: Frame[]): void {
    const n = chunk.length;
    let off = 0;
    while (off < n) {
      if (this.#body) {
        const take = Math.min(n - off, this.#body.length - this.#bodyHave);
        chunk.copy(this.#body, this.#bodyHave, off, off + take);
        this.#bodyHave += take;
        off += take;
        if (this.#bodyHave === this.#body.length) {
          out.push({ type: this.#type, flags: this.#flags, payload: this.#body });
          this.#body = undefined;
        }
      } else if (this.#headerHave === 0 && n - off >= FRAME_HEADER_SIZE) {
        // The common case: the header lies whole in this chunk; read it in place.
        off = this.#startFrame(chunk, off + FRAME_HEADER_SIZE, chunk.readUInt32LE(off), chunk.readUInt16LE(off + 4), chunk.readUInt16LE(off + 6), out);
      } else {
        const take = Math.min(FRAME_HEADER_SIZE - this.#headerHave, n - off);
        chunk.copy(this.#header, this.#headerHave, off, off + take);
        this.#headerHave += take;
        off += take;
        if (this.#headerHave === FRAME_HEADER_SIZE) {
          this.#headerHave = 0;
          const h = this.#header;
          off = this.#startFrame(chunk, off, h.readUInt32LE(0), h.readUInt16LE(4), h.readUInt16LE(6), out);
        }
      }
    }
  }

  /** A header is complete and its payload starts at chunk[start]: returns the offset after what it took. */
  #startFrame(chunk: Buffer, start: number, length: number, type: number, flags: number, out: Frame[]): number {
    checkHeader(type, length, this.#isKnownType, this.#maxPayload, this.#context);
    if (length === 0) {
      out.push({ type, flags, payload: EMPTY });
      return start;
    }
    const end = start + length;
    if (end <= chunk.length) {
      out.push({ type, flags, payload: chunk.subarray(start, end) });
      return end;
    }
    this.#type = type;
    this.#flags = flags;
    this.#body = Buffer.allocUnsafe(length);
    this.#bodyHave = chunk.copy(this.#body, 0, start);
    return chunk.length;
  }
}
