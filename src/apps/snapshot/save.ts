/**
 * Saving a paused guest: its memory into DIR/memory, sparse (a unit the guest never wrote,
 * or that holds only zeros, stays a hole: found with SEEK_DATA on shared memory, then by
 * looking at the bytes; hugetlb memory in whole huge pages), and its state into
 * DIR/snapshot.json (manifest.ts) with a SHA-256 per 64 MiB region of the memory.
 *
 * The memory file is written through a shared mapping of it, which works the same on a
 * disk, on tmpfs and on hugetlbfs (which has no write(2)); both files are written under
 * temporary names and renamed into place, so a crash leaves the old snapshot or none.
 */
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, openSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError } from '../../errors.js';
import type { MigratableGuest } from '../../guest/guest.js';
import { programOf } from '../../guest/open.js';
import { MapFlag } from '../../memory/constants.js';
import { Mapping } from '../../memory/mapping.js';
import { DATA_MAP_FILE, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, MEMORY_FILE, type Manifest, type Region, sealManifest } from './manifest.js';
import { UnitMap } from './unit-map.js';

/** Bytes per checksummed region (a whole number of units). */
export const REGION_BYTES = 64 * 2 ** 20;

export interface SaveReport {
  readonly dir: string;
  readonly size: number;
  readonly unit: number;
  readonly units: number;
  readonly dataUnits: number;
  readonly holeUnits: number;
  /** Bytes the file takes on its filesystem (st_blocks × 512). */
  readonly allocatedBytes: number;
  /** Finding data and holes, ms. */
  readonly scanMs: number;
  /** Copying data into the file and hashing it, ms. */
  readonly writeMs: number;
  readonly regions: number;
}

const ZEROS = new Uint8Array(64 * 1024);

export function isZero(bytes: Uint8Array, offset: number, length: number): boolean {
  for (let at = offset; at < offset + length; at += ZEROS.byteLength) {
    const n = Math.min(ZEROS.byteLength, offset + length - at);
    if (Buffer.compare(bytes.subarray(at, at + n), n === ZEROS.byteLength ? ZEROS : ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/** Which units hold data: SEEK_DATA skips the holes of shared memory; the rest is looked at. */
export function findData(guest: MigratableGuest, view: Uint8Array): UnitMap {
  const unit = guest.unit;
  const units = guest.shape.size / unit;
  const data = new UnitMap(units);
  for (let u = 0; u < units; ) {
    // The kernel scans a hole to its end: one answer skips all of it.
    const next = guest.backing.nextData(u * unit);
    if (next >= guest.shape.size) break;
    const first = Math.floor(next / unit);
    if (first > u) {
      u = first;
      continue;
    }
    if (!isZero(view, u * unit, unit)) data.set(u);
    u++;
  }
  return data;
}

/** Writes the snapshot of `guest` (paused) into `dir`, which is made if need be. */
export function saveSnapshot(guest: MigratableGuest, dir: string): SaveReport {
  if (guest.running) throw new InvalidArgumentError('saveSnapshot: pause the guest first (its memory is still changing)');
  mkdirSync(dir, { recursive: true });
  const unit = guest.unit;
  const size = guest.shape.size;
  const units = size / unit;
  const source = guest.backing.alias ?? guest.backing.primary;
  const view = source.bytes();
  const t0 = performance.now();
  const data = findData(guest, view);
  const t1 = performance.now();

  const tmpMemory = temporaryMemoryPath(dir);
  const fd = openSync(tmpMemory, 'w+', 0o600);
  const regions: Region[] = [];
  try {
    ftruncateSync(fd, size);
    const out = Mapping.map(size, { flags: MapFlag.SHARED, fd });
    try {
      const bytes = out.bytes();
      const regionBytes = Math.max(unit, Math.floor(REGION_BYTES / unit) * unit);
      for (let offset = 0; offset < size; offset += regionBytes) {
        const length = Math.min(regionBytes, size - offset);
        const hash = createHash('sha256');
        data.runs(true, (first, count) => {
          const from = first * unit;
          const run = view.subarray(from, from + count * unit);
          bytes.set(run, from);
          hash.update(run);
        }, offset / unit, (offset + length) / unit);
        regions.push({ offset, length, sha256: hash.digest('hex') });
      }
    } finally {
      out.unmap();
    }
  } finally {
    closeSync(fd);
  }
  const t2 = performance.now();
  const manifest = manifestFor(guest, captureState(guest), memoryEntry(size, unit, data, regions));
  const memoryPath = commitFiles(dir, tmpMemory, manifest, data);
  return {
    dir,
    size,
    unit,
    units,
    dataUnits: manifest.memory.dataUnits,
    holeUnits: units - manifest.memory.dataUnits,
    allocatedBytes: statSync(memoryPath).blocks * 512,
    scanMs: t1 - t0,
    writeMs: t2 - t1,
    regions: regions.length,
  };
}

/** What the state file keeps of a paused guest, taken at the pause (a live save writes the file after the guest may run again). */
export interface CapturedState {
  readonly states: readonly string[];
  readonly clock: { readonly ticks: string; readonly ticksPerMs: number };
}

export function captureState(guest: MigratableGuest): CapturedState {
  const clock = guest.clock();
  return { states: guest.save().map((s) => Buffer.from(s).toString('base64')), clock: { ticks: String(clock.ticks), ticksPerMs: clock.ticksPerMs } };
}

export function manifestFor(guest: MigratableGuest, captured: CapturedState, memory: Manifest['memory']): Manifest {
  return sealManifest({
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    createdAt: new Date().toISOString(),
    guest: {
      backend: guest.backend,
      program: programOf(guest.backend),
      shape: { ...guest.shape },
      stateBytes: guest.stateBytes,
      states: captured.states,
      clock: captured.clock,
    },
    memory,
  });
}

/** Where the memory file is written before it is renamed into place. */
export const temporaryMemoryPath = (dir: string) => `${join(dir, MEMORY_FILE)}.tmp-${process.pid}`;

/** The state file's memory part: the memory file, its data map (a file of its own, hashed here) and its regions. */
export function memoryEntry(size: number, unit: number, data: UnitMap, regions: Region[]): Manifest['memory'] {
  const sha256 = createHash('sha256').update(data.bits).digest('hex');
  return { file: MEMORY_FILE, size, unit, dataMapFile: { name: DATA_MAP_FILE, sha256 }, dataUnits: data.count(), regions };
}

/**
 * Writes the data map and the state file and renames all three into place (the state file
 * last: it names a complete memory file and data map). Returns the memory file's path.
 */
export function commitFiles(dir: string, tmpMemory: string, manifest: Manifest, data: UnitMap): string {
  const memoryPath = join(dir, MEMORY_FILE);
  const dataMapPath = join(dir, DATA_MAP_FILE);
  const manifestPath = join(dir, MANIFEST_FILE);
  const tmpDataMap = `${dataMapPath}.tmp-${process.pid}`;
  const tmpManifest = `${manifestPath}.tmp-${process.pid}`;
  writeFileSync(tmpDataMap, data.bits, { mode: 0o600 });
  writeFileSync(tmpManifest, `${JSON.stringify(manifest, null, 1)}\n`, { mode: 0o600 });
  renameSync(tmpMemory, memoryPath);
  renameSync(tmpDataMap, dataMapPath);
  renameSync(tmpManifest, manifestPath);
  return memoryPath;
}
