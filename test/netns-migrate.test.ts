/**
 * A migration between two hosts: source and destination in two network namespaces joined
 * by a veth pair whose rate tc limits to 1 Gbit/s, over TLS (a non-loopback listener needs
 * authentication), with the link lost for longer than --timeout in post-copy and brought
 * back (interfaces down: packets dropped, nothing reset). Skipped, with the reason, where
 * namespaces cannot be made.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import type { DestinationReport } from '../src/apps/migrate/destination/destination.js';
import type { SourceReport } from '../src/apps/migrate/source/source.js';
import { NetnsLink, netnsUnavailable } from '../bench/lib/netns-link.js';
import { postcopy } from './helpers/processes.js';

const NO_UFFD = existsSync('/dev/userfaultfd') || process.getuid?.() === 0 ? undefined : 'no userfaultfd access';
const SKIP = NO_UFFD ?? netnsUnavailable();
if (SKIP) console.log(`# skipping the two-namespace migration: ${SKIP}`);

describe('migrate between two network namespaces over a 1 Gbit/s link', { skip: SKIP }, () => {
  let link: NetnsLink;
  let dir: string;
  let key: string;
  before(() => {
    link = NetnsLink.create({ rateBitsPerSecond: 1e9 });
    dir = mkdtempSync(join(tmpdir(), 'postcopy-netns-'));
    key = join(dir, 'key.hex');
    writeFileSync(key, `${'c3'.repeat(32)}\n`);
  });
  after(() => {
    link?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('over TLS with a pre-shared key; the link lost in post-copy for longer than --timeout and back: completes, not one write lost', async () => {
    const common = ['--json', '--timeout', '3s', '--recover-timeout', '30s', '--guest', 'threads', '--psk-file', key];
    const dst = postcopy(['migrate', 'receive', '--listen', `${link.address('dst')}:0`, '--run-after', '200ms', ...common], ['ip', 'netns', 'exec', link.ns('dst')]);
    const port = Number((await dst.waitFor(/listening on [\d.]+:(\d+)/))[1]);
    const src = postcopy(['migrate', 'send', '--connect', `${link.address('dst')}:${port}`, '-s', 'shmem', '-b', '64M', '-v', '2', '--postcopy-now', '--bandwidth', '8M', '--warmup', '100ms', ...common], ['ip', 'netns', 'exec', link.ns('src')]);
    await dst.waitFor(/resumed: \d+ stale/);
    await sleep(200);
    link.down();
    await dst.waitFor(/post-copy paused: /, 15_000);
    await src.waitFor(/post-copy paused: /, 15_000);
    link.up();
    const [s, d] = await Promise.all([src.exited(), dst.exited()]);
    assert.equal(s, 0, `source exited ${s}:\n${src.stderr()}`);
    assert.equal(d, 0, `destination exited ${d}:\n${dst.stderr()}`);
    const source = JSON.parse(src.stdout()) as SourceReport;
    const destination = JSON.parse(dst.stdout()) as DestinationReport;
    assert.match(destination.security, /pre-shared key/);
    assert.equal(destination.oracle.checkedPages, destination.pages);
    assert.equal(destination.oracle.lostWrites, 0, 'not one write lost');
    assert.equal(destination.oracle.guestMismatches, 0);
    assert.ok(destination.recovery.pauses >= 1 && source.recovery.pauses >= 1, 'both sides paused and came back');
  });

  test('a plain listener on the namespace\'s address is refused without --insecure', async () => {
    const p = postcopy(['migrate', 'receive', '--listen', `${link.address('dst')}:0`, '--guest', 'threads'], ['ip', 'netns', 'exec', link.ns('dst')]);
    assert.equal(await p.exited(), 2);
    assert.match(p.stderr(), /without authentication/);
  });
});
