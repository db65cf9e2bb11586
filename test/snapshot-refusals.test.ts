/**
 * A snapshot that cannot be trusted or run is refused before any guest runs, with its
 * reason on one line and exit 3: no snapshot, a truncated memory file, a byte changed in
 * memory (region checksums) or in the state (its own checksum), another format version, a
 * layout this build cannot run, a damaged working-set record; and usage errors exit 2.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, openSync, writeSync, closeSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { main } from '../src/cli/run.js';
import { sealManifest, type Manifest } from '../src/apps/snapshot/manifest.js';
import { UnitMap } from '../src/apps/snapshot/unit-map.js';

const root = mkdtempSync(join(tmpdir(), 'postcopy-test-refusals-'));
const good = join(root, 'good');
after(() => rmSync(root, { recursive: true, force: true }));

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

/** A copy of the good snapshot, changed by `edit`. */
function variant(name: string, edit: (dir: string) => void): string {
  const dir = join(root, name);
  mkdirSync(dir);
  copyFileSync(join(good, 'snapshot.json'), join(dir, 'snapshot.json'));
  copyFileSync(join(good, 'memory'), join(dir, 'memory'));
  copyFileSync(join(good, 'datamap'), join(dir, 'datamap'));
  edit(dir);
  return dir;
}
const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'snapshot.json'), 'utf8')) as Manifest;
function reseal(dir: string, change: (m: Record<string, any>) => void): void {
  const { checksum: _, ...body } = manifestOf(dir) as unknown as Record<string, any>;
  change(body);
  writeFileSync(join(dir, 'snapshot.json'), JSON.stringify(sealManifest(body as Manifest)));
}

async function refused(dir: string, pattern: RegExp): Promise<void> {
  const r = await run(['snapshot', 'restore', dir, '-u', 'MISSING']);
  assert.equal(r.code, 3, `exit 3, got ${r.code}: ${r.err}`);
  assert.match(r.err, pattern);
  assert.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
  assert.match(r.err, /^postcopy: /);
  assert.equal(r.out, '', 'nothing on stdout: no guest ran');
}

describe('snapshot refusals', () => {
  before(async () => {
    const r = await run(['snapshot', 'save', '--out', good, '--guest', 'threads', '-b', '4M', '--run', '50ms', '--json']);
    assert.equal(r.code, 0, r.err);
  });

  test('the good snapshot restores (the variants below differ from it in one thing)', async () => {
    const r = await run(['snapshot', 'restore', good, '--json']);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).oracle.lostWrites, 0);
  });

  test('no snapshot in the directory', () => refused(root, /holds no snapshot/));

  test('a truncated memory file', () => refused(variant('truncated', (d) => truncateSync(join(d, 'memory'), 4096)), /truncated: 4096 bytes of/));

  test('a byte changed in a data page: its region does not match its checksum', async () => {
    const m = manifestOf(good);
    const data = new UnitMap(m.memory.size / m.memory.unit, readFileSync(join(good, m.memory.dataMapFile!.name)));
    let unit = -1;
    data.runs(true, (first) => (unit = unit < 0 ? first : unit));
    assert.ok(unit >= 0, 'the guest wrote something');
    const dir = variant('corrupt', (d) => {
      const fd = openSync(join(d, 'memory'), 'r+');
      writeSync(fd, Buffer.from([0xee]), 0, 1, unit * m.memory.unit + 100);
      closeSync(fd);
    });
    await refused(dir, /memory file is corrupt: region 0/);
    // --no-verify skips the regions, not the state file's own checks.
    const r = await run(['snapshot', 'restore', variant('truncated-no-verify', (d) => truncateSync(join(d, 'memory'), 0)), '--no-verify']);
    assert.equal(r.code, 3);
  });

  test('the data map changed, cut short or gone (format 3 keeps it in a file of its own)', async () => {
    await refused(variant('datamap-changed', (d) => {
      const bits = readFileSync(join(d, 'datamap'));
      bits[0] = bits[0]! ^ 0x01;
      writeFileSync(join(d, 'datamap'), bits);
    }), /data map .* does not match its checksum/);
    await refused(variant('datamap-short', (d) => truncateSync(join(d, 'datamap'), 3)), /data map .* is 3 bytes, not/);
    await refused(variant('datamap-gone', (d) => rmSync(join(d, 'datamap'))), /data map .* is missing/);
  });

  test('a format 2 snapshot (the data map as base64 in the state file) still restores', async () => {
    const dir = variant('format-2', (d) => {
      const bits = readFileSync(join(d, 'datamap'));
      reseal(d, (m) => {
        m.version = 2;
        m.memory.dataMap = bits.toString('base64');
        delete m.memory.dataMapFile;
      });
      rmSync(join(d, 'datamap'));
    });
    const r = await run(['snapshot', 'restore', dir, '--json']);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).oracle.lostWrites, 0);
  });

  test('the state file edited without its checksum', () =>
    refused(variant('edited', (d) => writeFileSync(join(d, 'snapshot.json'), readFileSync(join(d, 'snapshot.json'), 'utf8').replace('"vcpus": 2', '"vcpus": 1'))), /does not match its own checksum/));

  test('another format version', () => refused(variant('version', (d) => reseal(d, (m) => (m.version = 99))), /format version 99, this postcopy reads versions 1, 2, 3/));

  test('not JSON (a truncated state file)', () => refused(variant('json', (d) => truncateSync(join(d, 'snapshot.json'), 40)), /not JSON/));

  test('a layout this build cannot run: another program, a unit that is not the page size, states of another size, a shape that does not split', async () => {
    await refused(variant('program', (d) => reseal(d, (m) => (m.guest.program.name = 'other/9'))), /runs program 'other\/9'/);
    await refused(variant('unit', (d) => reseal(d, (m) => (m.memory.unit = 8192))), /8192-byte units|not a multiple|data map/);
    await refused(variant('states', (d) => reseal(d, (m) => (m.guest.states = m.guest.states.map(() => Buffer.alloc(8).toString('base64'))))), /state is not 64 bytes/);
    await refused(variant('shape', (d) => reseal(d, (m) => (m.guest.shape.vcpus = 3, m.guest.states = [...m.guest.states, m.guest.states[0]]))), /does not split into 3 slices/);
    await refused(variant('backend', (d) => reseal(d, (m) => (m.guest.backend = 'qemu'))), /guest.backend/);
  });

  test('a damaged or foreign working-set record', async () => {
    const ws = join(root, 'ws.json');
    const rec = await run(['snapshot', 'restore', good, '--record', ws, '--json']);
    assert.equal(rec.code, 0, rec.err);
    const text = readFileSync(ws, 'utf8');
    writeFileSync(ws, text.replace('"runs":1', '"runs":0'));
    await refusedWith(['snapshot', 'restore', good, '--prefetch', ws], /counts outside/);
    writeFileSync(ws, text.replace(/"size":\d+/, '"size":8192'));
    await refusedWith(['snapshot', 'restore', good, '--prefetch', ws], /recorded on 8192 bytes/);
    await refusedWith(['snapshot', 'restore', good, '--prefetch', join(root, 'nope.json')], /does not exist/);
  });

  test('usage errors exit 2', async () => {
    for (const args of [['snapshot'], ['snapshot', 'save'], ['snapshot', 'restore'], ['snapshot', 'restore', good, '--eager', '--background'], ['snapshot', 'restore', good, '-u', 'SIDEWAYS'], ['snapshot', 'restore', good, '-u', 'MINOR', '-s', 'anonymous']]) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    }
  });

  test('MINOR needs the file in shared memory', async () => {
    await refusedWith(['snapshot', 'restore', good, '-u', 'MINOR'], /needs its memory file in shared memory/);
  });
});

async function refusedWith(args: string[], pattern: RegExp): Promise<void> {
  const r = await run(args);
  assert.equal(r.code, 3, `${args.join(' ')}: exit ${r.code}: ${r.err}`);
  assert.match(r.err, pattern);
}
