/**
 * The client certificate of a call, as Node's TLS layer verified it against the cluster CA.
 * grpc-js exposes a peer certificate only when the handshake authorised it (the chain verifies),
 * so a certificate from another CA never reaches here.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context.js';
import { parseIdentityUri, type CertKind } from './identity-uri.js';

/** A verified client certificate naming a Citadel identity. */
export interface PeerCertificate {
  kind: CertKind;
  /** Worker id or user id from the URI SAN. */
  subject: string;
  /** Lowercase hex. */
  serial: string;
  publicKey: KeyObject;
  /** When the certificate expires (ms). */
  notAfter: number;
}

/** What the peer presented: nothing, a Citadel identity, or a CA-signed certificate naming none. */
export type PeerIdentity =
  { kind: 'none' } | { kind: 'unrecognised' } | ({ kind: CertKind } & PeerCertificate);

/** The identity in a call's verified client certificate. */
export function peerIdentity(call: { getAuthContext(): AuthContext | null }): PeerIdentity {
  const cert = call.getAuthContext()?.sslPeerCertificate;
  if (!cert?.raw) return { kind: 'none' };
  const uris = (cert.subjectaltname ?? '')
    .split(', ')
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice(4));
  const identity = uris.length === 1 ? parseIdentityUri(uris[0]!) : undefined;
  if (!identity) return { kind: 'unrecognised' };
  return {
    ...identity,
    serial: cert.serialNumber.toLowerCase(),
    publicKey: new X509Certificate(cert.raw).publicKey,
    notAfter: Date.parse(cert.valid_to),
  };
}

/** `ipv4:1.2.3.4:5678` or `ipv6:[::1]:5678` -> the address alone. */
export function peerAddress(peer: string): string {
  const m = /^(?:ipv4:|ipv6:)?\[?([^\]]+?)\]?:\d+$/.exec(peer);
  return m ? m[1]! : peer;
}
