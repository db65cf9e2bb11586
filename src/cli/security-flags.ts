/**
 * The migration's security flags: --tls-cert/--tls-key/--tls-ca[/--tls-name] (TLS 1.3,
 * certificates checked both ways), --psk-file (TLS 1.3 with a pre-shared key, hex), or
 * neither (plain TCP, which `receive` allows only on loopback unless --insecure). Files are
 * read and checked here, so a wrong path or a short key is a usage error naming the flag.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { MIN_PSK_BYTES, PLAIN, PSK_IDENTITY, type Security } from '../transport/security.js';
import { UsageError } from './command.js';

export const SECURITY_OPTIONS = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-name': { type: 'string' },
  'psk-file': { type: 'string' },
  insecure: { type: 'boolean' },
} as const;

export interface SecurityValues {
  'tls-cert'?: string | undefined;
  'tls-key'?: string | undefined;
  'tls-ca'?: string | undefined;
  'tls-name'?: string | undefined;
  'psk-file'?: string | undefined;
  insecure?: boolean | undefined;
}

export const SECURITY_HELP: readonly [string, string][] = [
  ['--tls-cert FILE --tls-key FILE --tls-ca FILE', 'TLS 1.3 on both connections; each side shows its certificate and checks the other\'s against the CA'],
  ['--tls-name NAME', 'send: the name the destination\'s certificate must carry (default: the host connected to)'],
  ['--psk-file FILE', `TLS 1.3 with a pre-shared key instead: the file holds ≥ ${MIN_PSK_BYTES} bytes in hex (\`openssl rand -hex 32\`)`],
  ['--insecure', 'receive: allow plain TCP on an address other than loopback'],
];

function read(flag: string, path: string, usage: (m: string) => UsageError): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw usage(`--${flag} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}

/** The PSK file's key: hex digits (whitespace and a final newline allowed), at least MIN_PSK_BYTES. */
export function parsePskFile(text: string): Buffer | string {
  const hex = text.replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) return 'is not a key written in hex (e.g. made by `openssl rand -hex 32 > key.hex`)';
  const key = Buffer.from(hex, 'hex');
  if (key.length < MIN_PSK_BYTES) return `holds ${key.length} bytes; a key needs at least ${MIN_PSK_BYTES} (\`openssl rand -hex 32\`)`;
  return key;
}

export function parseSecurity(v: SecurityValues, usage: (m: string) => UsageError): Security {
  const tls = (['tls-cert', 'tls-key', 'tls-ca'] as const).filter((f) => v[f] !== undefined);
  const psk = v['psk-file'];
  if (psk !== undefined && (tls.length > 0 || v['tls-name'] !== undefined)) throw usage('--psk-file and --tls-* are two ways to secure the link: give one');
  if (psk !== undefined) {
    const key = parsePskFile(read('psk-file', psk, usage).toString('utf8'));
    if (typeof key === 'string') throw usage(`--psk-file ${psk} ${key}`);
    return { kind: 'psk', key, identity: PSK_IDENTITY };
  }
  if (tls.length > 0 && tls.length < 3) {
    const missing = (['tls-cert', 'tls-key', 'tls-ca'] as const).filter((f) => v[f] === undefined).map((f) => `--${f}`);
    throw usage(`TLS needs --tls-cert, --tls-key and --tls-ca together; missing ${missing.join(', ')}`);
  }
  if (tls.length === 3) {
    const name = v['tls-name'];
    return {
      kind: 'certificate',
      cert: read('tls-cert', v['tls-cert']!, usage),
      key: read('tls-key', v['tls-key']!, usage),
      ca: read('tls-ca', v['tls-ca']!, usage),
      ...(name !== undefined ? { peerName: name } : {}),
    };
  }
  if (v['tls-name'] !== undefined) throw usage('--tls-name goes with --tls-cert, --tls-key and --tls-ca');
  return PLAIN;
}

/** Loopback only: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** The flags again, for a child process that must use the same security (the demo's destination). */
export function securityArgs(v: SecurityValues): string[] {
  const out: string[] = [];
  for (const f of ['tls-cert', 'tls-key', 'tls-ca', 'psk-file'] as const) if (v[f] !== undefined) out.push(`--${f}`, v[f]!);
  return out;
}
