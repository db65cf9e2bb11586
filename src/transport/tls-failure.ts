/**
 * What a failed TLS handshake means, in words a person can act on. OpenSSL's codes say
 * what broke on the wire; these say which side holds the wrong thing.
 */
import { errnoOf } from './errors.js';

const REASONS: Record<string, string> = {
  // Pre-shared key.
  ERR_SSL_BINDER_DOES_NOT_VERIFY: 'the peer holds another pre-shared key',
  ERR_SSL_SSLV3_ALERT_ILLEGAL_PARAMETER: 'the peer rejected the handshake (another pre-shared key, or another TLS mode)',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_PSK_IDENTITY: 'the peer does not know this pre-shared key',
  ERR_SSL_NO_SHARED_CIPHER: 'no TLS mode in common (one side uses a pre-shared key, the other certificates?)',
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: 'the peer rejected the handshake (one side uses a pre-shared key, the other certificates?)',
  // Certificates.
  CERT_HAS_EXPIRED: 'the peer\'s certificate has expired',
  CERT_NOT_YET_VALID: 'the peer\'s certificate is not valid yet (check both clocks)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the peer\'s certificate is not signed by --tls-ca',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the peer\'s certificate is not signed by --tls-ca',
  SELF_SIGNED_CERT_IN_CHAIN: 'the peer\'s certificate is not signed by --tls-ca',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the peer\'s certificate is self-signed, not signed by --tls-ca',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the peer\'s certificate does not carry the name asked for (--tls-name)',
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: 'the peer sent no certificate',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'the peer wants a certificate from this side',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'the peer rejected this side\'s certificate',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'the peer does not trust this side\'s certificate (another --tls-ca)',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: 'the peer says this side\'s certificate has expired',
  ERR_SSL_CERTIFICATE_VERIFY_FAILED: 'a certificate did not verify',
  // Not TLS at all.
  ERR_SSL_WRONG_VERSION_NUMBER: 'the peer does not speak TLS',
  ERR_SSL_PACKET_LENGTH_TOO_LONG: 'the peer does not speak TLS',
  ERR_SSL_HTTP_REQUEST: 'the peer does not speak TLS',
  ECONNRESET: 'the peer closed the connection during the TLS handshake (it rejected this side, or does not speak TLS)',
  EPIPE: 'the peer closed the connection during the TLS handshake (it rejected this side, or does not speak TLS)',
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: 'the peer speaks an older TLS than 1.3',
  ERR_SSL_UNSUPPORTED_PROTOCOL: 'the peer speaks an older TLS than 1.3',
};

export const TLS_REMEDY = 'Start both sides with the same security: --tls-cert/--tls-key/--tls-ca from one authority, or --psk-file with the same key';

/** A handshake error's meaning, with OpenSSL's code in brackets. */
export function tlsFailureReason(e: unknown): string {
  const code = errnoOf(e);
  const reason = code ? REASONS[code] : undefined;
  if (reason) return `${reason} (${code})`;
  if ((e as Error | undefined)?.message?.includes('socket disconnected before secure TLS connection')) {
    return 'the peer closed the connection during the TLS handshake (it rejected this side, or does not speak TLS)';
  }
  return `TLS handshake failed: ${(e as Error)?.message?.split('\n')[0] ?? String(e)}`;
}

/** The first bytes of a TLS ClientHello (a handshake record, version 3.x): a TLS peer on a plain connection. */
export function looksLikeTls(first: Uint8Array): boolean {
  return first.length >= 2 && first[0] === 0x16 && first[1] === 0x03;
}
