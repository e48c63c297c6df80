/**
 * Pinning the cluster CA at join: a TLS handshake that trusts nothing, the self-signed CA
 * certificate the server appends to its chain, and its SHA-256 compared with the hash the
 * operator gave. Nothing but the TLS handshake is sent before the hash matches.
 */
import { X509Certificate, createHash } from 'node:crypto';
import * as tls from 'node:tls';

import { InvalidArgumentError, UnauthenticatedError, UnavailableError } from '../common/errors.js';
import { pemFile } from './keys.js';
import { type ServerAddress, formatServerAddress, isIpHost } from './server-address.js';

const CA_HASH_PATTERN = /^sha256:([0-9a-fA-F]{64})$/;

/** The CA certificate a server presented, once its hash matched the expected one. */
export interface PinnedCa {
  /** The CA certificate, PEM. */
  readonly pem: string;
  /** `sha256:<lowercase hex>` of its DER encoding. */
  readonly hash: string;
}

/**
 * Normalizes a `--ca-hash` value to `sha256:<lowercase hex>`.
 *
 * @throws InvalidArgumentError naming `field` unless it is `sha256:` and 64 hex digits.
 */
export function parseCaHash(text: string, field: string): string {
  const match = CA_HASH_PATTERN.exec(text.trim());
  if (match === null) {
    throw new InvalidArgumentError(
      field,
      'must be "sha256:" followed by 64 hex digits (citadelctl prints it with the join token)',
    );
  }
  return `sha256:${match[1]!.toLowerCase()}`;
}

/** `sha256:<lowercase hex>` of a certificate's DER encoding. */
export function caHash(der: Uint8Array): string {
  return `sha256:${createHash('sha256').update(der).digest('hex')}`;
}

/**
 * Finds the self-signed certificate in a chain as `tls.TLSSocket.getPeerCertificate(true)`
 * returns it (each certificate links to the next by `issuerCertificate`). Returns its DER, or
 * undefined when the chain ends without a self-signed certificate.
 */
export function findSelfSignedInChain(leaf: tls.DetailedPeerCertificate): Buffer | undefined {
  const seen = new Set<string>();
  let current: tls.DetailedPeerCertificate | undefined = leaf;
  while (current?.raw !== undefined && !seen.has(current.fingerprint256)) {
    seen.add(current.fingerprint256);
    const cert = new X509Certificate(current.raw);
    if (cert.checkIssued(cert) && cert.verify(cert.publicKey)) return current.raw;
    // Node links a chain's last certificate to itself; `seen` ends that loop.
    current = current.issuerCertificate; // may be undefined at runtime, whatever the types say
  }
  return undefined;
}

/**
 * Connects to `address`, takes the CA certificate from the served chain and checks it against
 * `expectedHash` (already normalized by {@link parseCaHash}).
 *
 * @throws UnavailableError when the server cannot be reached or the handshake fails.
 * @throws UnauthenticatedError "CA hash mismatch: expected X, server presented Y" on a
 *   mismatch, or when the server presents no self-signed CA certificate.
 */
export async function fetchPinnedCa(
  address: ServerAddress,
  expectedHash: string,
  timeoutMs = 15_000,
): Promise<PinnedCa> {
  const chainLeaf = await peerChain(address, timeoutMs);
  const caDer = findSelfSignedInChain(chainLeaf);
  const where = formatServerAddress(address);
  if (caDer === undefined) {
    throw new UnauthenticatedError(
      `the server at ${where} did not present a self-signed CA certificate in its chain`,
    );
  }
  const presented = caHash(caDer);
  if (presented !== expectedHash.toLowerCase()) {
    throw new UnauthenticatedError(
      `CA hash mismatch: expected ${expectedHash}, server presented ${presented}`,
    );
  }
  return { pem: pemFile(new X509Certificate(caDer).toString()), hash: presented };
}

/** Completes one TLS handshake trusting nothing and returns the peer's chain; sends no data. */
function peerChain(
  address: ServerAddress,
  timeoutMs: number,
): Promise<tls.DetailedPeerCertificate> {
  const where = formatServerAddress(address);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: address.host,
      port: address.port,
      // An IP literal is not a valid SNI name (and Node warns about it).
      ...(isIpHost(address.host) ? {} : { servername: address.host }),
      // Trust is established by the hash below, not by any CA store.
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
      timeout: timeoutMs,
    });
    const fail = (reason: string, cause?: unknown) => {
      socket.destroy();
      reject(new UnavailableError(`cannot reach ${where}: ${reason}`, { cause }));
    };
    socket.once('secureConnect', () => {
      const leaf = socket.getPeerCertificate(true);
      socket.destroy();
      if (leaf.raw === undefined) {
        reject(new UnauthenticatedError(`the server at ${where} presented no certificate`));
      } else {
        resolve(leaf);
      }
    });
    socket.once('timeout', () => fail(`no TLS handshake within ${timeoutMs} ms`));
    socket.once('error', (err: Error) => fail(err.message, err));
  });
}
