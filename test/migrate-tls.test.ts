/**
 * Migration over TLS 1.3, both ways of authenticating (certificates checked on both sides, a
 * pre-shared key), with real certificates made by openssl and real sockets. A peer with the
 * wrong key or certificate, or without TLS, is refused on both sides with a line that says
 * why, and the listener goes on to serve the right source. A destination listening beyond
 * loopback without authentication is refused unless --insecure.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { DestinationReport } from '../src/apps/migrate/destination/destination.js';
import type { SourceReport } from '../src/apps/migrate/source/source.js';
import { type Certificates, makeCertificates, openssl, tlsFlags } from './helpers/certificates.js';
import { type Child, postcopy } from './helpers/processes.js';

const NO_UFFD = process.getuid?.() === 0 || existsSync('/dev/userfaultfd') ? undefined : 'not root and no /dev/userfaultfd: run as root, or give this user access to /dev/userfaultfd';
const SKIP = NO_UFFD ?? openssl();
if (SKIP) console.log(`# skipping TLS migration tests: ${SKIP}`);

/** The threads guest runs on every machine with userfaultfd; what is tested here is the link. */
const GUEST = ['--guest', 'threads'];

async function receiver(security: string[]): Promise<{ child: Child; port: number }> {
  const child = postcopy(['migrate', 'receive', '--listen', '127.0.0.1:0', '--json', '--run-after', '200ms', '--timeout', '10s', ...GUEST, ...security]);
  const m = await child.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  return { child, port: Number(m[1]) };
}

const sender = (port: number, security: string[]) =>
  postcopy(['migrate', 'send', '--connect', `127.0.0.1:${port}`, '--json', '-b', '16M', '-v', '2', '--warmup', '100ms', '--timeout', '10s', ...GUEST, ...security]);

/** A migration that must complete: both exit 0, every page checked, nothing lost. */
async function completes(port: number, dst: Child, security: string[], expect: RegExp): Promise<void> {
  const src = sender(port, security);
  const [s, d] = await Promise.all([src.exited(), dst.exited()]);
  assert.equal(s, 0, `source exited ${s}:\n${src.stderr()}`);
  assert.equal(d, 0, `destination exited ${d}:\n${dst.stderr()}`);
  const source = JSON.parse(src.stdout()) as SourceReport;
  const destination = JSON.parse(dst.stdout()) as DestinationReport;
  assert.match(source.security, expect, 'the source says how the link was secured');
  assert.match(destination.security, expect, 'and so does the destination');
  assert.equal(destination.oracle.checkedPages, destination.pages, 'every page checked');
  assert.equal(destination.oracle.lostWrites, 0, 'not one write lost');
  assert.equal(destination.oracle.guestMismatches, 0);
}

/** A source that must be refused: exits non-zero with `sourceSays` and the destination logs `destinationSays`. */
async function refused(port: number, dst: Child, security: string[], sourceSays: RegExp, destinationSays: RegExp): Promise<void> {
  const before = dst.stderr().length;
  const src = sender(port, security);
  const code = await src.exited();
  assert.notEqual(code, 0, 'the source fails');
  const line = src.stderr().trim().split('\n').at(-1) ?? '';
  assert.match(line, sourceSays, `the source says why:\n${src.stderr()}`);
  assert.doesNotMatch(line, /at .*\.js:\d+/, 'one line, no stack');
  await dst.waitFor(new RegExp(`refused [^\\n]*${destinationSays.source}`), 10_000).catch(() => undefined);
  assert.match(dst.stderr().slice(before), new RegExp(`refused [^\\n]*${destinationSays.source}`), `the destination says why:\n${dst.stderr()}`);
}

describe('postcopy migrate over TLS', { skip: SKIP }, () => {
  let c: Certificates;
  before(() => (c = makeCertificates()));
  after(() => c?.remove());

  test('certificates: each side shows one from the authority and checks the other\'s; the migration completes, nothing lost', async () => {
    const { child, port } = await receiver(tlsFlags(c, c.destination));
    await completes(port, child, tlsFlags(c, c.source), /TLS 1\.3, certificates/);
  });

  test('a pre-shared key: the migration completes, nothing lost', async () => {
    const { child, port } = await receiver(['--psk-file', c.psk]);
    await completes(port, child, ['--psk-file', c.psk], /TLS 1\.3, pre-shared key/);
  });

  test('certificate listener: expired, unknown authority, wrong name and plaintext sources are refused on both sides; the listener then serves the right one', async () => {
    const { child, port } = await receiver(tlsFlags(c, c.destination));
    await refused(port, child, tlsFlags(c, c.expired), /certificate was refused: .*expired/, /expired \(CERT_HAS_EXPIRED\)/);
    await refused(port, child, tlsFlags(c, c.otherCa), /certificate was refused: .*not signed by --tls-ca/, /not signed by --tls-ca/);
    // The source checks the destination's name: this one is refused on the source's side, so the destination sees the handshake dropped.
    await refused(port, child, [...tlsFlags(c, c.source), '--tls-name', 'not-this-host.example'], /does not carry the name asked for/, /closed the connection during the TLS handshake/);
    await refused(port, child, [], /closed the connection without answering HELLO.*--psk-file or --tls-/, /does not speak TLS/);
    await completes(port, child, tlsFlags(c, c.source), /certificates/);
  });

  test('PSK listener: another key and a plaintext source are refused on both sides; the listener then serves the right one', async () => {
    const { child, port } = await receiver(['--psk-file', c.psk]);
    await refused(port, child, ['--psk-file', c.otherPsk], /another pre-shared key/, /holds another pre-shared key/);
    await refused(port, child, [], /without answering HELLO/, /does not speak TLS/);
    await completes(port, child, ['--psk-file', c.psk], /pre-shared key/);
  });

  test('a TLS source at a plain listener: refused on both sides, the listener goes on', async () => {
    const { child, port } = await receiver([]);
    await refused(port, child, ['--psk-file', c.psk], /TLS handshake/, /speaks TLS and this side does not/);
    await completes(port, child, [], /none \(plain TCP\)/);
  });

  test('receive beyond loopback without authentication is refused unless --insecure', async () => {
    const p = postcopy(['migrate', 'receive', '--listen', '0.0.0.0:0', ...GUEST]);
    assert.equal(await p.exited(), 2);
    assert.match(p.stderr(), /without authentication: .*--psk-file or --tls-cert.*--insecure/);
    const ok = postcopy(['migrate', 'receive', '--listen', '0.0.0.0:0', '--insecure', ...GUEST]);
    await ok.waitFor(/listening on 0\.0\.0\.0:\d+/);
    ok.process.kill();
    await ok.exited();
  });

  test('bad security flags are usage errors naming the flag', async () => {
    const short = `${c.dir}/short.hex`;
    writeFileSync(short, 'abcd\n');
    const notHex = `${c.dir}/not-hex.hex`;
    writeFileSync(notHex, 'this is not a key\n');
    const cases: [string[], RegExp][] = [
      [['--psk-file', short], /holds 2 bytes; a key needs at least 32/],
      [['--psk-file', notHex], /not a key written in hex/],
      [['--psk-file', `${c.dir}/absent.hex`], /--psk-file .*: no such file/],
      [['--tls-cert', c.source.cert], /needs --tls-cert, --tls-key and --tls-ca together; missing --tls-key, --tls-ca/],
      [['--psk-file', c.psk, ...tlsFlags(c, c.source)], /give one/],
    ];
    for (const [flags, message] of cases) {
      const p = postcopy(['migrate', 'send', '--connect', '127.0.0.1:9', ...flags]);
      assert.equal(await p.exited(), 2, `${flags.join(' ')}: ${p.stderr()}`);
      assert.match(p.stderr(), message);
    }
  });
});
