/**
 * Certificate signing requests from workers and services: parsed, self-signature verified and
 * reduced to the one thing the CA uses, the public key. Nothing else a CSR asks for (subject,
 * SANs, extensions) is ever copied into a certificate.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { InvalidArgumentError } from '../../common/errors.js';

/** Largest CSR accepted, in characters of PEM. */
const MAX_CSR_LENGTH = 16 * 1024;

export type KeyType = 'p256' | 'ed25519';

/** The verified public key of a CSR. */
export interface VerifiedCsr {
  publicKey: webcrypto.CryptoKey;
  keyType: KeyType;
}

/**
 * Parses a PEM CSR and verifies its self-signature.
 * @throws InvalidArgumentError naming `field` if it is malformed, does not verify, or has a key
 *   other than ECDSA P-256 or Ed25519.
 */
export async function verifyCsr(pem: string, field = 'csr_pem'): Promise<VerifiedCsr> {
  if (pem.length === 0) throw new InvalidArgumentError(field, 'is required');
  if (pem.length > MAX_CSR_LENGTH) {
    throw new InvalidArgumentError(field, `is over ${MAX_CSR_LENGTH} characters`);
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    throw new InvalidArgumentError(field, 'is not a PEM PKCS#10 certificate signing request');
  }
  const algorithm = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  let keyType: KeyType;
  if (algorithm.name === 'ECDSA' && algorithm.namedCurve === 'P-256') keyType = 'p256';
  else if (algorithm.name === 'Ed25519') keyType = 'ed25519';
  else {
    throw new InvalidArgumentError(field, 'the key must be ECDSA P-256 or Ed25519');
  }
  let valid = false;
  try {
    valid = await csr.verify(webcrypto);
  } catch {
    valid = false;
  }
  if (!valid) throw new InvalidArgumentError(field, 'the signature does not verify');
  const publicKey = (await csr.publicKey.export(webcrypto)) as unknown as webcrypto.CryptoKey;
  return { publicKey, keyType };
}
