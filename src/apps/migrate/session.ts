/**
 * A migration as explicit states, on both sides, with the frames each state admits (QEMU's
 * PostcopyState — NONE, ADVISE, DISCARD, LISTENING, RUNNING, END — is the model):
 *
 *   handshake  HELLO / ACCEPT, the urgent connection joins
 *   precopy    the guest runs on the source; pages stream; rounds are acknowledged
 *   switching  the source's guest is paused; its state and the stale set are in flight
 *              (destination: SWITCHOVER is being applied; frames behind it wait)
 *   postcopy   the destination's guest runs; stale pages come on request or in the background
 *   complete   every page is in
 *   paused     (from switching, post-copy or recovering) the link was lost or went silent:
 *              both sides keep everything; the destination's workers that need a missing
 *              page wait, the others run on (QEMU's postcopy-paused)
 *   recovering a new connection resumes the session: the destination says which pages it
 *              still needs, the source re-queues them (QEMU's postcopy-recover)
 *   failed     (from any state) the migration ended with an error
 *
 * Every frame is checked against the state it arrives in, on the connection it arrives
 * on, before anything parses it: a frame out of place is a MigrationProtocolError naming
 * the frame, the connection and the state, and the session fails.
 */
import { PostcopyError } from '../../errors.js';
import type { Frame } from '../../transport/frame.js';
import { FrameType, MigrationProtocolError, frameName } from './protocol.js';

export type SessionState = 'handshake' | 'precopy' | 'switching' | 'postcopy' | 'paused' | 'recovering' | 'complete' | 'failed';
export type Connection = 'main' | 'urgent';
export type Side = 'source' | 'destination';

/** The states each state may go to (any state may fail). */
const NEXT: Readonly<Record<SessionState, readonly SessionState[]>> = {
  handshake: ['precopy'],
  precopy: ['switching'],
  switching: ['postcopy', 'paused'],
  postcopy: ['complete', 'paused'],
  paused: ['recovering'],
  recovering: ['postcopy', 'paused'],
  complete: [],
  failed: [],
};

const { HELLO, ACCEPT, ERROR, PAGES, ROUND_END, SWITCHOVER, RESUMED, REQUEST, COMPLETE, URGENT, ZERO, RESUME, RESUME_ACK, CLOCK_PROBE, CLOCK_REPLY } = FrameType;
type Admits = Readonly<Record<SessionState, Readonly<Partial<Record<Connection, readonly number[]>>>>>;

/** What a side may receive, by state and connection. */
export const ADMITS: Readonly<Record<Side, Admits>> = {
  // Frames the destination receives from the source.
  destination: {
    handshake: { main: [HELLO], urgent: [URGENT] },
    // The urgent connection is idle in precopy: the source measures the clocks' offset on it.
    precopy: { main: [PAGES, ZERO, ROUND_END, SWITCHOVER, ERROR], urgent: [CLOCK_PROBE] },
    // SWITCHOVER is being applied: the background stream may already follow it (it waits).
    switching: { main: [PAGES, ERROR], urgent: [CLOCK_PROBE] },
    postcopy: { main: [PAGES, ERROR], urgent: [PAGES, CLOCK_PROBE] },
    // The last page is in: the source may still be sending pages that crossed COMPLETE (dropped).
    complete: { main: [PAGES, ERROR], urgent: [PAGES] },
    // The old connections are gone; nothing is read until a source resumes.
    paused: {},
    recovering: { main: [RESUME], urgent: [URGENT] },
    failed: {},
  },
  // Frames the source receives from the destination.
  source: {
    // The clocks are measured on the urgent connection before precopy starts.
    handshake: { main: [ACCEPT, ERROR], urgent: [CLOCK_REPLY] },
    precopy: { main: [ROUND_END, ERROR], urgent: [CLOCK_REPLY] },
    // The source is still writing SWITCHOVER; the destination cannot have answered it yet.
    switching: { main: [ERROR], urgent: [ERROR, CLOCK_REPLY] },
    postcopy: { main: [RESUMED, COMPLETE, ERROR], urgent: [REQUEST, ERROR, CLOCK_REPLY] },
    // Requests that crossed COMPLETE.
    complete: { main: [ERROR], urgent: [REQUEST, CLOCK_REPLY] },
    paused: {},
    recovering: { main: [RESUME_ACK, ERROR] },
    failed: {},
  },
};

export type SessionEvent = { from: SessionState; to: SessionState; at: number };

export class Session {
  readonly side: Side;
  #state: SessionState = 'handshake';
  #error: Error | undefined;
  readonly #listeners: ((e: SessionEvent) => void)[] = [];
  /** Every transition with its time (performance.now()), for the report and for tests. */
  readonly history: SessionEvent[] = [];

  constructor(side: Side) {
    this.side = side;
  }

  get state(): SessionState {
    return this.#state;
  }

  /** The error the session failed with, if it did. */
  get error(): Error | undefined {
    return this.#error;
  }

  onChange(listener: (e: SessionEvent) => void): void {
    this.#listeners.push(listener);
  }

  /** Moves to `next`; a move the table does not allow is a bug in this side, not the peer's. */
  enter(next: SessionState): void {
    if (!NEXT[this.#state].includes(next)) {
      throw new PostcopyError('ERR_SESSION_STATE', `${this.side}: ${this.#state} → ${next} is not a transition of a migration`);
    }
    this.#move(next);
  }

  /** Fails the session (once; later failures keep the first error). Returns the first error. */
  fail(e: Error): Error {
    if (this.#state !== 'failed') {
      this.#error = e;
      this.#move('failed');
    }
    return this.#error!;
  }

  /** Whether `frame` may arrive now on `connection`. */
  admits(connection: Connection, frame: Frame): boolean {
    return ADMITS[this.side][this.#state][connection]?.includes(frame.type) ?? false;
  }

  /** Throws a MigrationProtocolError unless `frame` may arrive now on `connection`. */
  admit(connection: Connection, frame: Frame): void {
    if (this.admits(connection, frame)) return;
    const from = this.side === 'source' ? 'destination' : 'source';
    throw new MigrationProtocolError(`a ${frameName(frame.type)} frame from the ${from} on the ${connection} connection while ${this.#state === 'failed' ? 'failed' : `in ${this.#state}`}`);
  }

  #move(next: SessionState): void {
    const e = { from: this.#state, to: next, at: performance.now() };
    this.#state = next;
    this.history.push(e);
    for (const l of this.#listeners) l(e);
  }
}
