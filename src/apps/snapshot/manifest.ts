/**
 * The state file of a snapshot (DIR/snapshot.json): what a restore needs to build the same
 * guest and to trust the memory file beside it. Parsed field by field: anything missing,
 * of the wrong type, from another format version, or that does not add up (a data map of
 * the wrong length, regions that do not tile the file, states of the wrong size) is a
 * SnapshotInvalidError naming the field, before anything is built.
 *
 * The manifest carries a SHA-256 of its own canonical text (every field but `checksum`),
 * so a state changed by hand or by a disk is refused as such.
 */
import { createHash } from 'node:crypto';
import type { GuestBackendName, GuestShape } from '../../guest/guest.js';
import { isGuestBackend } from '../../guest/open.js';
import { SWEEP, type Workload, workingSet } from '../../guest/workload.js';
import { isBackingSource, type BackingSourceName } from '../../memory/backing.js';
import { SnapshotInvalidError } from './errors.js';

export const MANIFEST_FORMAT = 'postcopy-snapshot';
/**
 * Bumped whenever the layout of either file changes; a restore refuses any it cannot read.
 * 2: the guest's shape may name a workload (a working set); version 1 files are sweeps.
 * 3: the data map is a file of its own (DATA_MAP_FILE, bits, its SHA-256 here), not base64
 *    in this JSON: a restore reads and hashes 32 KiB a GiB instead of parsing 44 KiB a GiB
 *    of text and hashing it again in the canonical form, which grew the time to resume.
 */
export const MANIFEST_VERSION = 3;
const READABLE_VERSIONS: readonly unknown[] = [1, 2, 3];
export const MANIFEST_FILE = 'snapshot.json';
export const MEMORY_FILE = 'memory';
/** Version 3: one bit per unit, set where the memory file holds data. */
export const DATA_MAP_FILE = 'datamap';
/** Present once a MINOR --consume restore handed the memory file to a guest (who, when). */
export const CONSUMED_FILE = 'consumed';

/** One checksummed part of the memory file: the data units within [offset, offset+length), hashed in order. */
export interface Region {
  readonly offset: number;
  readonly length: number;
  /** SHA-256, hex, of the bytes of the data units in the region (holes are not read). */
  readonly sha256: string;
}

export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly version: number;
  readonly createdAt: string;
  readonly guest: {
    readonly backend: GuestBackendName;
    readonly program: { readonly name: string; readonly codeBytes: number };
    readonly shape: GuestShape;
    /** Bytes of one worker's state, and the states (base64), by worker. */
    readonly stateBytes: number;
    readonly states: readonly string[];
    /** The guest's clock when it was paused (decimal ticks) and its rate. */
    readonly clock: { readonly ticks: string; readonly ticksPerMs: number };
  };
  readonly memory: {
    readonly file: string;
    readonly size: number;
    /** The unit pages are saved and restored in (the source's page size: 4 KiB or a huge page). */
    readonly unit: number;
    /** Bit u set: unit u holds data in the file; clear: a hole (never written, reads as zeros). Versions 1–2: base64 here. */
    readonly dataMap?: string;
    /** Version 3: the same bits in a file of the snapshot's directory, and their SHA-256 (hex). */
    readonly dataMapFile?: { readonly name: string; readonly sha256: string };
    readonly dataUnits: number;
    readonly regions: readonly Region[];
  };
  /** SHA-256, hex, of the manifest's canonical JSON without this field. */
  readonly checksum: string;
}

export type ManifestBody = Omit<Manifest, 'checksum'>;

function canonical(body: ManifestBody): string {
  return JSON.stringify(body);
}

export function sealManifest(body: ManifestBody): Manifest {
  return { ...body, checksum: createHash('sha256').update(canonical(body)).digest('hex') };
}

const bad = (field: string, why: string) => new SnapshotInvalidError('ERR_SNAPSHOT_STATE', `the state file's ${field} ${why}`);

function obj(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, 'is not an object');
  return v as Record<string, unknown>;
}
function int(v: unknown, field: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw bad(field, `is not an integer ≥ ${min} (${JSON.stringify(v)})`);
  return v;
}
function str(v: unknown, field: string): string {
  if (typeof v !== 'string') throw bad(field, 'is not a string');
  return v;
}

function fileName(v: unknown, field: string): string {
  const name = str(v, field);
  if (name.includes('/') || name === '' || name === '.' || name === '..') throw bad(field, `(${JSON.stringify(name)}) is not a file name in the snapshot's directory`);
  return name;
}

function dataMapOf(version: number, mem: Record<string, unknown>): { dataMap: string } | { dataMapFile: { name: string; sha256: string } } {
  if (version < 3) return { dataMap: str(mem.dataMap, 'memory.dataMap') };
  const f = obj(mem.dataMapFile, 'memory.dataMapFile');
  const sha256 = str(f.sha256, 'memory.dataMapFile.sha256');
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw bad('memory.dataMapFile.sha256', 'is not a SHA-256 in hex');
  return { dataMapFile: { name: fileName(f.name, 'memory.dataMapFile.name'), sha256 } };
}

function workloadOf(v: unknown): { workload?: Workload } {
  if (v === undefined) return {};
  const w = obj(v, 'guest.shape.workload');
  if (w.kind === 'sweep') return { workload: SWEEP };
  if (w.kind !== 'working-set') throw bad('guest.shape.workload.kind', `is ${JSON.stringify(w.kind)}, not sweep or working-set`);
  const permille = int(w.permille, 'guest.shape.workload.permille', 1);
  if (permille > 1000) throw bad('guest.shape.workload.permille', `(${permille}) is over 1000`);
  return { workload: workingSet(permille) };
}

/** Parses and checks the state file's text; throws SnapshotInvalidError with the reason. */
export function parseManifest(text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SnapshotInvalidError('ERR_SNAPSHOT_STATE', `the state file is not JSON (${(e as Error).message}): truncated or not a snapshot`);
  }
  const m = obj(raw, 'top level');
  if (m.format !== MANIFEST_FORMAT) throw new SnapshotInvalidError('ERR_SNAPSHOT_STATE', `the state file is not a postcopy snapshot (format ${JSON.stringify(m.format)})`);
  if (!READABLE_VERSIONS.includes(m.version)) {
    throw new SnapshotInvalidError('ERR_SNAPSHOT_VERSION', `the snapshot is format version ${JSON.stringify(m.version)}, this postcopy reads versions ${READABLE_VERSIONS.join(', ')}`, 'Restore it with the postcopy version that saved it');
  }
  const checksum = str(m.checksum, 'checksum');
  const { checksum: _, ...body } = m;
  if (createHash('sha256').update(canonical(body as unknown as ManifestBody)).digest('hex') !== checksum) {
    throw new SnapshotInvalidError('ERR_SNAPSHOT_CORRUPT', 'the state file does not match its own checksum: it was changed or damaged after it was saved');
  }
  const g = obj(m.guest, 'guest');
  const backend = g.backend;
  if (!isGuestBackend(backend)) throw bad('guest.backend', `is ${JSON.stringify(backend)}, not kvm or threads`);
  const program = obj(g.program, 'guest.program');
  const shape = obj(g.shape, 'guest.shape');
  const source = str(shape.source, 'guest.shape.source');
  if (!isBackingSource(source)) throw bad('guest.shape.source', `is ${JSON.stringify(source)}, not a backing source`);
  const states = g.states;
  if (!Array.isArray(states) || states.some((s) => typeof s !== 'string')) throw bad('guest.states', 'is not a list of base64 strings');
  const clock = obj(g.clock, 'guest.clock');
  if (typeof clock.ticks !== 'string' || !/^\d+$/.test(clock.ticks)) throw bad('guest.clock.ticks', 'is not a decimal integer');
  if (typeof clock.ticksPerMs !== 'number' || !(clock.ticksPerMs > 0)) throw bad('guest.clock.ticksPerMs', 'is not a positive number');
  const mem = obj(m.memory, 'memory');
  const file = str(mem.file, 'memory.file');
  if (file.includes('/') || file === '' || file === '.' || file === '..') throw bad('memory.file', `(${JSON.stringify(file)}) is not a file name in the snapshot's directory`);
  const unit = int(mem.unit, 'memory.unit', 4096);
  if ((unit & (unit - 1)) !== 0) throw bad('memory.unit', `(${unit}) is not a power of two`);
  const size = int(mem.size, 'memory.size', unit);
  if (size % unit !== 0) throw bad('memory.size', `(${size}) is not a multiple of the unit (${unit})`);
  const parsed: Manifest = {
    format: MANIFEST_FORMAT,
    version: m.version as number,
    createdAt: str(m.createdAt, 'createdAt'),
    guest: {
      backend,
      program: { name: str(program.name, 'guest.program.name'), codeBytes: int(program.codeBytes, 'guest.program.codeBytes') },
      shape: { source, size: int(shape.size, 'guest.shape.size', 1), vcpus: int(shape.vcpus, 'guest.shape.vcpus', 1), guestAddress: int(shape.guestAddress, 'guest.shape.guestAddress'), ...workloadOf(shape.workload) },
      stateBytes: int(g.stateBytes, 'guest.stateBytes', 1),
      states: states as string[],
      clock: { ticks: clock.ticks, ticksPerMs: clock.ticksPerMs },
    },
    memory: {
      file,
      size,
      unit,
      ...dataMapOf(m.version as number, mem),
      dataUnits: int(mem.dataUnits, 'memory.dataUnits'),
      regions: parseRegions(mem.regions, size),
    },
    checksum,
  };
  if (parsed.guest.shape.size !== size) throw bad('memory.size', `(${size}) is not the guest's memory (${parsed.guest.shape.size})`);
  if (parsed.guest.states.length !== parsed.guest.shape.vcpus) throw bad('guest.states', `holds ${parsed.guest.states.length} state(s) for ${parsed.guest.shape.vcpus} worker(s)`);
  return parsed;
}

function parseRegions(v: unknown, size: number): Region[] {
  if (!Array.isArray(v) || v.length === 0) throw bad('memory.regions', 'is not a non-empty list');
  let at = 0;
  return v.map((r, i) => {
    const o = obj(r, `memory.regions[${i}]`);
    const offset = int(o.offset, `memory.regions[${i}].offset`);
    const length = int(o.length, `memory.regions[${i}].length`, 1);
    const sha256 = str(o.sha256, `memory.regions[${i}].sha256`);
    if (offset !== at) throw bad(`memory.regions[${i}]`, `starts at ${offset}, not where the last ended (${at}): the regions must tile the file`);
    at = offset + length;
    if (at > size || (i === v.length - 1 && at !== size)) throw bad(`memory.regions[${i}]`, `ends at ${at}, the file is ${size} bytes`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw bad(`memory.regions[${i}].sha256`, 'is not a SHA-256 in hex');
    return { offset, length, sha256 };
  });
}

/** A BackingSourceName the manifest names (for the type checker: parseManifest checked it). */
export function sourceOf(m: Manifest): BackingSourceName {
  return m.guest.shape.source;
}
