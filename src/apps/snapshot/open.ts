/**
 * Opening a saved snapshot for a restore, and every refusal that comes before a guest is
 * built: no such directory or file, a state file that is not one (manifest.ts: format,
 * version, its own checksum), a memory file of the wrong size (truncated), a layout this
 * build cannot run (another guest program, a state size, a unit that is not the
 * source's page size, a shape that does not split), and, with verification, a region
 * whose bytes are not the ones saved.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { THREADS_STATE_BYTES } from '../../guest/threads/layout.js';
import { VCPU_STATE_BYTES } from '../../guest/kvm/kvm-guest.js';
import { programOf } from '../../guest/open.js';
import { checkShape } from '../../guest/shape.js';
import { BACKING_INFO } from '../../memory/backing.js';
import { MapFlag, Prot } from '../../memory/constants.js';
import { Mapping } from '../../memory/mapping.js';
import { SnapshotInvalidError } from './errors.js';
import { CONSUMED_FILE, MANIFEST_FILE, type Manifest, parseManifest } from './manifest.js';
import { UnitMap } from './unit-map.js';

/** Where the memory file lives: MINOR restores need its pages in a page cache of shared memory. */
export type FileSystemKind = 'tmpfs' | 'hugetlbfs' | 'other';
const TMPFS_MAGIC = 0x01021994;
const HUGETLBFS_MAGIC = 0x958458f6;

/** The kind of file system `path` (or its nearest existing ancestor) is on. */
export function fileSystemOf(path: string): FileSystemKind {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  const type = statfsSync(p).type;
  return type === TMPFS_MAGIC ? 'tmpfs' : type === HUGETLBFS_MAGIC ? 'hugetlbfs' : 'other';
}

export interface OpenSnapshot {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly path: string;
  readonly fd: number;
  readonly fs: FileSystemKind;
  /** Which units hold data (over a SharedArrayBuffer: the page server reads it). */
  readonly data: UnitMap;
  readonly units: number;
  /** The memory file mapped read-only (private): what UFFDIO_COPY copies from. */
  readonly file: Mapping;
  close(): void;
}

const invalid = (code: string, detail: string, remedy?: string) => new SnapshotInvalidError(code, detail, remedy);

/** Opens DIR and checks everything that can be checked without reading the memory. */
export function openSnapshot(dir: string): OpenSnapshot {
  const manifestPath = join(dir, MANIFEST_FILE);
  if (!existsSync(manifestPath)) throw invalid('ERR_SNAPSHOT_MISSING', `${dir} holds no snapshot (no ${MANIFEST_FILE})`, 'Make one with `postcopy snapshot save --out DIR`');
  const consumed = join(dir, CONSUMED_FILE);
  if (existsSync(consumed)) {
    let by = '';
    try {
      const c = JSON.parse(readFileSync(consumed, 'utf8')) as { pid?: number; at?: string };
      by = ` (pid ${c.pid}, ${c.at})`;
    } catch {
      // The marker's presence is what counts; its text only says who.
    }
    throw invalid('ERR_SNAPSHOT_CONSUMED', `${dir} was restored with -u MINOR --consume${by}: the guest wrote into its memory file, which no longer holds what was saved`, 'Save the guest again; to keep a snapshot for several restores, restore with -u MISSING');
  }
  const manifest = parseManifest(readFileSync(manifestPath, 'utf8'));
  checkLayout(manifest);
  const m = manifest.memory;
  const units = m.size / m.unit;
  const data = readDataMap(dir, m, units);
  if (data.count() !== m.dataUnits) throw invalid('ERR_SNAPSHOT_STATE', `the state file's data map marks ${data.count()} units, it says ${m.dataUnits}`);
  const path = join(dir, m.file);
  if (!existsSync(path)) throw invalid('ERR_SNAPSHOT_MISSING', `the memory file ${path} is missing`);
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    if (st.size < m.size) throw invalid('ERR_SNAPSHOT_TRUNCATED', `the memory file is truncated: ${st.size} bytes of ${m.size}`);
    if (st.size > m.size) throw invalid('ERR_SNAPSHOT_TRUNCATED', `the memory file is ${st.size} bytes, the snapshot's memory ${m.size}: not this snapshot's file`);
    const fs = fileSystemOf(path);
    const file = Mapping.map(m.size, { prot: Prot.READ, flags: MapFlag.PRIVATE, fd });
    let closed = false;
    return {
      dir,
      manifest,
      path,
      fd,
      fs,
      data,
      units,
      file,
      close() {
        if (closed) return;
        closed = true;
        file.unmap();
        closeSync(fd);
      },
    };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** The data map (over a SharedArrayBuffer): base64 in the state file (versions 1–2), or its own file checked against the state file's SHA-256 (3). */
function readDataMap(dir: string, m: Manifest['memory'], units: number): UnitMap {
  const data = UnitMap.shared(units);
  const bytes = Math.ceil(units / 8);
  if (m.dataMapFile) {
    const path = join(dir, m.dataMapFile.name);
    if (!existsSync(path)) throw invalid('ERR_SNAPSHOT_MISSING', `the data map ${path} is missing`, 'Save the snapshot again');
    const bits = readFileSync(path);
    if (bits.byteLength !== bytes) throw invalid('ERR_SNAPSHOT_TRUNCATED', `the data map ${path} is ${bits.byteLength} bytes, not ${bytes} (one bit per ${m.unit}-byte unit)`);
    if (createHash('sha256').update(bits).digest('hex') !== m.dataMapFile.sha256) throw invalid('ERR_SNAPSHOT_CORRUPT', `the data map ${path} does not match its checksum: it was changed or damaged after it was saved`, 'Save the snapshot again');
    data.bits.set(bits);
    return data;
  }
  const parsed = UnitMap.fromBase64(units, m.dataMap ?? '');
  if (!parsed) throw invalid('ERR_SNAPSHOT_STATE', `the state file's data map is not base64 of ${bytes} bytes (one bit per ${m.unit}-byte unit)`);
  data.bits.set(parsed.bits);
  return data;
}

/** What this build can restore: the same program and state layout, a unit that is the source's page, a shape that splits. */
function checkLayout(m: Manifest): void {
  const g = m.guest;
  const program = programOf(g.backend);
  if (g.program.name !== program.name || g.program.codeBytes !== program.codeBytes) {
    throw invalid('ERR_SNAPSHOT_LAYOUT', `the snapshot's ${g.backend} guest runs program '${g.program.name}' (${g.program.codeBytes} bytes), this postcopy runs '${program.name}' (${program.codeBytes})`, 'Restore it with the postcopy version that saved it');
  }
  const stateBytes = g.backend === 'kvm' ? VCPU_STATE_BYTES : THREADS_STATE_BYTES;
  if (g.stateBytes !== stateBytes) throw invalid('ERR_SNAPSHOT_LAYOUT', `the snapshot's ${g.backend} guest saved ${g.stateBytes} bytes of state per worker, this build's ${stateBytes}`);
  g.states.forEach((s, i) => {
    if (Buffer.from(s, 'base64').byteLength !== stateBytes) throw invalid('ERR_SNAPSHOT_LAYOUT', `worker ${i}'s state is not ${stateBytes} bytes`);
  });
  const pageSize = BACKING_INFO[g.shape.source].pageSize;
  if (m.memory.unit !== pageSize) throw invalid('ERR_SNAPSHOT_LAYOUT', `the memory was saved in ${m.memory.unit}-byte units, ${g.shape.source}'s page is ${pageSize}`);
  m.memory.regions.forEach((r, i) => {
    if (r.offset % m.memory.unit !== 0 || r.length % m.memory.unit !== 0) throw invalid('ERR_SNAPSHOT_LAYOUT', `region ${i} [${r.offset}, ${r.offset + r.length}) is not whole ${m.memory.unit}-byte units`);
  });
  try {
    checkShape(g.shape, m.memory.unit);
  } catch (e) {
    throw invalid('ERR_SNAPSHOT_LAYOUT', `the snapshot's layout does not fit: ${(e as Error).message}`);
  }
}

/**
 * Reads every data unit of the memory file and checks each region's SHA-256 (this also
 * brings the file into the page cache). Throws naming the first region that differs.
 */
export function verifySnapshot(s: OpenSnapshot): { ms: number; bytes: number } {
  const t0 = performance.now();
  const { unit } = s.manifest.memory;
  const view = s.file.bytes();
  let bytes = 0;
  {
    for (const [i, r] of s.manifest.memory.regions.entries()) {
      const hash = createHash('sha256');
      s.data.runs(true, (first, count) => {
        hash.update(view.subarray(first * unit, (first + count) * unit));
        bytes += count * unit;
      }, Math.floor(r.offset / unit), Math.ceil((r.offset + r.length) / unit));
      if (hash.digest('hex') !== r.sha256) {
        throw invalid('ERR_SNAPSHOT_CORRUPT', `the memory file is corrupt: region ${i} [${r.offset}, ${r.offset + r.length}) does not match its checksum`, 'Save the snapshot again');
      }
    }
  }
  return { ms: performance.now() - t0, bytes };
}
