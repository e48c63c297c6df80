/**
 * gRPC server credentials for the two ports (docs/workers.md, "Two ports"). Both serve the
 * same certificate with the CA appended to the chain, so a joining agent can pin the CA by hash.
 * The public API asks for a client certificate but does not require one (service identities);
 * the worker endpoint requires one that chains to the cluster CA.
 */
import {
  ServerCredentials,
  experimental,
  type ServerCredentials as Credentials,
} from '@grpc/grpc-js';
import type { IssuedCert } from './ca.js';

/**
 * A certificate provider that never changes: the CA and the serving key pair. It answers a new
 * listener on the next tick: grpc-js registers its own watcher only after subscribing, so a
 * synchronous answer would be lost and every handshake dropped.
 */
class StaticProvider implements experimental.CertificateProvider {
  constructor(
    private readonly ca: Buffer,
    private readonly identity: { certificate: Buffer; privateKey: Buffer },
  ) {}
  addCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    setImmediate(() => listener({ caCertificate: this.ca }));
  }
  removeCaCertificateListener(): void {}
  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    setImmediate(() => listener(this.identity));
  }
  removeIdentityCertificateListener(): void {}
}

function chain(serving: IssuedCert, caPem: string): Buffer {
  return Buffer.from(serving.certPem + caPem);
}

/** The public API: TLS, with an optional client certificate checked against the cluster CA. */
export function publicApiCredentials(serving: IssuedCert, caPem: string): Credentials {
  const provider = new StaticProvider(Buffer.from(caPem), {
    certificate: chain(serving, caPem),
    privateKey: Buffer.from(serving.keyPem),
  });
  // grpc-js passes its first argument as the identity provider and its second as the CA's
  // (whatever the parameter names say); one provider serving both makes the order moot.
  return experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

/** The worker endpoint: mutual TLS, a client certificate from the cluster CA required. */
export function workerEndpointCredentials(serving: IssuedCert, caPem: string): Credentials {
  return ServerCredentials.createSsl(
    Buffer.from(caPem),
    [{ private_key: Buffer.from(serving.keyPem), cert_chain: chain(serving, caPem) }],
    true,
  );
}
