/**
 * What `postcopy migrate` records over time on each side: the sides sample their own
 * counters (SourceOptions/DestinationOptions.recorder), and their progress events become
 * the series' events: round start and end, pause, switchover, resume, complete, each
 * state change. Names as the report reads them (src/apps/report/).
 */
import type { Recorder } from '../../metrics/series.js';
import type { DestinationEvent } from './destination/destination.js';
import type { SourceEvent } from './source/source.js';

/** The source's events, recorded, then passed on to `inner`. */
export function recordSourceEvents(recorder: Recorder, inner: (e: SourceEvent) => void): (e: SourceEvent) => void {
  return (e) => {
    if (e.phase === 'state') {
      recorder.event(`state:${e.to}`);
      // Entering `switching` is the moment the source asks its guest to pause.
      if (e.to === 'switching') recorder.event('pause');
    } else if (e.phase === 'round') {
      // Said when the round is over: it started e.ms ago.
      recorder.event('round-start', { round: e.round }, e.ms);
      recorder.event('round-end', { round: e.round, pages: e.pages, ms: e.ms });
    } else if (e.phase === 'switchover') recorder.event('switchover', { stalePages: e.stalePages });
    else if (e.phase === 'complete') recorder.event('complete');
    inner(e);
  };
}

/** The destination's events, recorded, then passed on to `inner`. */
export function recordDestinationEvents(recorder: Recorder, inner: (e: DestinationEvent) => void): (e: DestinationEvent) => void {
  return (e) => {
    if (e.phase === 'state') recorder.event(`state:${e.to}`);
    else if (e.phase === 'round') recorder.event('round-end', { round: e.round, pages: e.pages });
    else if (e.phase === 'resumed') recorder.event('resume', { stalePages: e.stalePages, downtimeMs: e.downtimeMs });
    else if (e.phase === 'complete') recorder.event('complete');
    else if (e.phase === 'checked') recorder.event('checked', { lostWrites: e.lostWrites });
    else if (e.phase === 'accepted') recorder.event('accepted');
    inner(e);
  };
}
