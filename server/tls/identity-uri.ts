/**
 * Identity URIs: the one URI SAN of every client certificate the cluster CA signs names its
 * holder, `citadel://worker/<id>` or `citadel://service/<user id>`. The server chooses it, never
 * the requester (docs/workers.md).
 */

/** Whom a client certificate names: a worker host, or a service acting as a user. */
export type CertKind = 'worker' | 'service';

/** The URI SAN naming a certificate's holder. */
export function identityUri(kind: CertKind, subject: string): string {
  return `citadel://${kind}/${subject}`;
}

/** Splits a `citadel://worker/<id>` or `citadel://service/<id>` URI. */
export function parseIdentityUri(uri: string): { kind: CertKind; subject: string } | undefined {
  const m = /^citadel:\/\/(worker|service)\/([A-Za-z0-9._@-]{1,63})$/.exec(uri);
  return m ? { kind: m[1] as CertKind, subject: m[2]! } : undefined;
}
