/**
 * Real certificates for the TLS tests, made with the openssl command in a fresh directory:
 * an authority, a destination certificate for 127.0.0.1/localhost, a source certificate, one
 * that has expired, and one from another authority. Nothing is mocked: Node's tls checks them.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Certificates {
  readonly dir: string;
  /** Paths of PEM files. */
  readonly ca: string;
  readonly destination: { cert: string; key: string };
  readonly source: { cert: string; key: string };
  readonly expired: { cert: string; key: string };
  readonly otherCa: { cert: string; key: string };
  /** Two pre-shared key files (hex, 32 bytes), different keys. */
  readonly psk: string;
  readonly otherPsk: string;
  remove(): void;
}

/** Why the TLS tests cannot run here, or undefined. */
export function openssl(): string | undefined {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'no openssl command to make test certificates: apt-get install openssl';
  }
}

export function makeCertificates(): Certificates {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-tls-'));
  const at = (name: string) => join(dir, name);
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const authority = (name: string) => run('req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`);
  authority('ca');
  authority('other-ca');
  writeFileSync(at('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  const issue = (name: string, ca: string, days: string) => {
    run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-days', days, '-extfile', 'san.ext', '-out', `${name}.pem`);
    return { cert: at(`${name}.pem`), key: at(`${name}.key`) };
  };
  const destination = issue('destination', 'ca', '2');
  const source = issue('source', 'ca', '2');
  // -days 0: valid for no time at all, so expired by the time it is used.
  const expired = issue('expired', 'ca', '0');
  const otherCa = issue('stranger', 'other-ca', '2');
  writeFileSync(at('psk.hex'), `${'5a'.repeat(32)}\n`);
  writeFileSync(at('other-psk.hex'), `${'a5'.repeat(32)}\n`);
  return { dir, ca: at('ca.pem'), destination, source, expired, otherCa, psk: at('psk.hex'), otherPsk: at('other-psk.hex'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The flags for one side with a certificate pair. */
export const tlsFlags = (c: Certificates, pair: { cert: string; key: string }, ca = c.ca) => ['--tls-cert', pair.cert, '--tls-key', pair.key, '--tls-ca', ca];
