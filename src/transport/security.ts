/**
 * How a connection is secured: not at all (loopback, or a network the user vouches for), TLS
 * 1.3 with certificates checked both ways, or TLS 1.3 with a pre-shared key. The connector
 * (Channel.connect) and the listener take one of these; nothing above them knows which.
 *
 * Pre-shared key: Node's `tls` hands OpenSSL's PSK callbacks, which OpenSSL 3 also uses for
 * TLS 1.3 external PSKs (RFC 8446 §2.2; the key bound to SHA-256, so the suite is
 * TLS_AES_128_GCM_SHA256). OpenSSL offers the psk_dhe_ke mode first: the handshake still
 * does an (EC)DHE exchange, so a key that leaks later does not decrypt recorded sessions
 * (forward secrecy), and both sides prove they hold the key before a byte of ours flows
 * (a wrong key fails the binder check: ERR_SSL_BINDER_DOES_NOT_VERIFY). TLS 1.2 PSK suites,
 * without forward secrecy, are not allowed: minVersion is TLSv1.3.
 */
import tls from 'node:tls';
import { InvalidArgumentError } from '../errors.js';

export type Security = PlainSecurity | CertificateSecurity | PskSecurity;

export interface PlainSecurity {
  readonly kind: 'plain';
}

export interface CertificateSecurity {
  readonly kind: 'certificate';
  /** This side's certificate chain, PEM. */
  readonly cert: Buffer;
  /** Its private key, PEM. */
  readonly key: Buffer;
  /** The authority that must have signed the peer's certificate, PEM (the system's roots are not used). */
  readonly ca: Buffer;
  /** The name the destination's certificate must carry (client side; default: the host connected to). */
  readonly peerName?: string;
}

export interface PskSecurity {
  readonly kind: 'psk';
  /** At least 32 bytes. */
  readonly key: Buffer;
  /** Sent in clear in the handshake: names the key, not a secret. */
  readonly identity: string;
}

export const PLAIN: PlainSecurity = { kind: 'plain' };
export const PSK_IDENTITY = 'postcopy';
export const MIN_PSK_BYTES = 32;

const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;
/** Bounds a handshake a peer leaves half done (Node's default is 120 s). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export function describeSecurity(s: Security): string {
  return s.kind === 'plain' ? 'none (plain TCP)' : s.kind === 'certificate' ? 'TLS 1.3, certificates checked both ways' : 'TLS 1.3, pre-shared key';
}

export function isSecured(s: Security): boolean {
  return s.kind !== 'plain';
}

function checkPsk(s: PskSecurity): void {
  if (s.key.length < MIN_PSK_BYTES) throw new InvalidArgumentError(`a pre-shared key of ${s.key.length} bytes is too short`, `use at least ${MIN_PSK_BYTES} random bytes, e.g. \`openssl rand -hex 32 > key.hex\``);
}

/** Options for tls.connect; undefined for plain TCP. */
export function clientTlsOptions(s: Security, host: string): tls.ConnectionOptions | undefined {
  switch (s.kind) {
    case 'plain':
      return undefined;
    case 'certificate':
      return { ...TLS13, cert: s.cert, key: s.key, ca: s.ca, servername: isIp(s.peerName ?? host) ? undefined : (s.peerName ?? host), rejectUnauthorized: true, ...(s.peerName ? { checkServerIdentity: checkNameOnly(s.peerName) } : {}) };
    case 'psk':
      checkPsk(s);
      // No certificate is involved: the key is the authentication.
      return { ...TLS13, pskCallback: () => ({ psk: s.key, identity: s.identity }), checkServerIdentity: () => undefined };
  }
}

/** Options for tls.createServer; undefined for plain TCP. */
export function serverTlsOptions(s: Security): tls.TlsOptions | undefined {
  switch (s.kind) {
    case 'plain':
      return undefined;
    case 'certificate':
      // requestCert without rejectUnauthorized: Node would drop a source whose certificate
      // fails without a word (TLS 1.3 checks it after the client thinks the handshake done).
      // The listener checks `authorized` itself and tells the source why before closing;
      // nothing the source sends is read first.
      return { ...TLS13, cert: s.cert, key: s.key, ca: s.ca, requestCert: true, rejectUnauthorized: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS };
    case 'psk':
      checkPsk(s);
      return { ...TLS13, pskCallback: (_socket: tls.TLSSocket, identity: string) => (identity === s.identity ? s.key : null), handshakeTimeout: HANDSHAKE_TIMEOUT_MS };
  }
}

const isIp = (h: string) => /^[\d.]+$/.test(h) || h.includes(':');

/** With --tls-name, the certificate must carry that name whatever address was dialled. */
function checkNameOnly(name: string): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_host, cert) => tls.checkServerIdentity(name, cert);
}
