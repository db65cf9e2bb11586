/**
 * A recorded working set (--record FILE, --prefetch FILE): the units a restored guest
 * faulted on, in the order of their first faults, and in how many recorded runs each was
 * faulted. Recording into an existing file merges: the union of the pages, each one's
 * count raised by one if this run faulted on it, new pages appended in this run's order
 * (REAP records once; several runs make the set and its order steadier).
 *
 * JSON, versioned, bound to a memory layout (size and unit), and it names the snapshot it
 * was recorded on. Units and counts are little-endian u32 arrays in base64.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { SnapshotInvalidError } from './errors.js';
import type { Manifest } from './manifest.js';

/**
 * What a record is bound to: the memory's size and unit, and an identity to name in it (a
 * snapshot's manifest is one; `postcopy serve --file` makes one for a bare memory file).
 */
export type RecordLayout = { readonly memory: Pick<Manifest['memory'], 'size' | 'unit'>; readonly checksum: string };

export const WORKING_SET_FORMAT = 'postcopy-working-set';
export const WORKING_SET_VERSION = 1;

export interface WorkingSet {
  readonly size: number;
  readonly unit: number;
  /** The manifest checksum of the snapshot last recorded on. */
  readonly snapshot: string;
  readonly runs: number;
  /** Units in recorded order, and how many runs faulted on each. */
  readonly units: readonly number[];
  readonly counts: readonly number[];
}

interface WorkingSetFile {
  format: string;
  version: number;
  size: number;
  unit: number;
  snapshot: string;
  runs: number;
  units: string;
  counts: string;
  sha256: string;
}

const invalid = (path: string, why: string, remedy?: string) => new SnapshotInvalidError('ERR_RECORD', `the working-set record ${path} ${why}`, remedy);

function u32(values: readonly number[]): string {
  return Buffer.from(new Uint32Array(values).buffer).toString('base64');
}
function fromU32(text: string): number[] | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  const b = Buffer.from(text, 'base64');
  if (b.byteLength % 4 !== 0) return undefined;
  return Array.from(new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4));
}
const digest = (units: string, counts: string) => createHash('sha256').update(units).update('/').update(counts).digest('hex');

/** Reads and checks a record against the snapshot it will be used with (same size and unit). */
export function readWorkingSet(path: string, manifest: RecordLayout): WorkingSet {
  if (!existsSync(path)) throw invalid(path, 'does not exist', 'Record one first with --record FILE (`postcopy snapshot restore DIR` or `postcopy serve`)');
  let raw: WorkingSetFile;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8')) as WorkingSetFile;
  } catch (e) {
    throw invalid(path, `is not JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || raw.format !== WORKING_SET_FORMAT) throw invalid(path, 'is not a postcopy working-set record');
  if (raw.version !== WORKING_SET_VERSION) throw invalid(path, `is version ${JSON.stringify(raw.version)}, this postcopy reads version ${WORKING_SET_VERSION}`);
  if (raw.size !== manifest.memory.size || raw.unit !== manifest.memory.unit) {
    throw invalid(path, `was recorded on ${raw.size} bytes in ${raw.unit}-byte units, this snapshot is ${manifest.memory.size} bytes in ${manifest.memory.unit}-byte units`);
  }
  if (typeof raw.units !== 'string' || typeof raw.counts !== 'string' || digest(raw.units, raw.counts) !== raw.sha256) throw invalid(path, 'does not match its checksum: damaged or edited');
  const units = fromU32(raw.units);
  const counts = fromU32(raw.counts);
  if (!units || !counts || units.length !== counts.length) throw invalid(path, 'has units and counts of different lengths');
  const total = manifest.memory.size / manifest.memory.unit;
  const seen = new Set<number>();
  for (const u of units) {
    if (u >= total) throw invalid(path, `names unit ${u}, the memory has ${total}`);
    if (seen.has(u)) throw invalid(path, `names unit ${u} twice`);
    seen.add(u);
  }
  if (!Number.isSafeInteger(raw.runs) || raw.runs < 1 || counts.some((n) => n < 1 || n > raw.runs)) throw invalid(path, 'has counts outside 1..runs');
  return { size: raw.size, unit: raw.unit, snapshot: String(raw.snapshot), runs: raw.runs, units, counts };
}

/** This run's faults merged into `previous` (or a first record). */
export function mergeWorkingSet(previous: WorkingSet | undefined, manifest: RecordLayout, faulted: readonly number[]): WorkingSet {
  const units = [...(previous?.units ?? [])];
  const counts = [...(previous?.counts ?? [])];
  const index = new Map<number, number>(units.map((u, i) => [u, i]));
  for (const u of faulted) {
    const i = index.get(u);
    if (i === undefined) {
      index.set(u, units.length);
      units.push(u);
      counts.push(1);
    } else counts[i]!++;
  }
  return { size: manifest.memory.size, unit: manifest.memory.unit, snapshot: manifest.checksum, runs: (previous?.runs ?? 0) + 1, units, counts };
}

export function writeWorkingSet(path: string, ws: WorkingSet): void {
  const units = u32(ws.units);
  const counts = u32(ws.counts);
  const file: WorkingSetFile = { format: WORKING_SET_FORMAT, version: WORKING_SET_VERSION, size: ws.size, unit: ws.unit, snapshot: ws.snapshot, runs: ws.runs, units, counts, sha256: digest(units, counts) };
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(file)}\n`);
  renameSync(tmp, path);
}

/**
 * The prefetch list: the recorded units faulted in at least `minRuns` runs, as runs of
 * consecutive units (one ioctl each), ordered by the first fault of each run. A unit that
 * continues any open run joins it: guest threads sweeping their own slices interleave in
 * the record (a, b, a+1, b+1, ...), and are still two runs.
 */
export function prefetchRuns(ws: WorkingSet, minRuns = 1): [first: number, count: number][] {
  const runs: [number, number][] = [];
  /** The unit that would extend a run → that run. */
  const open = new Map<number, [number, number]>();
  ws.units.forEach((u, i) => {
    if (ws.counts[i]! < minRuns) return;
    const run = open.get(u);
    if (run) {
      open.delete(u);
      run[1]++;
      open.set(u + 1, run);
    } else {
      const r: [number, number] = [u, 1];
      runs.push(r);
      open.set(u + 1, r);
    }
  });
  return runs;
}
